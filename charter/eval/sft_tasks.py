"""Held-out evaluation of a fine-tuned model on the synthetic tasks (`charter.data.synthetic`).

For every held-out record and each thinking mode, the model answers the record's prompt (the
conversation up to the user's last question), rendered with the same `render_prompt` the server
uses, and its text is parsed back into blocks with `AssistantParser`. Tool calls are executed
(the `calculator`) and their results fed back, for a few rounds at most; the final text is then
checked against the record's answer. Reported, per thinking mode:

- exact-match accuracy, overall and per task;
- tool-call validity on the prompts that offer tools: of the calls the model attempted, the share
  that parsed, named an offered tool and whose input satisfies its JSON schema; and how many of
  those prompts got at least one valid call;
- how many prompts outgrew the context window (scored wrong, and counted so it is visible).

Generation goes through a `Complete` function (token prompts and whether each starts inside a
think block → completion texts), so the same scoring runs on Charter's `Engine`
(`engine_completer`, which closes think blocks as the server does) or on scripted completions in
tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from charter.chat import (
    Conversation,
    Message,
    TextBlock,
    Tool,
    ToolResultBlock,
    ToolUseBlock,
    render_prompt,
)
from charter.chat_parser import AssistantParser
from charter.data.sft import SFTRecord
from charter.data.synthetic import calculate, check
from charter.infer.engine import Engine
from charter.infer.sampling import SamplingParams
from charter.infer.thinking import ThinkingBudget
from charter.model import Transformer
from charter.tokenizer import Tokenizer

# (prompts, thinking per prompt) → completion texts
Complete = Callable[[list[list[int]], list[bool]], list[str]]
Render = Callable[[Conversation, bool], list[int]]  # (conversation, thinking) → prompt ids


def charter_renderer(tokenizer: Tokenizer) -> Render:
    """Prompts in Charter's format, exactly as the server renders them (`render_prompt`)."""
    return lambda conversation, thinking: render_prompt(conversation, tokenizer, thinking=thinking)


def template_renderer(tokenizer: Tokenizer) -> Render:
    """Prompts in the checkpoint's own chat template, for a model not trained on Charter's format
    (SmolLM2 before fine-tuning): text-only conversations, no thinking."""

    def render(conversation: Conversation, thinking: bool) -> list[int]:
        if thinking or conversation.tools:
            raise ValueError("the model's own template is used without thinking or tools")
        messages = (
            [{"role": "system", "content": conversation.system}] if conversation.system else []
        )
        for message in conversation.messages:
            if not all(isinstance(b, TextBlock) for b in message.content):
                raise ValueError("the model's own template is used for text-only conversations")
            text = "\n\n".join(b.text for b in message.content)
            messages.append({"role": message.role, "content": text})
        return tokenizer.encode(tokenizer.apply_chat_template(messages))

    return render


# The tools the evaluation can run: name → function of the call's input, returning the result.
TOOL_FUNCTIONS: dict[str, Callable[[dict[str, Any]], str]] = {
    "calculator": lambda tool_input: calculate(str(tool_input["expression"])),
}


@dataclass
class Attempt:
    """One record answered under one thinking mode; the conversation grows with tool rounds."""

    record: SFTRecord
    thinking: bool
    conversation: Conversation
    response: str = ""
    correct: bool = False
    tool_calls: int = 0  # attempted, well-formed or not
    valid_tool_calls: int = 0
    context_exceeded: bool = False
    transcript: list[str] = field(default_factory=list)  # the raw completions, round by round

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


def tool_call_is_valid(call: ToolUseBlock, tools: Sequence[Tool]) -> bool:
    """The call names an offered tool and its input satisfies that tool's input schema."""
    tool = next((t for t in tools if t.name == call.name), None)
    if tool is None:
        return False
    try:
        jsonschema.validate(call.input, tool.input_schema)
    except jsonschema.ValidationError:
        return False
    return True


def run_tool(call: ToolUseBlock, tools: Sequence[Tool]) -> ToolResultBlock:
    """The result the model reads back: the tool's output, or an error it can react to."""
    if not tool_call_is_valid(call, tools) or call.name not in TOOL_FUNCTIONS:
        return ToolResultBlock(call.id, f"invalid call to tool {call.name!r}", is_error=True)
    try:
        return ToolResultBlock(call.id, TOOL_FUNCTIONS[call.name](call.input))
    except ValueError as e:
        return ToolResultBlock(call.id, str(e), is_error=True)


