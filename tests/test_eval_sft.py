"""Held-out SFT evaluation: scoring, tool execution and validity, thinking modes, on scripted
model output (known answers), the thinking budget and the context on a real micro model, and
end to end on a micro checkpoint through the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from charter.chat import ThinkingBlock, ToolUseBlock, assistant_body, render_prompt
from charter.chat.format import CharterFormat
from charter.chat.template import THINK_CLOSE, THINK_END, THINK_PROMPT
from charter.checkpoint import save_checkpoint
from charter.cli import main
from charter.data.sft import read_sft, write_sft
from charter.data.synthetic import TASKS, generate
from charter.eval.sft_tasks import evaluate, evaluate_model
from charter.infer.engine import Engine
from charter.infer.generator import InvalidRequest, Turn
from charter.infer.local import LocalGenerator
from charter.infer.torch_backend import TorchBackend
from charter.model import Transformer
from charter.tasks.tools import CALCULATOR, run_tool, tool_call_is_valid
from tests.generator_helpers import ScriptedGenerator, recorded_jobs
from tests.helpers import micro
from tests.serve_helpers import reply_ids


def demonstrations(records, answer=None):
    """A script that answers like the demonstrations (or with `answer(record, body)`): it finds
    the record a request continues and the assistant turn due in that round."""

    def continues(conversation, prompt) -> bool:
        n = len(prompt.messages)
        return conversation.system == prompt.system and conversation.messages[:n] == prompt.messages

    def script(request) -> str:
        conversation = request.conversation
        record = next(r for r in records if continues(conversation, r.prompt()))
        content = record.conversation.messages[len(conversation.messages)].content
        if request.options.thinking_budget is not None:  # the model continues inside <think>
            body = assistant_body(content, thinking=True).removeprefix(THINK_PROMPT)
        else:  # thinking off: the prompt already holds the empty think block
            answer_only = [b for b in content if not isinstance(b, ThinkingBlock)]
            body = assistant_body(answer_only, thinking=True)
        return answer(record, body) if answer else body

    return script


def block_types(content) -> list[str]:
    """The block types of a turn's content as `chat.content_to_json` writes it."""
    return ["text"] if isinstance(content, str) else [block["type"] for block in content]


@pytest.fixture(scope="module")
def heldout():
    return generate("heldout", 24, seed=5, thinking_fraction=1.0)


def test_demonstrated_answers_score_full_marks_in_both_modes(tokenizer, heldout):
    generator = ScriptedGenerator(CharterFormat(tokenizer), demonstrations(heldout))
    report, attempts = evaluate(heldout, generator, max_new_tokens=64, progress=False)
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
    # Greedy, and thinking on only in its mode, with the whole completion as its budget: every
    # prompt once per mode, and the three calculator prompts a second round after their call.
    options = [(r.options.thinking_budget, r.options.temperature) for r in generator.requests]
    assert options.count((None, 0)) == options.count((64, 0)) == 24 + 3
    for attempt in attempts:  # the model's thinking was parsed as thinking only when asked for
        assert ("thinking" in block_types(attempt.transcript[0])) == attempt.thinking
    # The calculator ran: the tool result the model read back is the true product.
    calculator = next(a for a in attempts if a.record.task == "calculator")
    assert calculator.conversation.messages[-1].content[0].content == calculator.record.answer
    assert len(calculator.transcript) == 2
    assert "tool_use" in block_types(calculator.transcript[0])


def test_wrong_answers_and_malformed_tool_calls_are_scored_as_such(tokenizer, heldout):
    def answer(record, body):
        if "<tool_call>" in body:
            return body.replace('{"name"', "{name")  # malformed JSON: comes back as text
        return "Sorry, I cannot help with that."

    generator = ScriptedGenerator(CharterFormat(tokenizer), demonstrations(heldout, answer))
    report, attempts = evaluate(heldout, generator, progress=False)
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
    generator = ScriptedGenerator(CharterFormat(tokenizer), demonstrations(heldout))
    try:
        with pytest.raises(ValueError, match="no task and answer to check against"):
            evaluate([record], generator, progress=False)
    finally:
        record.answer = "restored"
    assert generator.requests == []  # refused before anything is generated


@pytest.fixture(scope="module")
def micro_checkpoint(tokenizer, tmp_path_factory):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("micro-chat")
    save_checkpoint(Transformer(micro()), directory, tokenizer)
    return directory


def test_a_think_block_the_model_would_leave_open_is_closed(tokenizer, monkeypatch):
    torch.manual_seed(0)
    engine = Engine(TorchBackend(Transformer(micro()).eval()), tokenizer)
    record = next(r for r in generate("heldout", 8, seed=2) if not r.conversation.tools)
    with LocalGenerator(engine, "micro") as generator:
        # The model would end its turn at once: its first token is <|im_end|>.
        jobs = recorded_jobs(generator, monkeypatch, forced=reply_ids(tokenizer, ""))
        _, (off, on) = evaluate([record], generator, max_new_tokens=8, progress=False)
    # The server's prompts: an empty think block with thinking off, an open one with it on.
    prompts = [render_prompt(record.prompt(), tokenizer, thinking=t) for t in (False, True)]
    assert [job.request.prompt_ids for job in jobs] == prompts
    off_text, on_text = (job.completion.text for job in jobs)
    assert off_text == "" and off.transcript == [[]]  # no think block open: the turn ends
    assert on_text.startswith(THINK_END)  # inside one: it is closed instead
    assert THINK_CLOSE not in json.dumps(on.transcript)  # the tag is the format's, not text


def test_end_to_end_on_a_micro_model(tokenizer, micro_checkpoint, tmp_path, capsys, monkeypatch):
    records = generate("heldout", 8, seed=2)
    torch.manual_seed(0)
    model = Transformer(micro()).train()  # as the SFT loop hands it over
    first = evaluate_model(model, tokenizer, records, max_new_tokens=6)
    assert model.training  # the loop's mode is restored
    again = evaluate_model(model, tokenizer, records, max_new_tokens=6)
    assert first == again  # greedy decoding: the same report
    for result in first["modes"].values():
        assert sum(t["n"] for t in result["tasks"].values()) == 8
        # The calculator prompt (with its tools section) is longer than micro's 256 positions.
        assert result["context_exceeded"] == 1

    # The same evaluation on a generator of the model: every turn within its token limit.
    with LocalGenerator(Engine(TorchBackend(model), tokenizer), "micro") as generator:
        turns = []
        generate_turns = generator.generate

        def recording_generate(requests, *args, **kwargs):
            turns.extend(generate_turns(requests, *args, **kwargs))
            return turns[-len(requests) :]

        monkeypatch.setattr(generator, "generate", recording_generate)
        report, attempts = evaluate(records, generator, max_new_tokens=6, progress=False)
    assert report == first
    assert sum(isinstance(t, InvalidRequest) and t.field == "messages" for t in turns) == 2
    assert all(1 <= t.output_tokens <= 6 for t in turns if isinstance(t, Turn))
    assert all(len(a.transcript) >= 1 for a in attempts if not a.context_exceeded)

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
            "--backend",
            "torch",
            "--out",
            str(tmp_path / "eval.json"),
            "--details",
            str(details),
        ]
    )
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "eval.json").read_text())
    assert printed["examples"] == 4 and set(printed["modes"]) == {"thinking_off", "thinking_on"}
    assert printed["generator"]["chat_format"] == "charter"  # the checkpoint's own format
    lines = [json.loads(line) for line in details.read_text().splitlines()]
    assert len(lines) == 8
    assert {line["where"] for line in lines} == {r.where for r in list(read_sft([data]))[:4]}
