// The web chat: a client of this server's Messages API (streamed, through client.js). Model
// output is untrusted: Markdown is rendered by markdown-it with raw HTML off (a "<script>" shows
// as text) and its link check on (no javascript: URLs), and the page's Content-Security-Policy
// allows no inline script and no remote images.

import {
  $,
  clearError,
  describeFailure,
  loadModels,
  messageEvents,
  requestHeaders,
  setBusy,
  showError,
  withKey,
} from "./client.js";

const markdown = window.markdownit({ html: false, linkify: true });
// Links open in a new tab that gets no handle on this one.
const renderToken = (tokens, i, options, env, self) => self.renderToken(tokens, i, options);
const linkOpen = markdown.renderer.rules.link_open || renderToken;
markdown.renderer.rules.link_open = (tokens, i, options, env, self) => {
  tokens[i].attrSet("target", "_blank");
  tokens[i].attrSet("rel", "noopener noreferrer");
  return linkOpen(tokens, i, options, env, self);
};

const history = []; // the conversation so far, as Messages API messages
let controller = null; // aborts the request under way

// ---- the conversation view ----

function addMessage(role) {
  const div = document.createElement("div");
  div.className = `message ${role}`;
  const label = document.createElement("div");
  label.className = "role";
  label.textContent = role === "user" ? "You" : $("model").value;
  div.append(label);
  $("messages").append(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function addNote(view, text) {
  const note = document.createElement("div");
  note.className = "note";
  note.textContent = text;
  view.append(note);
}

/** The element that shows a content block, created when the block starts. */
function blockView(block) {
  if (block.type === "thinking") {
    const details = document.createElement("details");
    details.className = "thinking";
    const summary = document.createElement("summary");
    summary.textContent = "Thinking";
    const text = document.createElement("div");
    text.className = "thinking-text";
    details.append(summary, text);
    return details;
  }
  const div = document.createElement("div");
  if (block.type === "tool_use") {
    div.className = "tool-use";
    const title = document.createElement("div");
    title.textContent = `Tool call: ${block.name}`;
    div.append(title, document.createElement("pre"));
  } else {
    div.className = "markdown";
  }
  return div;
}

function renderBlock(view, block) {
  if (block.type === "thinking") {
    view.querySelector(".thinking-text").textContent = block.thinking;
  } else if (block.type === "tool_use") {
    view.querySelector("pre").textContent = block.partial_json;
  } else {
    view.innerHTML = markdown.render(block.text); // safe: raw HTML off, links checked
  }
}

/** A streamed block as a Messages API content block, to send back in the next request. */
function toParam(block) {
  if (block.type === "tool_use") {
    return { type: "tool_use", id: block.id, name: block.name, input: JSON.parse(block.partial_json || "{}") };
  }
  return block;
}

// ---- streaming ----

function requestBody() {
  const body = {
    model: $("model").value,
    max_tokens: Number($("max-tokens").value),
    temperature: Number($("temperature").value),
    messages: history,
  };
  const system = $("system").value.trim();
  if (system) body.system = system;
  if ($("thinking").checked) {
    body.thinking = { type: "enabled", budget_tokens: Number($("budget").value) };
  }
  return body;
}

async function send(text) {
  clearError();
  history.push({ role: "user", content: text });
  const question = addMessage("user");
  question.append(document.createTextNode(text));
  const answer = addMessage("assistant");
  const blocks = [];
  const views = [];
  let outcome = null;
  controller = new AbortController();
  setBusy(true);
  try {
    for await (const { event, data } of messageEvents(requestBody(), controller.signal)) {
      if (event === "content_block_start") {
        const block = { ...data.content_block };
        if (block.type === "tool_use") block.partial_json = "";
        blocks[data.index] = block;
        views[data.index] = blockView(block);
        answer.append(views[data.index]);
      } else if (event === "content_block_delta") {
        const block = blocks[data.index];
        const delta = data.delta;
        if (delta.type === "text_delta") block.text += delta.text;
        else if (delta.type === "thinking_delta") block.thinking += delta.thinking;
        else if (delta.type === "signature_delta") block.signature = delta.signature;
        else if (delta.type === "input_json_delta") block.partial_json += delta.partial_json;
        renderBlock(views[data.index], block);
        answer.scrollIntoView({ block: "end" });
      } else if (event === "message_delta") {
        outcome = `${data.delta.stop_reason} · ${data.usage.output_tokens} tokens`;
      }
    }
    addNote(answer, outcome || "the stream ended early");
  } catch (error) {
    if (error.name === "AbortError") addNote(answer, "stopped");
    else showError(error.message);
  } finally {
    controller = null;
    setBusy(false);
  }
  const content = blocks.filter(Boolean).map(toParam);
  if (content.length) {
    history.push({ role: "assistant", content });
  } else {
    // Nothing came back: take the question out again, so it can be edited and resent.
    history.pop();
    question.remove();
    answer.remove();
    $("prompt").value = text;
  }
}

// ---- controls ----

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || controller) return;
  $("prompt").value = "";
  send(text);
});

$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

$("stop").addEventListener("click", () => controller && controller.abort());

$("new-chat").addEventListener("click", () => {
  if (controller) controller.abort();
  history.length = 0;
  $("messages").replaceChildren();
  clearError();
});

// ---- the model card ----

/** Show the chosen model's card (written by its release gate), or say why there is none. */
async function showCard() {
  const model = $("model").value;
  if (!model) return;
  const response = await fetch(`/card/${encodeURIComponent(model)}`, { headers: requestHeaders() });
  if (response.ok) {
    $("card").innerHTML = markdown.render(await response.text()); // safe: raw HTML off
  } else {
    $("card").textContent = `No card: ${await describeFailure(response)}`;
  }
}

$("model").addEventListener("change", showCard);

withKey(async () => {
  if (await loadModels($("model"))) await showCard();
});
