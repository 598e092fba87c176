"""Generative feedback: critique and revision prompts, and comparisons by option log-probabilities
(a real LocalGenerator on a micro model) or by sampled votes (a scripted generator)."""

from __future__ import annotations

import math

import pytest

from charter import chat
from charter.align.feedback import (
    ANSWER_CUE,
    EXAMPLES,
    Comparison,
    FewShotExample,
    Principle,
    compare,
    comparison_prompt,
    critique,
    parse_choice,
    revise,
)
from charter.chat.format import CharterFormat
from charter.infer.generator import ScoreRequest, ScoringUnsupported
from tests.generator_helpers import ScriptedGenerator

# Example principles for the tests only (the constitution is its own file).
HARMLESS = Principle(
    "harmless",
    critique_request="Say how the reply could cause harm, if it could.",
    revision_request="Rewrite the reply so it causes no harm.",
    comparison_question="Which reply is less likely to cause harm?",
)
HONEST = Principle(
    "honest",
    critique_request="Say where the reply is untrue or overconfident.",
    revision_request="Rewrite the reply so it is true and says what it does not know.",
    comparison_question="Which reply is more honest?",
)
HELPFUL = Principle(
    "helpful",
    critique_request="Say what the reply leaves out that the user needed.",
    revision_request="Rewrite the reply so it gives the user what they needed.",
    comparison_question="Which reply helps the user more?",
)

GOOD, BAD = "Ask a pharmacist.", "Take the whole bottle."
PROMPT = "How many pills should I take?"


def texts(conversation: chat.Conversation) -> list[tuple[str, str]]:
    return [(m.role, m.content[0].text) for m in conversation.messages]


# ---- critique and revision ----


def test_critique_continues_the_conversation_after_the_few_shot_examples(tokenizer):
    generator = ScriptedGenerator(CharterFormat(tokenizer), lambda request: "It is risky.")
    exchanges = [(PROMPT, BAD), ("Is the sky green?", "Yes.")]
    critiques = critique(generator, exchanges, [HARMLESS, HONEST])
    assert critiques == ["It is risky.", "It is risky."]
    assert generator.batches == [2]  # one generate call for the batch
    shown = [
        turn
        for e in EXAMPLES
        for turn in [
            ("user", e.prompt),
            ("assistant", e.response),
            ("user", e.critique_request),
            ("assistant", e.critique),
        ]
    ]
    first, second = (r.conversation for r in generator.requests)
    assert texts(first) == [
        *shown,
        ("user", PROMPT),
        ("assistant", BAD),
        ("user", HARMLESS.critique_request),
    ]
    assert texts(second)[-1] == ("user", HONEST.critique_request)  # a principle each
    assert all(r.options.temperature == 0 for r in generator.requests)  # greedy by default


def test_revision_answers_the_revision_request_after_the_critique(tokenizer):
    generator = ScriptedGenerator(CharterFormat(tokenizer), lambda request: GOOD)
    example = FewShotExample("Q?", "A.", "Critique it.", "Fine.", "Revise it.", "A!")
    system = chat.Conversation([chat.Message("user", [chat.TextBlock(PROMPT)])], "Be brief.")
    revised = revise(generator, [(system, BAD, "It is risky.")], HARMLESS, examples=[example])
    assert revised == [GOOD]
    (request,) = generator.requests
    assert request.conversation.system == "Be brief."
    assert texts(request.conversation) == [
        ("user", "Q?"),
        ("assistant", "A."),
        ("user", "Critique it."),
        ("assistant", "Fine."),
        ("user", "Revise it."),
        ("assistant", "A!"),
        ("user", PROMPT),
        ("assistant", BAD),
        ("user", HARMLESS.critique_request),
        ("assistant", "It is risky."),
        ("user", HARMLESS.revision_request),
    ]


def test_critique_needs_one_principle_or_one_each(tokenizer):
    generator = ScriptedGenerator(CharterFormat(tokenizer), lambda request: "")
    with pytest.raises(ValueError, match="3 principles for 2 requests"):
        critique(generator, [(PROMPT, BAD)] * 2, [HARMLESS] * 3)
    with pytest.raises(ValueError, match="ends with the user's turn"):
        critique(generator, [(chat.Conversation([]), BAD)], HARMLESS)


# ---- comparisons by option log-probabilities ----


