"""Held-out evaluation of a fine-tuned model on the synthetic tasks (`charter.data.synthetic`).

For every held-out record and each thinking mode, the model answers the record's prompt (the
conversation up to the user's last question) through a `Generator`, as the server would: in the
model's own chat format, greedily, thinking closed by the thinking budget. Tool calls are
executed (the `calculator`) and their results fed back, for a few rounds at most; the final text
is then checked against the record's answer. Reported, per thinking mode:

- exact-match accuracy, overall and per task;
- tool-call validity on the prompts that offer tools: of the calls the model attempted, the share
  that parsed, named an offered tool and whose input satisfies its JSON schema; and how many of
  those prompts got at least one valid call;
- how many prompts outgrew the context window (scored wrong, and counted so it is visible).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from charter import chat
from charter.chat import Message, TextBlock, ToolUseBlock
from charter.chat.format import CharterFormat
from charter.chat.template import TOOL_CALL_OPEN
from charter.data.sft import SFTRecord
from charter.infer.engine import Engine
from charter.infer.generator import Generator, InvalidRequest, Turn, TurnOptions, TurnRequest
from charter.infer.local import LocalGenerator
from charter.infer.torch_backend import TorchBackend
from charter.model import Transformer
from charter.tasks.checks import check
from charter.tasks.tools import run_tool, tool_call_is_valid
from charter.tokenizer import Tokenizer


@dataclass
class Attempt:
    """One record answered under one thinking mode; the conversation grows with tool rounds."""

    record: SFTRecord
    thinking: bool
    conversation: chat.Conversation
    response: str = ""
    correct: bool = False
    tool_calls: int = 0  # attempted, well-formed or not
    valid_tool_calls: int = 0
    context_exceeded: bool = False
    transcript: list[Any] = field(default_factory=list)  # each round's turn, as JSON content

    def to_json(self) -> dict[str, Any]:
        return {
            "where": self.record.where,
            "task": self.record.task,
            "thinking": self.thinking,
            "answer": self.record.answer,
            "response": self.response,
            "correct": self.correct,
            "tool_calls": self.tool_calls,
            "valid_tool_calls": self.valid_tool_calls,
            "context_exceeded": self.context_exceeded,
            "completions": self.transcript,
        }


def evaluate(
    records: Sequence[SFTRecord],
    generator: Generator,
    *,
    max_new_tokens: int = 256,
    thinking_modes: Sequence[bool] = (False, True),
    max_tool_rounds: int = 3,
    progress: bool = True,
) -> tuple[dict[str, Any], list[Attempt]]:
    """The report (see the module docstring) and every attempt, for inspection. Answers are
    greedy; with thinking on, the think block may take the whole completion (the budget closes
    it before the turn may end)."""
    for record in records:
        if record.task is None or record.answer is None:
            raise ValueError(f"{record.where}: no task and answer to check against")
    attempts = [
        Attempt(record, thinking, record.prompt())
        for thinking in thinking_modes
        for record in records
    ]
    pending = attempts
    for round_number in range(max_tool_rounds + 1):
        requests = [
            TurnRequest(
                a.conversation,
                TurnOptions(
                    max_tokens=max_new_tokens,
                    thinking_budget=max_new_tokens if a.thinking else None,
                    temperature=0,
                ),
            )
            for a in pending
        ]
        turns = generator.generate(requests, "eval" if progress else None, errors="return")
        still_calling = []
        for attempt, turn in zip(pending, turns, strict=True):
            if isinstance(turn, InvalidRequest):
                if turn.field != "messages":  # not the context: the model cannot take it
                    raise turn
                attempt.context_exceeded = True  # the conversation outgrew the context
            elif _take_turn(attempt, turn, round_number < max_tool_rounds):
                still_calling.append(attempt)
        pending = still_calling
        if not pending:
            break
    return report(attempts, thinking_modes), attempts


def _take_turn(attempt: Attempt, turn: Turn, may_call_tools: bool) -> bool:
    """Take one turn into `attempt`; True if it called tools and should continue."""
    attempt.transcript.append(chat.content_to_json(turn.content))
    tools = attempt.conversation.tools
    calls = [b for b in turn.content if isinstance(b, ToolUseBlock)]
    # A malformed call comes back as text that opens a call: count it as an attempt.
    malformed = sum(b.text.count(TOOL_CALL_OPEN) for b in turn.content if b.type == "text")
    attempt.tool_calls += len(calls) + malformed
    attempt.valid_tool_calls += sum(tool_call_is_valid(call, tools) for call in calls)
    if calls and may_call_tools:
        results = [run_tool(call, tools) for call in calls]
        attempt.conversation.messages += [
            Message("assistant", turn.content),
            Message("user", results),
        ]
        return True
    attempt.response = "".join(b.text for b in turn.content if isinstance(b, TextBlock))
    attempt.correct = check(attempt.record.task, attempt.record.answer, attempt.response)
    return False


def report(attempts: Sequence[Attempt], thinking_modes: Sequence[bool]) -> dict[str, Any]:
    modes = {}
    for thinking in thinking_modes:
        mine = [a for a in attempts if a.thinking == thinking]
        tasks: dict[str, dict[str, Any]] = {}
        for attempt in mine:
            task = tasks.setdefault(attempt.record.task, {"n": 0, "correct": 0})
            task["n"] += 1
            task["correct"] += attempt.correct
        for task in tasks.values():
            task["accuracy"] = task["correct"] / task["n"]
        with_tools = [a for a in mine if a.record.conversation.tools]
        attempted = sum(a.tool_calls for a in with_tools)
        valid = sum(a.valid_tool_calls for a in with_tools)
        modes["thinking_on" if thinking else "thinking_off"] = {
            "accuracy": sum(a.correct for a in mine) / len(mine) if mine else None,
            "tasks": dict(sorted(tasks.items())),
            "tool_calls": {
                "prompts": len(with_tools),
                "prompts_with_a_valid_call": sum(a.valid_tool_calls > 0 for a in with_tools),
                "attempted": attempted,
                "valid": valid,
                "validity_rate": valid / attempted if attempted else None,
            },
            "context_exceeded": sum(a.context_exceeded for a in mine),
        }
    return {"examples": len(attempts) // max(len(thinking_modes), 1), "modes": modes}


def evaluate_model(
    model: Transformer,
    tokenizer: Tokenizer,
    records: Sequence[SFTRecord],
    *,
    batch_size: int = 8,
    max_len: int = 2048,
    **options: Any,
) -> dict[str, Any]:
    """The report of `evaluate` on a model in memory being trained in Charter's format (the SFT
    loop calls this). The KV cache holds `max_len` positions per row (the model's context if
    shorter): the prompts are short, and a full 8k-context cache for every row would cost
    gigabytes. The model's train/eval mode is restored afterwards."""
    was_training = model.training
    engine = Engine(TorchBackend(model, max_batch_size=batch_size, max_len=max_len), tokenizer)
    try:
        with LocalGenerator(engine, "training", format=CharterFormat(tokenizer)) as generator:
            report, _ = evaluate(records, generator, progress=False, **options)
        return report
    finally:
        model.train(was_training)
