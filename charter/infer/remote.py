"""What the Generators over remote endpoints share (`AnthropicGenerator` in
`anthropic_remote.py`, `OpenAIGenerator` in `openai_remote.py`, each through its official SDK).

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
from tqdm import tqdm

from charter import chat
from charter.chat.parse import Event
from charter.infer.generator import (
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
