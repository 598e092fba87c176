"""Held-out SFT evaluation: scoring, tool execution and validity, thinking modes, on scripted
completions (known answers) and end to end on a micro checkpoint through the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from charter.chat import ThinkingBlock, ToolUseBlock, assistant_body, render
from charter.chat_template import THINK_CLOSE, THINK_PROMPT
from charter.checkpoint import save_checkpoint
from charter.cli import main
from charter.data.sft import read_sft, write_sft
from charter.data.synthetic import CALCULATOR, TASKS, generate
from charter.eval.sft_tasks import (
    engine_completer,
    evaluate,
    evaluate_model,
    run_tool,
    tool_call_is_valid,
)
from charter.infer.engine import Engine
from charter.infer.sampling import SamplingParams
from charter.model import Transformer
from charter.tokenizer import IM_START
from tests.helpers import micro


def scripted(records, tokenizer, answer=None):
    """A `Complete` that answers like the demonstrations (or with `answer(record, body)`): it
    finds the record a prompt belongs to and the assistant turn due in that round."""

    def prefix(record, thinking: bool) -> str:
        return tokenizer.decode(render(record.prompt(), tokenizer, thinking=thinking).ids)

    prefixes = {t: [(prefix(r, t), r) for r in records] for t in (False, True)}

    def complete(prompts: list[list[int]], thinking_flags: list[bool]) -> list[str]:
        texts = []
        for ids, thinking in zip(prompts, thinking_flags, strict=True):
            text = tokenizer.decode(ids)
            assert text.endswith(THINK_PROMPT) == thinking  # the flag says how the prompt ends
            record = next(r for p, r in prefixes[thinking] if text.startswith(p))
            due = len(record.prompt().messages) + 2 * text.count(f"{IM_START}tool\n")
            content = record.conversation.messages[due].content
            if thinking:  # the model continues inside the open <think>
                body = assistant_body(content, thinking=True).removeprefix(THINK_PROMPT)
            else:  # thinking off: the prompt already holds the empty think block
                answer_only = [b for b in content if not isinstance(b, ThinkingBlock)]
                body = assistant_body(answer_only, thinking=True)
            texts.append(answer(record, body) if answer else body)
        return texts

    return complete


@pytest.fixture(scope="module")
def heldout():
    return generate("heldout", 24, seed=5, thinking_fraction=1.0)


def test_demonstrated_answers_score_full_marks_in_both_modes(tokenizer, heldout):
    report, attempts = evaluate(
        heldout, tokenizer, scripted(heldout, tokenizer), context_length=4096
    )
    assert report["examples"] == 24
    for mode in ("thinking_off", "thinking_on"):
        result = report["modes"][mode]
        assert result["accuracy"] == 1.0
        assert set(result["tasks"]) == set(TASKS)
        assert sum(t["n"] for t in result["tasks"].values()) == 24
        assert result["tool_calls"] == {
            "prompts": 3,
            "prompts_with_a_valid_call": 3,
            "attempted": 3,
            "valid": 3,
            "validity_rate": 1.0,
        }
        assert result["context_exceeded"] == 0
    # The calculator ran: the tool result the model read back is the true product.
    calculator = next(a for a in attempts if a.record.task == "calculator")
    assert calculator.conversation.messages[-1].content[0].content == calculator.record.answer
    assert len(calculator.transcript) == 2


def test_wrong_answers_and_malformed_tool_calls_are_scored_as_such(tokenizer, heldout):
    def answer(record, body):
        if "<tool_call>" in body:
            return body.replace('{"name"', "{name")  # malformed JSON: comes back as text
        return "Sorry, I cannot help with that."

    report, attempts = evaluate(
        heldout, tokenizer, scripted(heldout, tokenizer, answer), context_length=4096
    )
    for result in report["modes"].values():
        assert result["accuracy"] == 0.0
        assert result["tool_calls"]["attempted"] == 3
        assert result["tool_calls"]["valid"] == 0
        assert result["tool_calls"]["validity_rate"] == 0.0
    malformed = next(a for a in attempts if a.record.task == "calculator")
    assert malformed.response.startswith("<tool_call>{name")
    assert len(malformed.transcript) == 1  # nothing to execute, so no second round


def test_tool_call_validity_follows_the_input_schema():
    good = ToolUseBlock("toolu_1", "calculator", {"expression": "2 * 3"})
    assert tool_call_is_valid(good, [CALCULATOR])
    assert run_tool(good, [CALCULATOR]).content == "6"
    missing = ToolUseBlock("toolu_2", "calculator", {"expr": "2 * 3"})
    assert not tool_call_is_valid(missing, [CALCULATOR])
    assert not tool_call_is_valid(good, [])  # a tool that was not offered
    result = run_tool(missing, [CALCULATOR])
    assert result.is_error and "invalid call" in result.content
    failing = run_tool(ToolUseBlock("toolu_3", "calculator", {"expression": "1 / 0"}), [CALCULATOR])
    assert failing.is_error and failing.content == "division by zero"


def test_records_without_an_answer_are_refused(tokenizer, heldout):
    record = heldout[0]
    record.answer = None
    try:
        with pytest.raises(ValueError, match="no task and answer to check against"):
            evaluate([record], tokenizer, lambda prompts, thinking: [], context_length=4096)
    finally:
        record.answer = "restored"


@pytest.fixture(scope="module")
def micro_checkpoint(tokenizer, tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("micro-chat")
    save_checkpoint(Transformer(micro()), directory, tokenizer)
    return directory


def test_engine_completer_closes_a_think_block_the_model_would_leave_open(tokenizer):
    torch.manual_seed(0)
    model = Transformer(micro()).eval()
    prompt, greedy = [5, 6, 7], SamplingParams(max_new_tokens=8, temperature=0)
    first = Engine(model, tokenizer, eos_token_ids=[]).generate([prompt], greedy)[0].token_ids[0]
    engine = Engine(model, tokenizer, eos_token_ids=[first])  # the model ends its turn at once
    off, on = engine_completer(engine, greedy, progress=False)([prompt, prompt], [False, True])
    assert off == ""  # no think block open: the turn ends
    assert on.startswith(f"\n{THINK_CLOSE}\n")  # inside one: it is closed instead


def test_end_to_end_on_a_micro_model(tokenizer, micro_checkpoint, tmp_path, capsys):
    records = generate("heldout", 8, seed=2)
    torch.manual_seed(0)
    model = Transformer(micro()).train()  # as the SFT loop hands it over
    first, attempts = evaluate_model(model, tokenizer, records, max_new_tokens=6, progress=False)
    assert model.training  # the loop's mode is restored
    again, _ = evaluate_model(model, tokenizer, records, max_new_tokens=6, progress=False)
    assert first == again  # greedy decoding: the same report
    for result in first["modes"].values():
        assert sum(t["n"] for t in result["tasks"].values()) == 8
        # The calculator prompt (with its tools section) is longer than micro's 256 positions.
        assert result["context_exceeded"] == 1
    for attempt in attempts:
        if not attempt.context_exceeded:
            assert (
                1 <= len(attempt.transcript) and len(tokenizer.encode(attempt.transcript[0])) <= 6
            )

    data = tmp_path / "heldout.jsonl"
    write_sft(records, data)
    details = tmp_path / "details.jsonl"
    main(
        [
            "eval",
            "sft",
            "--model",
            str(micro_checkpoint),
            "--data",
            str(data),
            "--limit",
            "4",
            "--max-new-tokens",
            "4",
            "--out",
            str(tmp_path / "eval.json"),
            "--details",
            str(details),
        ]
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "eval.json").read_text())
    assert printed["examples"] == 4 and set(printed["modes"]) == {"thinking_off", "thinking_on"}
    lines = [json.loads(line) for line in details.read_text().splitlines()]
    assert len(lines) == 8
    assert {line["where"] for line in lines} == {r.where for r in list(read_sft([data]))[:4]}
