// The comparison page: one prompt, two replies streamed side by side (two samples of one model
// at temperature 1, or one from each of two models), and the person's pick, stored by POST
// /v1/charter/comparisons. Replies are untrusted: they are only ever set as textContent.

import { $, clearError, setBusy, showError, streamText } from "./client.js";
import { startFeedbackPage, store } from "./feedback.js";

const SIDES = ["a", "b"];
let pair = null; // the prompt and both replies until chosen: a comparisons request less the choice
let controller = null; // aborts both replies
let storing = false; // whether the server stores comparisons

function updateChoices() {
  for (const button of document.querySelectorAll("#choices button")) {
    button.disabled = !(storing && pair);
  }
}

async function generate(prompt) {
  clearError();
  pair = null;
  const models = { a: $("model-a").value, b: $("model-b").value };
  for (const side of SIDES) {
    $(`name-${side}`).textContent = models[side];
    $(`reply-${side}`).textContent = "";
    $(`note-${side}`).textContent = "";
  }
  $("pair").hidden = false;
  controller = new AbortController();
  setBusy(true);
  try {
    const sample = async (side) => {
      const body = {
        model: models[side],
        messages: [{ role: "user", content: prompt }],
        max_tokens: Number($("max-tokens").value),
        temperature: 1,
      };
      const show = (text) => ($(`reply-${side}`).textContent = text); // inert: text, not markup
      const reply = await streamText(body, show, controller.signal);
      $(`note-${side}`).textContent = `${reply.stopReason} · ${reply.outputTokens} tokens`;
      return reply.text;
    };
    const [a, b] = await Promise.all(SIDES.map(sample));
    pair = { prompt, model_a: models.a, response_a: a, model_b: models.b, response_b: b };
  } catch (error) {
    controller.abort(); // the other reply too
    if (error.name === "AbortError") $("note-a").textContent = $("note-b").textContent = "stopped";
    else showError(error.message);
  } finally {
    controller = null;
    setBusy(false);
    updateChoices();
  }
}

async function choose(choice) {
  const choices = { a: "A is better", b: "B is better", tie: "equally good" };
  const describe = (c) => `comparison ${c.id}: ${choices[c.choice]}`;
  const stored = await store("/v1/charter/comparisons", { ...pair, choice }, describe);
  if (stored) pair = null; // one choice per pair
  updateChoices();
}

$("prompt-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (prompt && !controller) generate(prompt);
});
$("stop").addEventListener("click", () => controller && controller.abort());
for (const button of document.querySelectorAll("#choices button")) {
  button.addEventListener("click", () => choose(button.dataset.choice));
}

startFeedbackPage([$("model-a"), $("model-b")], (status) => {
  storing = status.enabled;
  updateChoices();
});
