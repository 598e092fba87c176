"""One assistant turn, shared by both APIs: render the conversation into a prompt, generate on the
model's worker, and parse the streamed text back into content blocks.

The request semantics that are not the API's wire format live here:
- thinking: the prompt opens a think block and `ThinkingBudget` closes it after `budget` tokens
  if the model has not closed it itself, or when the model would end its turn inside it;
  thinking off puts an empty think block in the prompt;
- tool_choice: `any` and a named tool start the answer with the opening of a tool call (the
  model writes the rest); `none` ends the turn if the model starts a tool call anyway;
- stop reasons and exact token usage.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from charter import chat
from charter.chat_template import TOOL_CALL_OPEN
from charter.infer.engine import END_TURN, STOP_SEQUENCE, GenerationRequest
from charter.infer.sampling import SamplingParams
from charter.infer.thinking import ThinkingBudget
from charter.serve.errors import ApiError, invalid_request
from charter.serve.registry import ServedModel
from charter.serve.worker import Overloaded

TOOL_USE = "tool_use"
# Seconds a client should wait after a 529; a turn of a small model takes about this long.
OVERLOADED_RETRY_AFTER = 2.0


@dataclass
class TurnOptions:
    max_tokens: int
    thinking_budget: int | None = None  # None: thinking off
    tool_choice: Literal["auto", "any", "none", "tool"] = "auto"
    tool_name: str | None = None  # for tool_choice "tool"
    stop_sequences: list[str] = field(default_factory=list)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None


def _validate(conversation: chat.Conversation, options: TurnOptions) -> None:
    tool_names = [t.name for t in conversation.tools]
    if options.tool_choice in ("any", "tool") and not tool_names:
        raise invalid_request(f"tool_choice {options.tool_choice!r} needs tools", "tool_choice")
    if options.tool_choice == "tool" and options.tool_name not in tool_names:
        raise invalid_request(
            f"tool {options.tool_name!r} is not among the tools given ({', '.join(tool_names)})",
            "tool_choice.name",
        )
    if options.thinking_budget is not None:
        if options.tool_choice in ("any", "tool"):
            raise invalid_request(
                "thinking cannot be enabled when tool_choice forces a tool call", "tool_choice"
            )
        if conversation.messages[-1].role == "assistant":
            raise invalid_request(
                "a final assistant message (prefill) cannot be combined with thinking", "messages"
            )
    if any(not s for s in options.stop_sequences):
        raise invalid_request("stop sequences must be non-empty strings", "stop_sequences")


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


def read_conversation(data: dict, positions: list[int]) -> chat.Conversation:
    """`chat.conversation_from_dict` of Anthropic-format `data` built from a request; an error
    becomes a 400 naming the request's own message: `positions[k]` is the index in the request
    of message k of `data` (requests may hold messages that `data` folds elsewhere)."""
    try:
        return chat.conversation_from_dict(data, where="request")
    except ValueError as e:
        renumbered = re.sub(
            r"messages\[(\d+)\]", lambda m: f"messages[{positions[int(m[1])]}]", str(e)
        )
        raise invalid_request(renumbered.removeprefix("request: ")) from e


def count_prompt_tokens(
    served: ServedModel, conversation: chat.Conversation, options: TurnOptions
) -> int:
    return len(_render(served, conversation, options))


def _render(
    served: ServedModel, conversation: chat.Conversation, options: TurnOptions
) -> list[int]:
    _validate(conversation, options)
    return chat.render_prompt(
        conversation,
        served.tokenizer,
        thinking=options.thinking_budget is not None,
        assistant_prefix=_forced_prefix(conversation, options),
    )


class AssistantTurn:
    def __init__(
        self, served: ServedModel, conversation: chat.Conversation, options: TurnOptions
    ) -> None:
        """Render and submit the turn. Raises a 400 for a prompt longer than the context and
        a 529 when the model's queue is full."""
        self.served = served
        self.prompt_ids = _render(served, conversation, options)
        if len(self.prompt_ids) >= served.context_window:
            raise invalid_request(
                f"prompt is too long: {len(self.prompt_ids)} tokens; the context window of "
                f"{served.name} is {served.context_window} tokens, and at least one must be left "
                "to generate",
                "messages",
            )
        self._prefix = _forced_prefix(conversation, options)
        # With tool_choice none the model must not call a tool: a call's opening ends the turn.
        self._internal_stops = [TOOL_CALL_OPEN] if options.tool_choice == "none" else []
        params = SamplingParams(
            max_new_tokens=options.max_tokens,
            temperature=options.temperature,
            top_p=options.top_p,
            top_k=options.top_k,
            stop=options.stop_sequences + self._internal_stops,
            seed=options.seed,
        )
        request = GenerationRequest(self.prompt_ids, params)
        if options.thinking_budget is not None:
            request.logits_processors.append(
                ThinkingBudget(
                    served.tokenizer, options.thinking_budget, served.worker.engine.eos_token_ids
                )
            )
        try:
            self.job = served.worker.submit(request)
        except Overloaded as e:
            raise ApiError(
                529, f"{served.name} is overloaded: {e}", retry_after=OVERLOADED_RETRY_AFTER
            ) from e
        self.parser = chat.AssistantParser(starts_in_thinking=options.thinking_budget is not None)

    def cancel(self) -> None:
        self.job.cancel()

    async def events(self) -> AsyncIterator[chat.Event]:
        """Parser events (block start, delta, stop) as the text arrives."""
        for event in self.parser.feed(self._prefix) if self._prefix else []:
            yield event
        async for delta in self.job.text():
            for event in self.parser.feed(delta):
                yield event
        for event in self.parser.finish():
            yield event

    async def run(self, disconnected: Callable[[], Awaitable[bool]]) -> list[chat.Block]:
        """The whole turn's blocks; cancels the generation if `disconnected()` turns true."""

        async def consume() -> None:
            async for _ in self.events():
                pass

        task = asyncio.ensure_future(consume())
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=0.2)
                if not task.done() and await disconnected():
                    raise ApiError(499, "client disconnected")
        finally:
            if not task.done():
                self.cancel()
                task.cancel()
        task.result()  # re-raise a failure of the generation
        return self.parser.blocks

    # ---- after the generation ended ----

    @property
    def stop_reason(self) -> str:
        completion = self.job.completion
        if completion.stop_reason == STOP_SEQUENCE and self.stop_sequence is None:
            return END_TURN
        if completion.stop_reason == END_TURN and any(
            b.type == TOOL_USE for b in self.parser.blocks
        ):
            return TOOL_USE
        return completion.stop_reason

    @property
    def stop_sequence(self) -> str | None:
        sequence = self.job.completion.stop_sequence
        return None if sequence in self._internal_stops else sequence

    @property
    def input_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def output_tokens(self) -> int:
        """Every token the model generated, including the end-of-turn token that ended it."""
        completion = self.job.completion
        return len(completion.token_ids) + (completion.stop_reason == END_TURN)
