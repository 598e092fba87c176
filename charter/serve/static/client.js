// What every page of this server shares: the API key (kept for the browser tab), requests to
// this server's API with it, the error banner, the model list, and streamed Messages API
// replies read as server-sent events.

export const $ = (id) => document.getElementById(id);

const KEY_STORAGE = "charter-api-key";

export function requestHeaders() {
  const headers = { "content-type": "application/json", "anthropic-version": "2023-06-01" };
  const key = $("api-key").value.trim();
  if (key) headers["x-api-key"] = key;
  return headers;
}

/** Fill #api-key from this tab's storage and call `start()`; again whenever the key changes
 * (after storing it). */
export function withKey(start) {
  $("api-key").value = sessionStorage.getItem(KEY_STORAGE) || "";
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
    start();
  });
  start();
}

export function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}

export function clearError() {
  $("error").hidden = true;
}

$("error-close").addEventListener("click", clearError);

export async function describeFailure(response) {
  try {
    const body = await response.json();
    return `${response.status} ${body.error.type}: ${body.error.message}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

/** The JSON answer of a request to this server; a failure throws an Error saying why. */
export async function requestJson(path, body = undefined) {
  const options = { headers: requestHeaders() };
  if (body !== undefined) Object.assign(options, { method: "POST", body: JSON.stringify(body) });
  const response = await fetch(path, options);
  if (!response.ok) throw new Error(await describeFailure(response));
  return response.json();
}

/** Fill each <select> with the served models, keeping its choice where it is still served;
 * whether that worked (if not, the banner says why). */
export async function loadModels(...selects) {
  try {
    const page = await requestJson("/v1/models?limit=1000");
    for (const select of selects) {
      const previous = select.value;
      select.replaceChildren(...page.data.map((m) => new Option(m.display_name, m.id)));
      if (page.data.some((m) => m.id === previous)) select.value = previous;
    }
    clearError();
    return true;
  } catch (error) {
    showError(`Could not list the models: ${error.message}`);
    return false;
  }
}

/** While a reply is generated: #send off, #stop on, and #status says so. */
export function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
  $("status").textContent = busy ? "Generating…" : "";
}

/** Server-sent events of `response`, as {event, data} with data parsed from JSON. */
async function* serverSentEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      let data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (data) yield { event, data: JSON.parse(data) };
    }
  }
}

/** The events of a streamed POST /v1/messages of `body`; an error, sent before the stream or
 * in it, throws. */
export async function* messageEvents(body, signal) {
  const response = await fetch("/v1/messages", {
    method: "POST",
    headers: requestHeaders(),
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  if (!response.ok) throw new Error(await describeFailure(response));
  for await (const item of serverSentEvents(response)) {
    const { event, data } = item;
    if (event === "error") throw new Error(`${data.error.type}: ${data.error.message}`);
    yield item;
  }
}

/** A streamed reply's text (its text blocks): `onText(textSoFar)` as it grows, then
 * {text, stopReason, outputTokens}. */
export async function streamText(body, onText, signal) {
  const reply = { text: "", stopReason: null, outputTokens: 0 };
  for await (const { event, data } of messageEvents(body, signal)) {
    if (event === "content_block_delta" && data.delta.type === "text_delta") {
      reply.text += data.delta.text;
      onText(reply.text);
    } else if (event === "message_delta") {
      reply.stopReason = data.delta.stop_reason;
      reply.outputTokens = data.usage.output_tokens;
    }
  }
  return reply;
}