def evaluate(
    records: Sequence[SFTRecord],
    tokenizer: Tokenizer,
    complete: Complete,
    *,
    context_length: int,
    thinking_modes: Sequence[bool] = (False, True),
    max_tool_rounds: int = 3,
    render: Render | None = None,
) -> tuple[dict[str, Any], list[Attempt]]:
    """The report (see the module docstring) and every attempt, for inspection. Prompts are
    rendered with Charter's `render_prompt` unless `render` says otherwise."""
    render = render or charter_renderer(tokenizer)
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
        prompts = [render(a.conversation, a.thinking) for a in pending]
        fits = [len(prompt) < context_length for prompt in prompts]
        for attempt, fit in zip(pending, fits):
            attempt.context_exceeded = not fit
        fitting = [(p, a.thinking) for p, a, fit in zip(prompts, pending, fits) if fit]
        texts = iter(complete([p for p, _ in fitting], [thinking for _, thinking in fitting]))
        still_calling = []
        for attempt, fit in zip(pending, fits):
            if fit and _take_completion(attempt, next(texts), round_number < max_tool_rounds):
                still_calling.append(attempt)
        pending = still_calling
        if not pending:
            break
    return report(attempts, thinking_modes), attempts


def _take_completion(attempt: Attempt, text: str, may_call_tools: bool) -> bool:
    """Parse one completion into `attempt`; True if it called tools and should continue."""
    attempt.transcript.append(text)
    parser = AssistantParser(starts_in_thinking=attempt.thinking)
    parser.feed(text)
    parser.finish()
    blocks = parser.blocks
    tools = attempt.conversation.tools
    calls = [b for b in blocks if isinstance(b, ToolUseBlock)]
    attempt.tool_calls += parser.tool_calls
    attempt.valid_tool_calls += sum(tool_call_is_valid(call, tools) for call in calls)
    if calls and may_call_tools:
        results = [run_tool(call, tools) for call in calls]
        attempt.conversation.messages += [Message("assistant", blocks), Message("user", results)]
        return True
    attempt.response = "".join(b.text for b in blocks if isinstance(b, TextBlock))
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


def engine_completer(engine: Engine, params: SamplingParams, progress: bool = True) -> Complete:
    """Completions from Charter's engine, all prompts of a round batched continuously; a prompt
    that starts inside a think block gets the server's `ThinkingBudget` (at most the whole
    completion), so a turn never ends with its thinking open."""

    def complete(prompts: list[list[int]], thinking: list[bool]) -> list[str]:
        processors = [
            [ThinkingBudget(engine.tokenizer, params.max_new_tokens, engine.eos_token_ids)]
            if think
            else []
            for think in thinking
        ]
        completions = engine.generate(
            prompts, params, progress="eval" if progress else None, logits_processors=processors
        )
        return [completion.text for completion in completions]

    return complete


def evaluate_engine(
    engine: Engine,
    records: Sequence[SFTRecord],
    *,
    max_new_tokens: int = 256,
    thinking_modes: Sequence[bool] = (False, True),
    progress: bool = True,
    own_template: bool = False,
) -> tuple[dict[str, Any], list[Attempt]]:
    """`evaluate` with greedy decoding on an engine (PyTorch or llama.cpp)."""
    tokenizer = engine.tokenizer
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0)
    return evaluate(
        records,
        tokenizer,
        engine_completer(engine, params, progress),
        context_length=engine.max_len,
        thinking_modes=thinking_modes,
        render=template_renderer(tokenizer) if own_template else None,
    )


def evaluate_model(
    model: Transformer,
    tokenizer: Tokenizer,
    records: Sequence[SFTRecord],
    *,
    batch_size: int = 8,
    max_len: int = 2048,
    **options: Any,
) -> tuple[dict[str, Any], list[Attempt]]:
    """`evaluate_engine` on a model in memory (the SFT loop calls this). The KV cache holds
    `max_len` positions per row (the model's context if shorter): the prompts are short, and a
    full 8k-context cache for every row would cost gigabytes. The model's train/eval mode is
    restored afterwards."""
    was_training = model.training
    try:
        engine = Engine(model, tokenizer, max_batch_size=batch_size, max_len=max_len)
        return evaluate_engine(engine, records, **options)
    finally:
        model.train(was_training)
