"""`LocalGenerator`: a checkpoint on Charter's engine, behind the `Generator` interface.

It owns what a turn means beyond the engine's tokens:
- rendering in the checkpoint's chat format (`chat/format.py`), and parsing the output back
  into content blocks;
- thinking: the prompt opens a think block and `ThinkingBudget` closes it after `budget` tokens
  if the model has not closed it itself, or when the model would end its turn inside it;
  thinking off puts an empty think block in the prompt;
- tool_choice: `any` and a named tool start the answer with the opening of a tool call (the
  model writes the rest); `none` ends the turn if the model starts a tool call anyway;
- stop reasons and exact token usage.

Generation runs on a `ModelWorker` thread that owns the engine (started on first use), so a
batch from `generate`, a server's streams and a chat's turns all share its continuous batching.
"""

from __future__ import annotations

import asyncio
import json
import queue
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tqdm import tqdm

from charter import chat
from charter.chat.format import ChatFormat, FormatError, chat_format
from charter.chat.parse import Event
from charter.chat.template import TOOL_CALL_OPEN
from charter.infer.driver import BatchJob, Job, ModelWorker, StreamingJob
from charter.infer.engine import Completion, Engine, GenerationRequest
from charter.infer.generator import (
    ADAPTIVE,
    END_TURN,
    STOP_SEQUENCE,
    TOOL_USE,
    Generator,
    InvalidRequest,
    Overloaded,
    ScoreRequest,
    ScoringUnsupported,
    TokenScores,
    Turn,
    TurnOptions,
    TurnRequest,
    TurnStream,
    adaptive_budget,
)
from charter.infer.sampling import SamplingParams
from charter.infer.thinking import ThinkingBudget


@dataclass
class PreparedTurn:
    """A request rendered and checked, ready for the engine; turns its completion into a Turn."""

    prompt_ids: list[int]
    params: SamplingParams
    prefix: str  # the start of the answer that tool_choice forces
    internal_stops: list[str]  # stop strings of ours, not the caller's
    starts_in_thinking: bool
    thinking_budget: int | None

    def turn(self, completion: Completion, blocks: list[chat.Block]) -> Turn:
        stop_reason, sequence = completion.stop_reason, completion.stop_sequence
        if sequence in self.internal_stops:
            stop_reason, sequence = END_TURN, None
        elif stop_reason == END_TURN and any(b.type == TOOL_USE for b in blocks):
            stop_reason = TOOL_USE
        return Turn(
            content=blocks,
            stop_reason=stop_reason,
            stop_sequence=sequence if stop_reason == STOP_SEQUENCE else None,
            input_tokens=len(self.prompt_ids),
            # Every token the model generated, including the end-of-turn token that ended it.
            output_tokens=len(completion.token_ids) + (completion.stop_reason == END_TURN),
        )


