// What the two feedback pages (/redteam and /compare) share: the models, whether this server
// stores feedback (`charter serve --feedback-db PATH`; while it does not, #feedback-off says so
// and the page's save controls stay off), and storing it.

import { $, loadModels, requestJson, showError, withKey } from "./client.js";

/** POST `body` to `path`; #status says what is stored (`describe(answer)`), or the banner why
 * nothing was. Whether it worked. */
export async function store(path, body, describe) {
  try {
    const saved = await requestJson(path, body);
    const what = describe(saved);
    $("status").textContent = saved.new ? `Saved ${what}` : `Already stored (the first kept): ${what}`;
    return true;
  } catch (error) {
    showError(`Could not save: ${error.message}`);
    return false;
  }
}

/** On load and on each new key: list the models into `selects`, then ask whether feedback is
 * stored and hand the answer ({enabled, categories, verdicts}) to `onStatus`. */
export function startFeedbackPage(selects, onStatus) {
  withKey(async () => {
    if (!(await loadModels(...selects))) return;
    try {
      const status = await requestJson("/v1/charter/feedback");
      $("feedback-off").hidden = status.enabled;
      onStatus(status);
    } catch (error) {
      showError(`Could not ask whether feedback is stored: ${error.message}`);
    }
  });
}