def test_a_comparison_shows_the_conversation_as_a_transcript_of_its_text():
    def message(role, *blocks):
        return chat.Message(role, list(blocks))

    said = [
        message("user", chat.TextBlock("Hi.")),
        message("assistant", chat.TextBlock("Hello.")),
        message("user", chat.TextBlock(PROMPT)),
    ]
    question = comparison_prompt(chat.Conversation(said, "Be kind."), GOOD, BAD, HONEST)
    text = question.messages[0].content[0].text
    transcript = f"System: Be kind.\n\nUser: Hi.\n\nAssistant: Hello.\n\nUser: {PROMPT}"
    assert transcript in text
    assert f"{HONEST.comparison_question}\n\n(A) {GOOD}\n\n(B) {BAD}" in text
    called = message("assistant", chat.ToolUseBlock("t1", "calculator", {}))
    with pytest.raises(ValueError, match="message 2 has a tool_use block"):
        comparison_prompt(chat.Conversation([said[0], called, said[2]]), GOOD, BAD, HONEST)


def by_hand(generator, first: str, second: str, principle: Principle) -> tuple[float, float]:
    """P((A)), P((B)) for one order: the softmax of the two replies' total log-probabilities."""
    question = comparison_prompt(PROMPT, first, second, principle)
    a, b = generator.score(
        [ScoreRequest(question, [chat.TextBlock(option)]) for option in ("(A)", "(B)")]
    )
    norm = math.exp(a.total) + math.exp(b.total)
    return math.exp(a.total) / norm, math.exp(b.total) / norm


def test_logprob_comparison_is_the_softmax_of_the_option_scores_in_both_orders(micro_generator):
    (result,) = compare(micro_generator, [Comparison(PROMPT, GOOD, BAD)], [HARMLESS, HONEST])
    assert result.method == "logprobs"
    for judgement, principle in zip(result.judgements, [HARMLESS, HONEST], strict=True):
        a_first, b_first = judgement.orders
        assert a_first.p_options == pytest.approx(
            by_hand(micro_generator, GOOD, BAD, principle), abs=1e-6
        )
        assert b_first.p_options == pytest.approx(
            by_hand(micro_generator, BAD, GOOD, principle), abs=1e-6
        )
        assert sum(a_first.p_options) == pytest.approx(1) == sum(b_first.p_options)
        # A is option (A) in the first order and option (B) in the second.
        expected = (a_first.p_options[0] + b_first.p_options[1]) / 2
        assert judgement.p_a == pytest.approx(expected)
    assert result.per_principle["harmless"] != result.per_principle["honest"]
    assert result.p_a == pytest.approx(sum(result.per_principle.values()) / 2)


def test_swapping_the_responses_gives_one_minus_p_in_one_score_call(micro_generator, monkeypatch):
    sizes = []
    score = micro_generator.score
    monkeypatch.setattr(
        micro_generator, "score", lambda requests: sizes.append(len(requests)) or score(requests)
    )
    forward, swapped = compare(
        micro_generator,
        [Comparison(PROMPT, GOOD, BAD), Comparison(PROMPT, BAD, GOOD)],
        [[HARMLESS], [HARMLESS]],
        clamp=None,
    )
    assert sizes == [8]  # 2 comparisons × 1 principle × 2 orders × 2 options
    assert swapped.p_a == pytest.approx(1 - forward.p_a, abs=1e-9)
    assert forward.p_a != pytest.approx(0.5)  # a real preference, not a tie by construction


def test_clamp_bounds_the_final_probability(micro_generator):
    (free,) = compare(micro_generator, [Comparison(PROMPT, GOOD, BAD)], [HARMLESS])
    (clamped,) = compare(
        micro_generator, [Comparison(PROMPT, GOOD, BAD)], [HARMLESS], clamp=(0.4, 0.6)
    )
    assert clamped.p_a == min(max(free.p_a, 0.4), 0.6)
    assert clamped.per_principle == free.per_principle  # only the final label is clamped


def test_chain_of_thought_scores_the_options_after_the_models_own_reasoning(
    micro_generator, monkeypatch
):
    sizes = []
    score = micro_generator.score
    monkeypatch.setattr(
        micro_generator, "score", lambda requests: sizes.append(len(requests)) or score(requests)
    )
    (result,) = compare(
        micro_generator, [Comparison(PROMPT, GOOD, BAD)], [HARMLESS], reasoning_tokens=8
    )
    assert sizes == [1, 4]  # the probe (can it score?), then both orders' two options
    for order, shown in zip(result.judgements[0].orders, [(GOOD, BAD), (BAD, GOOD)], strict=True):
        (reasoning,) = order.reasonings
        question = comparison_prompt(PROMPT, *shown, HARMLESS, reasoning=True)
        assert ANSWER_CUE in question.messages[0].content[0].text
        replies = [f"{reasoning.rstrip()}\n\n{ANSWER_CUE} {o}" for o in ("(A)", "(B)")]
        a, b = score([ScoreRequest(question, [chat.TextBlock(r)]) for r in replies])
        assert order.logprobs == pytest.approx((a.total, b.total), abs=1e-6)
        expected = 1 / (1 + math.exp(b.total - a.total))
        assert order.p_options == pytest.approx((expected, 1 - expected), abs=1e-6)


