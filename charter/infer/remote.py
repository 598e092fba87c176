"""Generators over remote endpoints, through the official SDKs:

- `AnthropicGenerator`: any endpoint that speaks the Anthropic Messages API (Anthropic's own,
  another `charter serve`, a proxy), through `anthropic`;
- `OpenAIGenerator`: any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp's server,
  Ollama, Charter's /v1/chat/completions), through `openai`.

Each generator owns a private event loop on a daemon thread, and its SDK client lives there: so
`generate` works from any thread (one with no loop, or one whose loop is busy), and `open`
works from any loop, its events handed over thread-safely. `generate` sends each request as one
non-streaming call, at most `max_concurrency` in flight; `open` streams.

The SDKs retry 408, 409, 429 and 5xx (529, overloaded, among them) `max_retries` times, waiting
what the server's `retry-after` says (else exponential backoff). What still fails becomes
`InvalidRequest` (400, 404, 413, 422: the request's fault, its field named where the server
names it), `Overloaded` (429, 529) or a `RuntimeError` with the status and the server's message.

API keys: the `api_key` argument, else the file `key_file`, else the environment variable
`key_env`. A server on loopback may check no key (`charter serve` without `--api-key`), so
there a placeholder is sent when none is found; anywhere else a missing key is an error.

Neither API gives the log-probabilities of given text, so `score` raises `ScoringUnsupported`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import threading
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anthropic
import openai
from openai.lib.streaming.chat import ChatCompletionStreamState
from tqdm import tqdm

from charter import chat
from charter.chat.parse import BlockDelta, BlockStart, BlockStop, Event
from charter.infer.generator import (
    ADAPTIVE,
    END_TURN,
    MAX_TOKENS,
    STOP_SEQUENCE,
    TOOL_USE,
    Generator,
    InvalidRequest,
    Overloaded,
    Turn,
    TurnRequest,
    TurnStream,
)
from charter.network import is_loopback

T = TypeVar("T")

# Sent to a loopback server when no key is found: the SDKs refuse to send a request without one.
PLACEHOLDER_KEY = "no-key"
DEFAULT_MAX_RETRIES = 2
DEFAULT_TIMEOUT = 600.0  # seconds per request, as the SDKs' own default

# Statuses that mean the request itself is at fault.
_INVALID_STATUSES = (400, 404, 413, 422)
_OVERLOADED_STATUSES = (429, 529)
# A server message that starts with a field path: `messages[0].content: …` (Charter's and
# Anthropic's convention).
_FIELD_PREFIX = re.compile(r"^([A-Za-z_][\w.\[\]-]*): (.*)$", re.DOTALL)


# ---- keys and errors ----


def resolve_api_key(
    api_key: str | None, key_file: str | Path | None, key_env: str, base_url: str | None
) -> str:
    """The key to send (see the module docstring for the order); raises if none is found for a
    server that is not on loopback."""
    if api_key:
        return api_key
    if key_file is not None:
        path = Path(key_file)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: API key file not found")
        key = path.read_text().strip()
        if not key:
            raise ValueError(f"{path}: the API key file is empty")
        return key
    if key := os.environ.get(key_env, "").strip():
        return key
    if base_url is not None and _is_loopback_url(base_url):
        return PLACEHOLDER_KEY
    where = base_url or "the default endpoint"
    raise ValueError(f"no API key for {where}: pass api_key, set ${key_env}, or give key_file")


def _is_loopback_url(url: str) -> bool:
    return is_loopback(urlsplit(url).hostname or "")


def _server_message(error: Exception) -> str:
    """The server's own message: Anthropic's body is `{"error": {"message"}}`, the OpenAI SDK
    keeps just the inner `{"message", "param"}`."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
    return getattr(error, "message", None) or str(error)


def _error_type(error: Exception) -> str | None:
    body = getattr(error, "body", None)
    inner = body.get("error", body) if isinstance(body, dict) else None
    return inner.get("type") if isinstance(inner, dict) else None


