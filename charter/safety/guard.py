"""`Guard`: any Generator (local or remote) behind the input classifier and the output monitor.

A turn, whether from `open` or `generate`:
1. The input classifier reads the conversation. A request it blocks never reaches the model:
   the turn is `refusal_text` with stop_reason "refusal", and no tokens (the model read and
   wrote none).
2. Otherwise the inner generator's stream is passed on. After every `every_tokens`-th delta the
   output monitor reads the reply so far (its blocks: text, thinking, a tool call's JSON), and
   once more when the stream ends. With `hold_back` (the default) the events since the last
   read are passed on only once the monitor has read them and let them through, so nothing it
   blocks is ever sent (the stream arrives in runs of k tokens); without, each event is passed
   on as it comes. When the monitor blocks, the inner stream is cancelled (if still running) and
   the turn ends with stop_reason "refusal": what was sent stays (an open block is closed), what
   was held is dropped, and the turn holds exactly what was sent.

Output tokens are counted as the stream's deltas (`BlockDelta` events): a `TurnStream` reports
no running token count. A local stream releases about one delta per token (fewer where its
detokenizer holds back part of a character or a possible stop sequence, or its parser a possible
tag); a remote one, one per delta the server sends. A turn the monitor stopped reports the
deltas sent as its output_tokens; any other turn, the inner generator's own usage.

`generate` runs the same per-turn code as `open`, concurrently on an event loop (at most
`max_concurrency` turns in flight, which a LocalGenerator's engine batches as it batches any
streams), so for the same model output the two cannot differ in a decision or a turn. A request
that cannot be answered raises `InvalidRequest` when its turn is opened, as a remote generator's
does: with `errors="raise"` it cancels the turns in flight. The judge scores one row at a time,
on a thread of the guard's own: a server's event loop goes on serving other streams meanwhile,
and a score does not depend on what else is in flight.

Every decision goes to the decision log (`[log] path`) under the request's id:
`generator.REQUEST_ID` where a server sets it, else an id the guard makes (`guard_…`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

from charter import chat
from charter.align.judge import Judge, Scorer
from charter.chat.parse import BlockDelta, BlockStart, BlockStop, Event
from charter.infer.generator import (
    REFUSAL,
    REQUEST_ID,
    Generator,
    InvalidRequest,
    Overloaded,
    ScoreRequest,
    TokenScores,
    Turn,
    TurnRequest,
    TurnStream,
)
from charter.safety.config import SafetyConfig, SafetyConfigError, load_safety_config
from charter.safety.decision import Decision
from charter.safety.decision_log import DecisionLog
from charter.safety.input_classifier import InputClassifier
from charter.safety.output_monitor import OutputMonitor

T = TypeVar("T")
OpenInner = Callable[[TurnRequest], Awaitable[TurnStream]]


class Guard(Generator):
    """`inner` behind the input classifier and the output monitor that `config` describes,
    both judging with `judge` (the module docstring says how); `generate` keeps at most
    `max_concurrency` turns in flight."""

    def __init__(
        self, inner: Generator, judge: Scorer, config: SafetyConfig, *, max_concurrency: int = 64
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be ≥ 1, got {max_concurrency}")
        self.inner = inner
        self.name = inner.name
        self.config = config
        self.input_classifier = InputClassifier(judge, config)
        self.output_monitor = OutputMonitor(judge, config)
        self.log = DecisionLog(config.log.path, config.log.bodies) if config.log.path else None
        self.max_concurrency = max_concurrency
        self._judge_thread = ThreadPoolExecutor(1, thread_name_prefix="charter-guard-judge")

    @property
    def context_window(self) -> int | None:
        return self.inner.context_window

    # ---- one turn ----

    async def open(self, request: TurnRequest) -> TurnStream:
        return await self._open(request, self.inner.open)

    async def _open(self, request: TurnRequest, open_inner: OpenInner) -> TurnStream:
        request_id = REQUEST_ID.get() or "guard_" + secrets.token_hex(12)
        conversation = request.conversation
        if self.config.input.enabled:
            decision = await self._judged(
                lambda: self.input_classifier.check(conversation), request_id, conversation
            )
            if decision.blocked:
                return RefusedStream(self.config.refusal_text)
        return GuardedStream(self, conversation, request_id, await open_inner(request))

    async def monitor(self, request_id: str, conversation: chat.Conversation, reply: str) -> bool:
        """Whether the output monitor blocks `reply` (logged)."""
        decision = await self._judged(
            lambda: self.output_monitor.check(conversation, reply), request_id, conversation, reply
        )
        return decision.blocked

    async def _judged(
        self,
        check: Callable[[], Decision],
        request_id: str,
        conversation: chat.Conversation,
        reply: str | None = None,
    ) -> Decision:
        """`check()`'s decision, made and logged on the judge's thread."""

        def run() -> Decision:
            decision = check()
            if self.log is not None:
                self.log.write(decision, request_id, conversation, reply)
            return decision

        return await asyncio.get_running_loop().run_in_executor(self._judge_thread, run)

    # ---- a batch: the same turns, concurrently ----

    def generate(self, requests, progress=None, errors="raise"):
        return _run(self._generate(list(requests), progress, errors))

    async def _generate(
        self, requests: list[TurnRequest], progress: str | None, errors: str
    ) -> list[Turn | InvalidRequest]:
        slots = asyncio.Semaphore(self.max_concurrency)
        ended = asyncio.Condition()  # notified whenever a turn of the batch ends
        in_flight = 0

        async def open_inner(request: TurnRequest) -> TurnStream:
            """The inner stream; while the inner generator is full (`Overloaded`), tried again
            when another turn of the batch ends. Full with none of ours running: raised."""
            while True:
                try:
                    return await self.inner.open(request)
                except Overloaded as e:
                    if in_flight == 0:
                        raise
                    async with ended:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(ended.wait(), e.retry_after)

        async def one(request: TurnRequest, bar: tqdm) -> Turn | InvalidRequest:
            nonlocal in_flight
            async with slots:
                try:
                    stream = await self._open(request, open_inner)
                except InvalidRequest as e:
                    if errors == "raise":
                        raise
                    bar.update()
                    return e
                in_flight += 1
                try:
                    async for _ in stream.events():
                        pass
                finally:
                    in_flight -= 1
                    if stream.turn is None:
                        stream.cancel()
                    async with ended:
                        ended.notify_all()
            bar.update()
            return stream.turn

        with tqdm(total=len(requests), desc=progress, unit="turn", disable=not progress) as bar:
            tasks = [asyncio.ensure_future(one(request, bar)) for request in requests]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

    # ---- the rest of the interface: the inner generator's ----

    async def count_tokens(self, request: TurnRequest) -> int:
        return await self.inner.count_tokens(request)

    def score(self, requests: Sequence[ScoreRequest]) -> list[TokenScores]:
        return self.inner.score(requests)

    @property
    def base(self) -> Generator:
        return self.inner.base

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "guarded": self.inner.describe(),
            "safety": self.config.describe(),
        }

    def close(self) -> None:
        self.inner.close()
        self._judge_thread.shutdown()


class GuardedStream(TurnStream):
    """The inner stream's events, with the output monitor reading the reply as it grows; with
    `hold_back`, each run of events is passed on only once the monitor has read it."""

    def __init__(
        self,
        guard: Guard,
        conversation: chat.Conversation,
        request_id: str,
        inner: TurnStream,
    ) -> None:
        self._guard = guard
        self._conversation = conversation
        self._request_id = request_id
        self._inner = inner
        self._written = SentBlocks()  # what the model wrote: what the monitor reads
        self._sent = SentBlocks()  # what was passed on
        self._held: list[Event] = []  # written, not passed on yet
        self._sent_deltas = 0
        self._judged: str | None = None  # the reply text the monitor read last
        self._turn: Turn | None = None
        self.input_tokens = inner.input_tokens

    async def events(self) -> AsyncIterator[Event]:
        output = self._guard.config.output
        holding = output.enabled and output.hold_back  # nothing to wait for with no monitor
        deltas = 0
        async for event in self._inner.events():
            self._written.add(event)
            self._held.append(event)
            if not holding:
                for passed in self._pass_on():
                    yield passed
            if isinstance(event, BlockDelta):
                deltas += 1
                if deltas % output.every_tokens == 0:
                    if await self._blocked():
                        self._inner.cancel()
                        for stop in self._stop():
                            yield stop
                        return
                    for passed in self._pass_on():
                        yield passed
        if await self._blocked():
            for stop in self._stop():
                yield stop
            return
        for passed in self._pass_on():
            yield passed
        self._turn = self._inner.turn

    def _pass_on(self) -> list[Event]:
        """The held events, now sent."""
        events, self._held = self._held, []
        for event in events:
            self._sent.add(event)
            self._sent_deltas += isinstance(event, BlockDelta)
        return events

    def _stop(self) -> list[BlockStop]:
        """End the turn with what was sent (the held events are dropped): the events that close
        its open block."""
        self._held = []
        stops = self._sent.close()
        self._turn = Turn(
            self._sent.blocks,
            REFUSAL,
            input_tokens=self.input_tokens,
            output_tokens=self._sent_deltas,
        )
        return stops

    async def _blocked(self) -> bool:
        """The output monitor's verdict on the reply so far. With the monitor off, an empty
        reply, or one it has read already, there is nothing new to judge."""
        text = self._written.text
        if not self._guard.config.output.enabled or text in ("", self._judged):
            return False
        self._judged = text
        return await self._guard.monitor(self._request_id, self._conversation, text)

    @property
    def blocks(self) -> list[chat.Block]:
        return self._sent.blocks

    @property
    def turn(self) -> Turn | None:
        return self._turn

    def cancel(self) -> None:
        self._inner.cancel()


class SentBlocks:
    """The content blocks that the events passed on so far make up."""

    def __init__(self) -> None:
        self.blocks: list[chat.Block] = []
        self._open: int | None = None
        self._tool_json: dict[int, str] = {}  # a tool_use block's input, as its deltas spell it

    def add(self, event: Event) -> None:
        if isinstance(event, BlockStart):
            self.blocks.append(dataclasses.replace(event.block))  # a copy: the block grows
            self._open = event.index
        elif isinstance(event, BlockStop):
            self._settle(event.index)
            self._open = None
        elif event.kind == "input_json":
            self._tool_json[event.index] = self._tool_json.get(event.index, "") + event.text
        elif event.kind == "thinking":
            self.blocks[event.index].thinking += event.text
        else:
            self.blocks[event.index].text += event.text

    def close(self) -> list[BlockStop]:
        """Stop the open block, if any: the events that end the content here."""
        if self._open is None:
            return []
        stop = BlockStop(self._open)
        self.add(stop)
        return [stop]

    def _settle(self, index: int) -> None:
        # A remote call's input cut off mid-way stays {}, as it started.
        if index in self._tool_json:
            with contextlib.suppress(json.JSONDecodeError):
                self.blocks[index].input = json.loads(self._tool_json[index])

    @property
    def text(self) -> str:
        """What the monitor reads: every block's text, a tool call as its input's JSON."""
        parts = []
        for index, block in enumerate(self.blocks):
            if block.type == "tool_use":
                parts.append(self._tool_json.get(index, ""))
            else:
                parts.append(block.text if block.type == "text" else block.thinking)
        return chat.BLOCK_SEPARATOR.join(parts)


class RefusedStream(TurnStream):
    """The turn of a request the input classifier blocked."""

    def __init__(self, refusal_text: str) -> None:
        self._text = refusal_text
        self._sent = SentBlocks()
        self._turn: Turn | None = None
        self.input_tokens = 0

    async def events(self) -> AsyncIterator[Event]:
        start = BlockStart(0, chat.TextBlock(""))
        for event in (start, BlockDelta(0, "text", self._text), BlockStop(0)):
            self._sent.add(event)
            yield event
        self._turn = Turn(self._sent.blocks, REFUSAL)

    @property
    def blocks(self) -> list[chat.Block]:
        return self._sent.blocks

    @property
    def turn(self) -> Turn | None:
        return self._turn

    def cancel(self) -> None:
        """Nothing runs: the model was never asked."""


def load_judge(config: SafetyConfig, device: str = "cpu") -> Judge:
    """The judge that `config` names, on `device`; an error names the config file."""
    try:
        return Judge.load_as(config.judge, config.judge_dtype, device)
    except (OSError, ValueError) as e:
        raise SafetyConfigError(f"{config.path}: judge: {e}") from e


def guard_generator(generator: Generator, config_path: str | Path, device: str = "cpu") -> Guard:
    """`generator` behind the guard that the safety config `config_path` describes (its judge
    loaded on `device`)."""
    config = load_safety_config(config_path)
    return Guard(generator, load_judge(config, device), config)


def _run(coroutine: Awaitable[T]) -> T:
    """`coroutine` run to its end on a fresh event loop: on this thread, or on a helper thread
    where this one is already running a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()
