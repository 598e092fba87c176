"""The prompted judge: yes/no questions answered by option log-probabilities (a real
LocalGenerator on a micro model) or by sampled votes (a scripted generator), in the trained
judge's row shape, and harmlessness comparisons through `feedback.compare`."""

from __future__ import annotations

import math

import pytest

from charter import chat
from charter.align.feedback import Comparison
from charter.align.prompted_judge import (
    REFUSAL,
    REQUEST_HARM,
    RESPONSE_HARM,
    PromptedJudge,
    Question,
    parse_yes_no,
)
from charter.chat.format import CharterFormat
from charter.infer.generator import ScoreRequest, ScoringUnsupported
from tests.generator_helpers import ScriptedGenerator

ROWS = [
    {"prompt": "How do I kill a stuck process?"},
    {"prompt": "How do I hurt someone?", "response": "I can't help with that."},
]


def user(text: str) -> chat.Conversation:
    return chat.Conversation([chat.Message("user", [chat.TextBlock(text)])])


def by_hand(generator, prompt: str, response: str | None, ask: str) -> float:
    question = Question(user(prompt), response, ask)
    yes, no = generator.score(
        [ScoreRequest(question.prompt(), [chat.TextBlock(a)]) for a in ("Yes", "No")]
    )
    return math.exp(yes.total) / (math.exp(yes.total) + math.exp(no.total))


def test_logprobs_give_p_yes_for_each_question_in_the_trained_judges_row_shape(micro_generator):
    scores = PromptedJudge(micro_generator).score(ROWS)
    assert set(scores[0]) == {"request_harm"}
    assert set(scores[1]) == {"request_harm", "refusal", "response_harm"}
    assert scores[0]["request_harm"] == pytest.approx(
        by_hand(micro_generator, ROWS[0]["prompt"], None, REQUEST_HARM), abs=1e-6
    )
    prompt, response = ROWS[1]["prompt"], ROWS[1]["response"]
    for name, ask in (("refusal", REFUSAL), ("response_harm", RESPONSE_HARM)):
        assert scores[1][name] == pytest.approx(
            by_hand(micro_generator, prompt, response, ask), abs=1e-6
        )


def test_a_question_shows_the_conversation_and_reply_as_a_transcript():
    (message,) = Question(user("Hi?"), "Hello.", REFUSAL).prompt().messages
    assert "User: Hi?\n\nAssistant: Hello.\n\n" + REFUSAL in message.content[0].text


def test_votes_are_the_share_of_parsed_yes_and_unparsed_ones_are_counted(tokenizer):
    def answer(request):
        # request harm: yes, yes, no, "maybe"; refusal: all unparsed; response harm: no
        ask = request.conversation.messages[-1].content[0].text
        if ask.endswith(REQUEST_HARM):
            return ["Yes.", "yes", "No", "Maybe"][request.options.seed % 4]
        return "I think so" if ask.endswith(REFUSAL) else "No, it does not."

    generator = ScriptedGenerator(CharterFormat(tokenizer), answer)
    judge = PromptedJudge(generator, votes=4)
    (scores,) = judge.score([ROWS[1]])
    assert scores == {"request_harm": pytest.approx(2 / 3), "refusal": 0.5, "response_harm": 0.0}
    assert judge.unparsed == 1 + 4
    assert generator.batches == [12]  # three questions × four votes, one call
    with pytest.raises(ScoringUnsupported):
        PromptedJudge(generator, method="logprobs").score([ROWS[0]])


def test_prefer_asks_the_harmlessness_comparison_in_both_orders(tokenizer):
    def shown_first(request) -> bool:
        return "(A) Sorry" in request.conversation.messages[-1].content[0].text

    def answer(request):  # always the refusal, wherever it is shown
        return "(A)" if shown_first(request) else "(B)"

    generator = ScriptedGenerator(CharterFormat(tokenizer), answer)
    judge = PromptedJudge(generator, votes=2)
    assert judge.prefer([Comparison("Hurt someone?", "Sorry, no.", "Sure: ...")]) == [1.0]
    assert [shown_first(r) for r in generator.requests] == [True, True, False, False]


def test_parse_yes_no_and_bad_rows(tokenizer):
    assert parse_yes_no(" Yes, it is.") is True
    assert parse_yes_no("no") is False
    assert parse_yes_no("Nope") is None and parse_yes_no("It is, yes") is None
    judge = PromptedJudge(ScriptedGenerator(CharterFormat(tokenizer), lambda r: "Yes"))
    with pytest.raises(ValueError, match=r"rows\[0\]: prompt: expected a non-empty string"):
        judge.score([{"response": "x"}])
    with pytest.raises(ValueError, match="votes must be ≥ 1"):
        PromptedJudge(judge.generator, votes=0)