def translate_error(error: Exception, url: str) -> Exception:
    """An SDK error (after its retries) as one of the Generator interface's errors."""
    message = _server_message(error)
    status = getattr(error, "status_code", None)
    # A stream that fails after its status line (200) reports the error as an event, with a type.
    if status in _OVERLOADED_STATUSES or _error_type(error) == "overloaded_error":
        return Overloaded(f"{url}: {message}", _retry_after(error))
    if status in _INVALID_STATUSES:
        field = getattr(error, "param", None)  # OpenAI's error body names it
        if field and message.startswith(f"{field}: "):
            message = message[len(field) + 2 :]
        elif field is None and (match := _FIELD_PREFIX.match(message)):
            field, message = match[1], match[2]
        return InvalidRequest(message, field)
    if status in (401, 403):
        return RuntimeError(f"{url} refused the API key ({status}): {message}")
    if status is None or status < 400:  # no answer (connection, timeout), or a failed stream
        return RuntimeError(f"{url}: {type(error).__name__}: {message}")
    return RuntimeError(f"{url} answered {status}: {message}")


def _retry_after(error: Exception) -> float:
    response = getattr(error, "response", None)
    try:
        return float(response.headers["retry-after"])
    except (AttributeError, KeyError, ValueError):
        return 2.0  # Overloaded's default hint


# ---- the event loop the SDK clients live on ----


class _LoopThread:
    """An event loop running on a daemon thread of its own."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the loop and wait for it (from any other thread)."""
        future = self.submit(coroutine)
        try:
            return future.result()
        except BaseException:  # a failure, or Ctrl-C while waiting: stop the work too
            future.cancel()
            raise

    async def run_async(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the loop and await it from another loop."""
        return await asyncio.wrap_future(self.submit(coroutine))

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


# ---- streams ----


class RemoteTurnStream(TurnStream):
    """A turn streamed from an endpoint. A producer task on the generator's loop reads the SDK's
    stream and calls `_started`, `_event` and `_finished` there; the events travel to the
    consumer's loop through a queue, so the producer never waits for the consumer."""

    _END = object()  # the producer is done (after the turn, an error or a cancellation)

    def __init__(self, consumer: asyncio.AbstractEventLoop) -> None:
        self.input_tokens = 0
        self._consumer = consumer
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._opened: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._producer: concurrent.futures.Future[None] | None = None
        self._blocks: list[chat.Block] = []
        self._turn: Turn | None = None

    # ---- the producer's side (on the generator's loop) ----

    def _started(self, input_tokens: int) -> None:
        """The request was accepted: `open` returns."""
        self.input_tokens = input_tokens
        self._opened.set_result(None)

    def _event(self, event: Event, finished: chat.Block | None = None) -> None:
        """One event; a `BlockStop` comes with the block it completes."""
        self._put((event, finished))

    def _finished(self, turn: Turn) -> None:
        self._put(turn)

    def _end(self, error: BaseException | None) -> None:
        if not self._opened.done():  # failed before the request was accepted: `open` raises
            self._opened.set_exception(error or RuntimeError("the stream ended before it began"))
            return
        if error is not None:
            self._put(error)
        self._put(self._END)

    def _put(self, item: Any) -> None:
        try:
            self._consumer.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the consumer's loop is closed: nobody is listening any more
            self.cancel()

    # ---- the consumer's side ----

    async def events(self) -> AsyncIterator[Event]:
        try:
            while (item := await self._queue.get()) is not self._END:
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, Turn):
                    self.input_tokens = item.input_tokens  # final (OpenAI streams tell it last)
                    self._turn = item
                    continue
                event, finished = item
                if finished is not None:
                    self._blocks.append(finished)
                yield event
        finally:
            if self._turn is None:  # the consumer stopped early, or the stream failed
                self.cancel()

    @property
    def blocks(self) -> list[chat.Block]:
        return list(self._blocks)

    @property
    def turn(self) -> Turn | None:
        return self._turn

    def cancel(self) -> None:
        if self._producer is not None:
            self._producer.cancel()  # thread-safe: cancels the task on the generator's loop


