"""The benign QA set: well-formed records whose answers the checker accepts and rejects."""

from __future__ import annotations

import pytest

from charter.cli import main
from charter.data.sft import read_sft
from charter.data.synthetic import check
from charter.eval.benign_qa import QUESTIONS, TASK, benign_qa_records
from charter.eval.sft_tasks import evaluate


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
    answers = [r.answer if correct else "I am not sure." for r in records]
    report, _ = evaluate(
        records,
        tokenizer,
        lambda prompts, thinking: answers[: len(prompts)],
        context_length=4096,
        thinking_modes=(False,),
    )
    assert report["modes"]["thinking_off"]["tasks"][TASK]["accuracy"] == (1.0 if correct else 0)


def test_own_template_renders_as_the_checkpoint_template(tokenizer):
    from charter.eval.sft_tasks import template_renderer

    record = benign_qa_records()[0]
    prompt = template_renderer(tokenizer)(record.prompt(), False)
    messages = [{"role": "user", "content": QUESTIONS[0][0]}]
    assert prompt == tokenizer.encode(tokenizer.apply_chat_template(messages))
    with pytest.raises(ValueError, match="without thinking or tools"):
        template_renderer(tokenizer)(record.prompt(), True)