class LocalGenerator(Generator):
    def __init__(
        self,
        engine: Engine,
        name: str,
        *,
        format: ChatFormat | None = None,
        max_waiting: int = 64,
    ) -> None:
        """`engine` on a checkpoint; `format` defaults to the one its tokenizer carries.
        `max_waiting` bounds the streaming requests queued beyond the engine's rows."""
        self.engine = engine
        self.name = name
        self.format = format or chat_format(engine.tokenizer)
        self.worker = ModelWorker(engine, max_waiting=max_waiting)
        self._started = False

    @property
    def context_window(self) -> int:
        return self.engine.max_len

    # ---- requests → engine requests ----

    def prepare(self, request: TurnRequest) -> PreparedTurn:
        """Check and render `request`; raises `InvalidRequest` naming the field at fault."""
        conversation, options = request.conversation, self._resolve_adaptive(request)
        _validate(conversation, options)
        thinking = options.thinking_budget is not None
        prefix = _forced_prefix(conversation, options)
        try:
            prompt = self.format.prompt(conversation, thinking=thinking, assistant_prefix=prefix)
        except FormatError as e:
            raise InvalidRequest(e.message, e.field) from e
        if len(prompt) >= self.context_window:
            raise InvalidRequest(
                f"prompt is too long: {len(prompt)} tokens; the context window of {self.name} "
                f"is {self.context_window} tokens, and at least one must be left to generate",
                "messages",
            )
        # With tool_choice none the model must not call a tool: a call's opening ends the turn.
        internal = [TOOL_CALL_OPEN] if options.tool_choice == "none" else []
        params = SamplingParams(
            max_new_tokens=options.max_tokens,
            temperature=options.temperature,
            top_p=options.top_p,
            top_k=options.top_k,
            stop=options.stop_sequences + internal,
            seed=options.seed,
        )
        prefill = conversation.messages[-1].role == "assistant"
        return PreparedTurn(
            prompt, params, prefix, internal, thinking and not prefill, options.thinking_budget
        )

    def _resolve_adaptive(self, request: TurnRequest) -> TurnOptions:
        """Adaptive thinking (see `generator.ADAPTIVE`) as a budget or off: off also where the
        request cannot have thinking (a forced tool call, a prefill)."""
        options = request.options
        if options.thinking_budget != ADAPTIVE:
            return options
        can_think = self.format.has_thinking and options.tool_choice not in ("any", "tool")
        if request.conversation.messages[-1].role == "assistant":
            can_think = False
        budget = adaptive_budget(options.max_tokens) if can_think else None
        return replace(options, thinking_budget=budget)

    def _engine_request(self, prepared: PreparedTurn) -> GenerationRequest:
        request = GenerationRequest(prepared.prompt_ids, prepared.params)
        if prepared.thinking_budget is not None:
            request.logits_processors.append(
                ThinkingBudget(
                    self.engine.tokenizer, prepared.thinking_budget, self.engine.eos_token_ids
                )
            )
        return request

    def _submit(self, job: Job) -> Job:
        if not self._started:
            self.worker.start()
            self._started = True
        return self.worker.submit(job)

    def _parse(self, prepared: PreparedTurn, text: str) -> list[chat.Block]:
        parser = self.format.parser(starts_in_thinking=prepared.starts_in_thinking)
        parser.feed(prepared.prefix + text)
        parser.finish()
        return parser.blocks

    # ---- the Generator interface ----

    def generate(self, requests, progress=None, errors="raise"):
        prepared: list[PreparedTurn | InvalidRequest] = []
        for request in requests:  # every error before any generation
            try:
                prepared.append(self.prepare(request))
            except InvalidRequest as e:
                if errors == "raise":
                    raise
                prepared.append(e)
        finished: queue.SimpleQueue[BatchJob] = queue.SimpleQueue()
        jobs = {
            i: self._submit(BatchJob(self._engine_request(p), finished))
            for i, p in enumerate(prepared)
            if isinstance(p, PreparedTurn)
        }
        try:
            with tqdm(total=len(jobs), desc=progress, unit="turn", disable=not progress) as bar:
                for _ in jobs:
                    job = finished.get()
                    if job.error is not None:
                        raise job.error
                    bar.update()
        except BaseException:  # Ctrl-C or a failed request: stop the rest
            for job in jobs.values():
                job.cancel()
            raise
        return [
            p.turn(jobs[i].completion, self._parse(p, jobs[i].completion.text))
            if isinstance(p, PreparedTurn)
            else p
            for i, p in enumerate(prepared)
        ]

    async def open(self, request: TurnRequest) -> TurnStream:
        prepared = self.prepare(request)
        job = StreamingJob(self._engine_request(prepared), asyncio.get_running_loop())
        try:
            self._submit(job)
        except Overloaded as e:
            raise Overloaded(f"{self.name} is overloaded: {e}", e.retry_after) from e
        return _LocalTurnStream(self, prepared, job)

    async def count_tokens(self, request: TurnRequest) -> int:
        return len(self.prepare(request).prompt_ids)

    def prompt_ids(self, request: TurnRequest) -> list[int]:
        """The prompt tokens this generator would generate `request` from."""
        return self.prepare(request).prompt_ids

    def score(self, requests: Sequence[ScoreRequest]) -> list[TokenScores]:
        try:
            rendered = [
                self.format.scored(r.conversation, r.reply, thinking=r.thinking) for r in requests
            ]
        except FormatError as e:
            raise InvalidRequest(e.message, e.field) from e
        try:
            logprobs = self.engine.token_logprobs(
                [s.ids for s in rendered], [s.reply_start for s in rendered]
            )
        except NotImplementedError as e:
            raise ScoringUnsupported(f"{self.name}: {e}") from e
        return [
            TokenScores(s.ids[s.reply_start :], lp)
            for s, lp in zip(rendered, logprobs, strict=True)
        ]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "backend": type(self.engine.backend).__name__,
            "chat_format": self.format.name,
            "context_window": self.context_window,
        }

    def close(self) -> None:
        self.worker.stop()
        close_engine = getattr(self.engine, "close", None)
        if close_engine is not None:
            close_engine()


class _LocalTurnStream(TurnStream):
    def __init__(
        self, generator: LocalGenerator, prepared: PreparedTurn, job: StreamingJob
    ) -> None:
        self._prepared = prepared
        self._job = job
        self._parser = generator.format.parser(starts_in_thinking=prepared.starts_in_thinking)
        self._turn: Turn | None = None
        self.input_tokens = len(prepared.prompt_ids)

    async def events(self) -> AsyncIterator[Event]:
        for event in self._parser.feed(self._prepared.prefix):
            yield event
        async for delta in self._job.text():
            for event in self._parser.feed(delta):
                yield event
        for event in self._parser.finish():
            yield event
        self._turn = self._prepared.turn(self._job.completion, self._parser.blocks)

    @property
    def blocks(self) -> list[chat.Block]:
        return self._parser.blocks

    @property
    def turn(self) -> Turn | None:
        return self._turn

    def cancel(self) -> None:
        self._job.cancel()


# ---- request checks (the rules of the Messages API) ----


def _validate(conversation: chat.Conversation, options: TurnOptions) -> None:
    tool_names = [t.name for t in conversation.tools]
    if options.tool_choice in ("any", "tool") and not tool_names:
        raise InvalidRequest(f"tool_choice {options.tool_choice!r} needs tools", "tool_choice")
    if options.tool_choice == "tool" and options.tool_name not in tool_names:
        raise InvalidRequest(
            f"tool {options.tool_name!r} is not among the tools given ({', '.join(tool_names)})",
            "tool_choice.name",
        )
    if options.thinking_budget is not None:
        if options.tool_choice in ("any", "tool"):
            raise InvalidRequest(
                "thinking cannot be enabled when tool_choice forces a tool call", "tool_choice"
            )
        if conversation.messages[-1].role == "assistant":
            raise InvalidRequest(
                "a final assistant message (prefill) cannot be combined with thinking", "messages"
            )


def _forced_prefix(conversation: chat.Conversation, options: TurnOptions) -> str:
    """The start of the answer that `tool_choice` forces: the opening of a tool call, up to the
    tool's input when the tool is known."""
    name = options.tool_name
    if options.tool_choice == "any" and len(conversation.tools) == 1:
        name = conversation.tools[0].name
    if options.tool_choice == "tool" or name:
        return f'{TOOL_CALL_OPEN}{{"name": {json.dumps(name)}, "input": '
    if options.tool_choice == "any":
        return f'{TOOL_CALL_OPEN}{{"name": "'
    return ""