# ---- what both generators share ----


class RemoteGenerator(Generator):
    """The loop, concurrency, streaming plumbing and error translation of a remote endpoint;
    subclasses map requests and responses for their API."""

    # The SDK's base exception class, whose instances `translate_error` understands, and the
    # SDK's async client (the subclass makes it).
    _sdk_error: type[Exception]
    _client: anthropic.AsyncAnthropic | openai.AsyncOpenAI

    def __init__(self, model: str, url: str, max_concurrency: int) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be ≥ 1, got {max_concurrency}")
        self.name = model
        self.model = model
        self.url = url
        self._loop = _LoopThread(f"{type(self).__name__}[{model}]")
        self._slots = asyncio.Semaphore(max_concurrency)  # binds to the private loop on first use
        self._context_window: int | None = None
        self._context_window_known = False

    # ---- what a subclass provides (coroutines run on the private loop) ----

    @abstractmethod
    def _params(self, request: TurnRequest) -> dict[str, Any]:
        """The SDK call's keyword arguments; raises `InvalidRequest` for what the API cannot
        express."""

    @abstractmethod
    async def _complete(self, params: dict[str, Any]) -> Turn:
        """One non-streaming call."""

    @abstractmethod
    async def _stream(self, params: dict[str, Any], stream: RemoteTurnStream) -> None:
        """One streaming call, feeding `stream` (`_started`, then `_event`s, then `_finished`)."""

    @abstractmethod
    async def _fetch_context_window(self) -> int | None: ...

    # ---- the Generator interface ----

    @property
    def context_window(self) -> int | None:
        """What the endpoint's models endpoint says (asked once), or None if it says nothing."""
        if not self._context_window_known:
            self._context_window = self._loop.run(self._translated(self._fetch_context_window()))
            self._context_window_known = True
        return self._context_window

    def generate(self, requests: Sequence[TurnRequest], progress: str | None = None) -> list[Turn]:
        """Turns for `requests`, at most `max_concurrency` in flight. What the API cannot express
        raises before anything is sent; a request the server refuses raises when its answer
        comes, and the requests still in flight are cancelled."""
        params = [self._params(r) for r in requests]
        with tqdm(total=len(params), desc=progress, unit="turn", disable=not progress) as bar:
            return self._loop.run(self._complete_all(params, bar))

    async def open(self, request: TurnRequest) -> TurnStream:
        params = self._params(request)
        stream = RemoteTurnStream(asyncio.get_running_loop())
        stream._producer = self._loop.submit(self._produce(params, stream))
        try:
            await asyncio.wrap_future(stream._opened)
        except asyncio.CancelledError:
            stream.cancel()
            raise
        return stream

    def close(self) -> None:
        if self._loop.loop.is_closed():
            return
        self._loop.run(self._shutdown())
        self._loop.stop()

    # ---- on the private loop ----

    async def _shutdown(self) -> None:
        """Cancel the streams still running, then close the client's connections."""
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._client.close()

    async def _translated(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except self._sdk_error as e:
            raise translate_error(e, self.url) from e

    async def _complete_all(self, params: list[dict[str, Any]], bar: tqdm) -> list[Turn]:
        async def one(p: dict[str, Any]) -> Turn:
            async with self._slots:
                turn = await self._translated(self._complete(p))
            bar.update()
            return turn

        tasks = [asyncio.ensure_future(one(p)) for p in params]
        try:
            return await asyncio.gather(*tasks)
        finally:  # after a failure: stop the rest
            for task in tasks:
                task.cancel()

    async def _produce(self, params: dict[str, Any], stream: RemoteTurnStream) -> None:
        error: BaseException | None = None
        try:
            await self._translated(self._stream(params, stream))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            error = e
        finally:
            stream._end(error)


# ---- Anthropic Messages API ----


# The content blocks Charter has; others (a real API's `redacted_thinking`, server tool calls)
# are left out of turns and streams.
_ANTHROPIC_BLOCKS = ("text", "thinking", "tool_use")
# The API's delta types as parser delta kinds, and the field holding their text.
_ANTHROPIC_DELTAS = {
    "text_delta": ("text", "text"),
    "thinking_delta": ("thinking", "thinking"),
    "input_json_delta": ("input_json", "partial_json"),
}


def _anthropic_block(block: Any) -> chat.Block:
    if block.type == "text":
        return chat.TextBlock(block.text)
    if block.type == "thinking":
        return chat.ThinkingBlock(block.thinking, block.signature)
    return chat.ToolUseBlock(block.id, block.name, dict(block.input))


def _anthropic_turn(message: Any) -> Turn:
    return Turn(
        [_anthropic_block(b) for b in message.content if b.type in _ANTHROPIC_BLOCKS],
        message.stop_reason,
        message.stop_sequence,
        message.usage.input_tokens,
        message.usage.output_tokens,
    )


class AnthropicGenerator(RemoteGenerator):
    """A model behind an Anthropic Messages endpoint (`base_url`; default `$ANTHROPIC_BASE_URL`,
    else Anthropic's). Sampling options go in the request body (`temperature`, and `top_p` and
    `top_k` when not their defaults); the Messages API has no seed, so `seed` is not sent."""

    _sdk_error = anthropic.APIError

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        key_env: str = "ANTHROPIC_API_KEY",
        key_file: str | Path | None = None,
        max_concurrency: int = 8,
        max_retries: int = DEFAULT_MAX_RETRIES,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        base_url = base_url or os.environ.get("ANTHROPIC_BASE_URL") or None
        key = resolve_api_key(api_key, key_file, key_env, base_url)
        self._client = anthropic.AsyncAnthropic(
            api_key=key, base_url=base_url, max_retries=max_retries, timeout=timeout
        )
        super().__init__(model, str(self._client.base_url), max_concurrency)

    def _prompt_params(self, request: TurnRequest) -> dict[str, Any]:
        """What the prompt depends on: all that count_tokens takes."""
        options = request.options
        params = {"model": self.model, **chat.conversation_to_dict(request.conversation)}
        if options.tool_choice != "auto":
            params["tool_choice"] = {"type": options.tool_choice}
            if options.tool_choice == "tool":
                if not options.tool_name:
                    raise InvalidRequest("tool_choice 'tool' needs tool_name", "tool_choice.name")
                params["tool_choice"]["name"] = options.tool_name
        if options.thinking_budget == ADAPTIVE:
            params["thinking"] = {"type": "adaptive"}
        elif options.thinking_budget is not None:
            params["thinking"] = {"type": "enabled", "budget_tokens": options.thinking_budget}
        return params

    def _params(self, request: TurnRequest) -> dict[str, Any]:
        options = request.options
        params = self._prompt_params(request) | {"max_tokens": options.max_tokens}
        if options.stop_sequences:
            params["stop_sequences"] = list(options.stop_sequences)
        # This SDK has no keyword arguments for the sampling fields; the API takes them.
        sampling: dict[str, Any] = {"temperature": options.temperature}
        if options.top_p != 1.0:
            sampling["top_p"] = options.top_p
        if options.top_k:
            sampling["top_k"] = options.top_k
        return params | {"extra_body": sampling}

    async def _complete(self, params: dict[str, Any]) -> Turn:
        return _anthropic_turn(await self._client.messages.create(**params))

    async def _stream(self, params: dict[str, Any], stream: RemoteTurnStream) -> None:
        async with self._client.messages.stream(**params) as events:
            indices: dict[int, int] = {}  # the API's block index → ours (some are left out)
            async for event in events:  # raw events, and the SDK's derived ones (ignored)
                if event.type == "message_start":
                    stream._started(event.message.usage.input_tokens)
                elif event.type == "content_block_start":
                    if event.content_block.type in _ANTHROPIC_BLOCKS:
                        indices[event.index] = len(indices)
                        empty = _anthropic_block(event.content_block)
                        stream._event(BlockStart(indices[event.index], empty))
                elif event.type == "content_block_delta" and event.index in indices:
                    # A signature delta has no event: the signature is in the finished block.
                    if delta := _ANTHROPIC_DELTAS.get(event.delta.type):
                        kind, text_field = delta
                        text = getattr(event.delta, text_field)
                        stream._event(BlockDelta(indices[event.index], kind, text))
                elif event.type == "content_block_stop" and event.index in indices:
                    finished = events.current_message_snapshot.content[event.index]
                    stream._event(BlockStop(indices[event.index]), _anthropic_block(finished))
            stream._finished(_anthropic_turn(await events.get_final_message()))

    async def count_tokens(self, request: TurnRequest) -> int:
        counting = self._client.messages.count_tokens(**self._prompt_params(request))
        return (await self._loop.run_async(self._translated(counting))).input_tokens

    async def _fetch_context_window(self) -> int | None:
        """`max_input_tokens` of GET /v1/models/{id}. For Charter's server that is its context
        less the one token that must be left to generate, so one short of the truth."""
        try:
            info = await self._client.models.retrieve(self.model)
        except anthropic.NotFoundError:
            return None
        return getattr(info, "max_input_tokens", None)


# ---- OpenAI chat completions ----


# OpenAI finish reasons as stop reasons. "stop" is the end of the turn or a stop sequence, which
# the API does not tell apart (see `_openai_stop`); anything else (say, content_filter) ended it.
_FINISH_REASONS = {"length": MAX_TOKENS, "tool_calls": TOOL_USE, "function_call": TOOL_USE}
# Where OpenAI-compatible servers put a reasoning model's thinking (llama.cpp, Charter and older
# vLLM: reasoning_content; newer vLLM and Ollama: reasoning).
_REASONING_FIELDS = ("reasoning_content", "reasoning")


def openai_messages(conversation: chat.Conversation) -> list[dict[str, Any]]:
    """The conversation as chat-completion messages, the inverse of Charter's server mapping
    (`serve/openai_api.py`): the system prompt first, tool_use blocks as `tool_calls`, each
    tool_result as a `tool` message. Earlier turns' thinking is not sent: these APIs take no
    reasoning in requests. Raises `InvalidRequest` for a tool result with `is_error`, which
    they cannot express."""
    messages = []
    if conversation.system is not None:
        messages.append({"role": "system", "content": conversation.system})
    for i, message in enumerate(conversation.messages):
        if message.role == "assistant":
            texts = [b.text for b in message.content if b.type == "text"]
            calls = [_openai_tool_call(b) for b in message.content if b.type == "tool_use"]
            messages.append(
                {"role": "assistant", "content": chat.BLOCK_SEPARATOR.join(texts)}
                | ({"tool_calls": calls} if calls else {})
            )
            continue
        texts = []  # a run of text blocks: one user message
        for j, block in enumerate(message.content):
            if block.type == "text":
                texts.append(block.text)
                continue
            if texts:
                messages.append({"role": "user", "content": chat.BLOCK_SEPARATOR.join(texts)})
                texts = []
            if block.is_error:
                raise InvalidRequest(
                    "OpenAI chat completions cannot mark a tool result as an error",
                    f"messages[{i}].content[{j}].is_error",
                )
            messages.append(
                {"role": "tool", "tool_call_id": block.tool_use_id, "content": block.text}
            )
        if texts:
            messages.append({"role": "user", "content": chat.BLOCK_SEPARATOR.join(texts)})
    return messages


def _openai_tool_call(block: chat.ToolUseBlock) -> dict[str, Any]:
    function = {"name": block.name, "arguments": json.dumps(block.input, ensure_ascii=False)}
    return {"id": block.id, "type": "function", "function": function}


def _openai_tool_use(call: Any) -> chat.ToolUseBlock:
    try:
        arguments = json.loads(call.function.arguments or "{}")
    except json.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise RuntimeError(
            f"the tool call {call.function.name!r} has arguments that are not a JSON object: "
            f"{call.function.arguments!r}"
        )
    return chat.ToolUseBlock(call.id, call.function.name, arguments)


def _reasoning(message: Any) -> str | None:
    for name in _REASONING_FIELDS:
        if isinstance(text := getattr(message, name, None), str) and text:
            return text
    return None


def _openai_stop(choice: Any, stop_sequences: list[str]) -> tuple[str, str | None]:
    if choice.finish_reason != "stop":
        return _FINISH_REASONS.get(choice.finish_reason, END_TURN), None
    # vLLM says which stop string matched (`stop_reason`); the API itself does not.
    matched = getattr(choice, "stop_reason", None)
    if isinstance(matched, str) and matched in stop_sequences:
        return STOP_SEQUENCE, matched
    return END_TURN, None


def _openai_turn(completion: Any, stop_sequences: list[str]) -> Turn:
    choice = completion.choices[0]
    message = choice.message
    blocks: list[chat.Block] = []
    if reasoning := _reasoning(message):
        blocks.append(chat.ThinkingBlock(reasoning))
    if message.content:
        blocks.append(chat.TextBlock(message.content))
    blocks += [_openai_tool_use(call) for call in message.tool_calls or []]
    usage = completion.usage
    return Turn(
        blocks,
        *_openai_stop(choice, stop_sequences),
        input_tokens=usage.prompt_tokens if usage else 0,
        output_tokens=usage.completion_tokens if usage else 0,
    )


class _ChunkEvents:
    """Parser events for a stream of chat-completion chunks. Reasoning, content and each tool
    call are one block each, in the order they begin; a block ends when the next begins. The
    SDK's `ChatCompletionStreamState` accumulates the chunks into the final completion, and
    finished blocks are read from it."""

    def __init__(self) -> None:
        self.state = ChatCompletionStreamState()
        self._open: tuple[str, int] | None = None  # (kind, tool call index) receiving deltas
        self._index = -1

    def feed(self, chunk: Any) -> list[tuple[Event, chat.Block | None]]:
        self.state.handle_chunk(chunk)
        out: list[tuple[Event, chat.Block | None]] = []
        for choice in chunk.choices[:1]:
            delta = choice.delta
            if reasoning := _reasoning(delta):
                out += self._delta(("thinking", 0), reasoning, chat.ThinkingBlock(""))
            if delta.content:
                out += self._delta(("text", 0), delta.content, chat.TextBlock(""))
            for call in delta.tool_calls or []:
                # A call's first delta has its id and name; later ones, more of its arguments.
                function = call.function
                empty = chat.ToolUseBlock(call.id or "", (function and function.name) or "", {})
                arguments = (function and function.arguments) or ""
                out += self._delta(("input_json", call.index), arguments, empty)
        return out

    def finish(self) -> list[tuple[Event, chat.Block | None]]:
        return self._close()

    def _delta(
        self, key: tuple[str, int], text: str, empty: chat.Block
    ) -> list[tuple[Event, chat.Block | None]]:
        out = []
        if key != self._open:
            out += self._close()
            self._open, self._index = key, self._index + 1
            out.append((BlockStart(self._index, empty), None))
        if text:
            out.append((BlockDelta(self._index, key[0], text), None))
        return out

    def _close(self) -> list[tuple[Event, chat.Block | None]]:
        if self._open is None:
            return []
        kind, call = self._open
        self._open = None
        message = self.state.current_completion_snapshot.choices[0].message
        if kind == "thinking":
            block: chat.Block = chat.ThinkingBlock(_reasoning(message) or "")
        elif kind == "text":
            block = chat.TextBlock(message.content or "")
        else:
            block = _openai_tool_use(message.tool_calls[call])
        return [(BlockStop(self._index), block)]


class OpenAIGenerator(RemoteGenerator):
    """A model behind an OpenAI-compatible chat-completions endpoint (`base_url`, ending in
    `/v1`). Thinking budgets cannot be expressed (a budget is refused; adaptive thinking leaves
    it to the server), reasoning comes back as a thinking block, and a stop at a stop sequence
    is reported as `end_turn` unless the server says which sequence matched (vLLM does). There
    is no token-counting endpoint in this API."""

    _sdk_error = openai.APIError

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key: str | None = None,
        *,
        key_env: str = "OPENAI_API_KEY",
        key_file: str | Path | None = None,
        max_concurrency: int = 8,
        max_retries: int = DEFAULT_MAX_RETRIES,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        key = resolve_api_key(api_key, key_file, key_env, base_url)
        self._client = openai.AsyncOpenAI(
            api_key=key, base_url=base_url, max_retries=max_retries, timeout=timeout
        )
        super().__init__(model, str(self._client.base_url), max_concurrency)

    def _params(self, request: TurnRequest) -> dict[str, Any]:
        options, conversation = request.options, request.conversation
        if options.thinking_budget not in (None, ADAPTIVE):
            raise InvalidRequest(
                "OpenAI chat completions cannot express a thinking budget", "thinking"
            )
        params: dict[str, Any] = {
            "model": self.model,
            "messages": openai_messages(conversation),
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
        }
        if conversation.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.input_schema,
                    },
                }
                for t in conversation.tools
            ]
        if options.tool_choice == "tool":
            if not options.tool_name:
                raise InvalidRequest("tool_choice 'tool' needs tool_name", "tool_choice.name")
            params["tool_choice"] = {"type": "function", "function": {"name": options.tool_name}}
        elif options.tool_choice != "auto":
            params["tool_choice"] = {"any": "required", "none": "none"}[options.tool_choice]
        if options.stop_sequences:
            params["stop"] = list(options.stop_sequences)
        if options.top_p != 1.0:
            params["top_p"] = options.top_p
        if options.seed is not None:
            params["seed"] = options.seed
        if options.top_k:
            params["extra_body"] = {"top_k": options.top_k}  # an extension (vLLM, llama.cpp)
        return params

    async def _complete(self, params: dict[str, Any]) -> Turn:
        completion = await self._client.chat.completions.create(**params)
        return _openai_turn(completion, params.get("stop", []))

    async def _stream(self, params: dict[str, Any], stream: RemoteTurnStream) -> None:
        chunks = await self._client.chat.completions.create(
            **params, stream=True, stream_options={"include_usage": True}
        )
        stream._started(0)  # the prompt's tokens come with the last chunk
        translator = _ChunkEvents()
        async with chunks:
            async for chunk in chunks:
                for event, block in translator.feed(chunk):
                    stream._event(event, block)
        for event, block in translator.finish():
            stream._event(event, block)
        final = translator.state.current_completion_snapshot
        stream._finished(_openai_turn(final, params.get("stop", [])))

    async def count_tokens(self, request: TurnRequest) -> int:
        raise NotImplementedError(
            f"{self.url}: OpenAI chat completions have no token-counting endpoint"
        )

    async def _fetch_context_window(self) -> int | None:
        """From GET /v1/models: vLLM lists `max_model_len`, Charter `max_input_tokens`; OpenAI's
        own API and most others say nothing."""
        try:
            async for info in self._client.models.list():
                if info.id == self.model:
                    for name in ("max_model_len", "max_input_tokens"):
                        if isinstance(value := getattr(info, name, None), int):
                            return value
                    return None
        except openai.NotFoundError:
            pass
        return None