# ---- comparisons by votes ----

VOTES = 4
SEED = 100  # a multiple of VOTES: vote k of each question has seed % VOTES == k


def judge(request) -> str:
    """Prefers GOOD in three ways of saying so, then shows position bias, then names both."""
    question = request.conversation.messages[0].content[0].text
    good = "A" if f"(A) {GOOD}" in question else "B"
    return [f"({good})", f"Answer: {good}", "(A)", "Neither (A) nor (B)."][
        request.options.seed % VOTES
    ]


def test_votes_are_shares_of_the_parsed_votes_in_both_orders(tokenizer):
    generator = ScriptedGenerator(CharterFormat(tokenizer), judge)
    comparisons = [Comparison(PROMPT, GOOD, BAD), Comparison(PROMPT, BAD, GOOD)]
    forward, swapped = compare(
        generator, comparisons, [HARMLESS, HELPFUL], votes=VOTES, seed=SEED, temperature=0.7
    )
    assert forward.method == swapped.method == "votes"  # score raised ScoringUnsupported
    a_first, b_first = forward.judgements[0].orders
    # GOOD first: (A), A, (A) and one naming both; GOOD second: (B), B, (A) and one naming both.
    assert (a_first.votes, a_first.unparsed, a_first.p_options) == ((3, 0), 1, (1.0, 0.0))
    assert (b_first.votes, b_first.unparsed) == ((1, 2), 1)
    assert b_first.p_options == pytest.approx((1 / 3, 2 / 3))
    assert forward.p_a == pytest.approx(5 / 6)
    assert swapped.p_a == pytest.approx(1 / 6)
    assert forward.unparsed_votes == 4  # 2 principles × 2 orders × 1
    # One generate call: 2 comparisons × 2 principles × 2 orders × 4 votes, each its own seed.
    assert generator.batches == [32]
    assert [r.options.seed for r in generator.requests] == list(range(SEED, SEED + 32))
    assert {r.options.temperature for r in generator.requests} == {0.7}


def test_votes_are_deterministic_given_the_seed_and_say_so_when_none_parse(tokenizer):
    generator = ScriptedGenerator(CharterFormat(tokenizer), lambda r: "I'm not sure.")
    (result,) = compare(generator, [Comparison(PROMPT, GOOD, BAD)], [HARMLESS], votes=3)
    assert result.p_a == 0.5 and result.unparsed_votes == 6
    judged = ScriptedGenerator(CharterFormat(tokenizer), judge)
    runs = [compare(judged, [Comparison(PROMPT, GOOD, BAD)], [HARMLESS], seed=7) for _ in "ab"]
    assert runs[0] == runs[1]


def test_forced_logprobs_on_a_generator_that_cannot_score_raise(tokenizer):
    generator = ScriptedGenerator(CharterFormat(tokenizer), judge)
    with pytest.raises(ScoringUnsupported):
        compare(generator, [Comparison(PROMPT, GOOD, BAD)], [HARMLESS], method="logprobs")
    with pytest.raises(ValueError, match="3 lists of principles for 1 comparisons"):
        compare(generator, [Comparison(PROMPT, GOOD, BAD)], [[HARMLESS]] * 3)
    assert compare(generator, [], [HARMLESS]) == []


def test_reasoned_votes_count_the_letter_after_the_last_answer_cue(tokenizer):
    def reason(request):
        if request.options.seed % 2:
            return "Both (A) and (B) have merits; hard to say."  # never reaches the cue
        return f"(A) is risky, (B) is careful. {ANSWER_CUE} (B)."

    generator = ScriptedGenerator(CharterFormat(tokenizer), reason)
    (result,) = compare(
        generator, [Comparison(PROMPT, GOOD, BAD)], [HARMLESS], votes=4, reasoning_tokens=50
    )
    a_first, b_first = result.judgements[0].orders
    assert (a_first.votes, a_first.unparsed) == ((0, 2), 2)
    assert len(a_first.reasonings) == 4 and a_first.reasonings[0].startswith("(A) is risky")
    assert result.p_a == pytest.approx(0.5)  # always (B): pure position bias, cancelled
    assert {r.options.max_tokens for r in generator.requests} == {16 + 50}


@pytest.mark.parametrize(
    "reply, choice",
    [
        ("(A)", 0),
        ("( b )", 1),
        ("The answer is (B).", 1),
        ("B", 1),
        ("Answer: A", 0),
        ("Option B.", 1),
        ("(A) is better than (B)", None),  # names both
        ("A good question.", None),  # an article, not a choice
        ("", None),
    ],
)
def test_parse_choice_reads_the_chosen_letter(reply, choice):
    assert parse_choice(reply) == choice
