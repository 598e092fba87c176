"""The benign QA set: well-formed records whose answers the checker accepts and rejects."""

from __future__ import annotations

import pytest

from charter.chat.format import CharterFormat
from charter.cli import main
from charter.data.sft import read_sft
from charter.eval.benign_qa import QUESTIONS, TASK, benign_qa_records
from charter.eval.sft_tasks import evaluate
from charter.infer.engine import Engine
from charter.infer.generator import InvalidRequest, TurnOptions, TurnRequest
from charter.infer.local import LocalGenerator
from charter.infer.torch_backend import TorchBackend
from charter.tasks.checks import check
from charter.tokenizer import Tokenizer
from tests.generator_helpers import ScriptedGenerator

# A ChatML template without Charter's think blocks, as imported instruct models carry.
PLAIN_CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_records_round_trip_through_sft_jsonl(tmp_path, capsys):
    main(["data", "benign-qa", "--out", str(tmp_path / "qa.jsonl")])
    assert capsys.readouterr().out.startswith(f"{len(QUESTIONS)} benign questions")
    records = list(read_sft([tmp_path / "qa.jsonl"]))
    assert [(r.task, r.answer) for r in records] == [(TASK, a) for _, a in QUESTIONS]
    assert len({q for q, _ in QUESTIONS}) == len(QUESTIONS)  # no question twice


def test_checker_wants_the_answer_in_the_response():
    assert check(TASK, "Paris", "The capital of France is paris.")
    assert not check(TASK, "Paris", "It is Lyon.")


@pytest.mark.parametrize("correct", [True, False])
def test_evaluation_scores_scripted_answers(tokenizer, correct):
    records = benign_qa_records()[:5]
    answers = {r.prompt().messages[-1].content[0].text: r.answer for r in records}

    def answer(request):
        question = request.conversation.messages[-1].content[0].text
        return answers[question] if correct else "I am not sure."

    generator = ScriptedGenerator(CharterFormat(tokenizer), answer)
    report, _ = evaluate(records, generator, thinking_modes=(False,), progress=False)
    assert report["modes"]["thinking_off"]["tasks"][TASK]["accuracy"] == (1.0 if correct else 0)
    assert len(generator.requests) == len(records)


def test_an_imported_model_is_asked_in_its_own_template(tokenizer, micro_model):
    own = Tokenizer(tokenizer.backend, {**tokenizer.config, "chat_template": PLAIN_CHATML})
    record = benign_qa_records()[0]
    request = TurnRequest(record.prompt(), TurnOptions(max_tokens=4, temperature=0))
    with LocalGenerator(Engine(TorchBackend(micro_model, max_len=256), own), "own") as generator:
        prompt = generator.prompt_ids(request)
        messages = [{"role": "user", "content": QUESTIONS[0][0]}]
        assert prompt == own.encode(own.apply_chat_template(messages))
        with pytest.raises(InvalidRequest, match="thinking: .*no thinking block"):
            generator.prompt_ids(TurnRequest(record.prompt(), TurnOptions(thinking_budget=4)))
