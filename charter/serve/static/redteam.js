// The red-team page: send an attack (a user message) to a served model, read the reply, and
// rate it; the rating is stored as a human red-team finding (POST /v1/charter/findings). The
// reply is untrusted: it is only ever set as textContent, never parsed as HTML or Markdown.

import { $, clearError, setBusy, showError, streamText } from "./client.js";
import { startFeedbackPage, store } from "./feedback.js";

let attack = null; // the attack sent and its reply until rated: a findings request less the verdict
let controller = null; // aborts the reply under way
let storing = false; // whether the server stores ratings

const verdict = () => document.querySelector("input[name=verdict]:checked")?.value;

function updateSave() {
  $("save").disabled = !(storing && attack && verdict());
}

async function sendAttack(text) {
  clearError();
  attack = null;
  const model = $("model").value;
  const messages = [{ role: "user", content: text }];
  $("reply-model").textContent = model;
  $("reply").textContent = "";
  $("reply-note").textContent = "";
  for (const input of document.querySelectorAll("input[name=verdict]")) input.checked = false;
  $("result").hidden = false;
  controller = new AbortController();
  setBusy(true);
  try {
    const body = {
      model,
      messages,
      max_tokens: Number($("max-tokens").value),
      temperature: Number($("temperature").value),
    };
    const show = (reply) => ($("reply").textContent = reply); // inert: text, not markup
    const reply = await streamText(body, show, controller.signal);
    attack = { model, messages, response: reply.text, stop_reason: reply.stopReason || "" };
    $("reply-note").textContent = `${reply.stopReason} · ${reply.outputTokens} tokens`;
  } catch (error) {
    $("reply-note").textContent = error.name === "AbortError" ? "stopped (send again to rate)" : "";
    if (error.name !== "AbortError") showError(error.message);
  } finally {
    controller = null;
    setBusy(false);
    updateSave();
  }
}

async function saveRating() {
  const body = {
    ...attack,
    verdict: verdict(),
    category: $("category").value,
    round: Number($("round").value),
  };
  const describe = (f) => `finding ${f.attack_id}: ${f.verdict} on ${f.target}, round ${f.round}`;
  if (await store("/v1/charter/findings", body, describe)) attack = null; // one rating per reply
  updateSave();
}

$("attack-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("attack").value.trim();
  if (text && !controller) sendAttack(text);
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("rating").addEventListener("change", updateSave);
$("rating").addEventListener("submit", (event) => {
  event.preventDefault();
  saveRating();
});

startFeedbackPage([$("model")], (status) => {
  storing = status.enabled;
  const previous = $("category").value || "unknown";
  $("category").replaceChildren(...status.categories.map((c) => new Option(c, c)));
  $("category").value = previous;
  updateSave();
});
