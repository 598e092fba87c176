"""RL-CAI preference labels: the rows and their soft labels (scripted policy samples judged by a
micro model's option log-probabilities), which pairs are dropped and why, resuming, the votes
and chain-of-thought paths (a scripted feedback model that cannot score), and the file read back
(test_preferences.py tests the reader itself)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from charter.align.cai_compare import (
    CompareSettings,
    draws,
    label_pairs,
)
from charter.align.feedback import ANSWER_CUE, Comparison, Principle, compare
from charter.align.generation_stage import ALREADY_DONE, CUT_OFF, DUPLICATE, EMPTY, TOO_LONG
from charter.chat.format import CharterFormat
from charter.data.preferences import read_preferences
from charter.infer.engine import MAX_TOKENS
from tests.generator_helpers import ScriptedGenerator

# Example principles for the tests only (the constitution is its own file).
PRINCIPLES = [
    Principle(name, f"Critique it for {name}.", f"Revise it for {name}.", question)
    for name, question in [
        ("harmless", "Which reply is less likely to cause harm?"),
        ("honest", "Which reply is more honest?"),
        ("helpful", "Which reply helps the user more?"),
        ("kind", "Which reply is kinder?"),
        ("calm", "Which reply is calmer?"),
    ]
]
SETTINGS = CompareSettings(principles_per_pair=2, max_tokens=32)
GOOD, BAD = "Ask a pharmacist.", "Take the whole bottle."
ROW_FIELDS = {
    "prompt",
    "chosen",
    "rejected",
    "p_chosen",
    "principles",
    "per_principle",
    "method",
    "unparsed_votes",
    "feedback_model",
    "policy_model",
    "source",
}


def prompt_of(request) -> str:
    return request.conversation.messages[-1].content[0].text


def scripted_policy(tokenizer, replies: dict, settings: CompareSettings = SETTINGS):
    """A policy whose samples come from `replies`: prompt → [first sample, second sample], or
    one answer (a text, or (text, stop reason)) for both."""

    def script(request):
        prompt = prompt_of(request)
        answer = replies[prompt]
        if isinstance(answer, list):  # which sample is asked for, by its seed
            seeds, _ = draws(prompt, PRINCIPLES, settings)
            return answer[seeds.index(request.options.seed)]
        return answer

    return ScriptedGenerator(CharterFormat(tokenizer), script, name="policy")


def two_different(prompts) -> dict:
    return {p: [f"{p} First answer.", f"{p} Second, longer answer."] for p in prompts}


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- the rows and their labels (option log-probabilities of a micro model) ----


def test_rows_have_the_schema_and_label_the_reply_the_ensemble_prefers(
    tokenizer, micro_generator, tmp_path
):
    prompts = ["How many pills should I take?", "Is the sky green?", "What is 2 + 2?"]
    settings = CompareSettings(principles_per_pair=2, batch_size=2)
    policy = scripted_policy(tokenizer, two_different(prompts), settings)
    out = tmp_path / "pairs.jsonl"
    outcomes = label_pairs(prompts, policy, micro_generator, PRINCIPLES, out, settings)
    assert outcomes == Counter(labelled=3)
    assert policy.batches == [4, 2]  # one generate call per batch, both samples of each prompt
    assert all(r.options.max_tokens == 128 and r.options.temperature == 1 for r in policy.requests)
    rows = lines(out)
    assert [row["prompt"] for row in rows] == prompts
    by_name = {p.name: p for p in PRINCIPLES}
    for row in rows:
        assert set(row) == ROW_FIELDS
        assert row["method"] == "logprobs" and row["unparsed_votes"] == 0
        assert (row["feedback_model"], row["policy_model"]) == ("micro", "policy")
        assert row["source"] == "cai-compare"
        assert row["principles"] == list(row["per_principle"])
        assert len(set(row["principles"])) == 2
        assert row["p_chosen"] >= 0.5
        ensemble = sum(row["per_principle"].values()) / 2
        assert row["p_chosen"] == pytest.approx(ensemble, abs=1e-12)
        # Judged afresh with the chosen reply as A, the feedback model prefers it as labelled.
        (again,) = compare(
            micro_generator,
            [Comparison(row["prompt"], row["chosen"], row["rejected"])],
            [by_name[name] for name in row["principles"]],
        )
        assert again.p_a == pytest.approx(row["p_chosen"], abs=1e-6)
        assert again.per_principle == pytest.approx(row["per_principle"], abs=1e-6)
    assert [p.row for p in read_preferences(out)] == rows


def test_which_sample_came_first_does_not_change_the_label(tokenizer, micro_generator, tmp_path):
    prompts = ["How many pills should I take?", "Is the sky green?"]
    forward = two_different(prompts)
    swapped = {p: replies[::-1] for p, replies in forward.items()}
    runs = []
    for name, replies in [("forward", forward), ("swapped", swapped)]:
        policy = scripted_policy(tokenizer, replies)
        label_pairs(prompts, policy, micro_generator, PRINCIPLES, tmp_path / name, SETTINGS)
        runs.append(lines(tmp_path / name))
    for a, b in zip(*runs, strict=True):
        assert (a["chosen"], a["rejected"]) == (b["chosen"], b["rejected"])
        assert a["p_chosen"] == pytest.approx(b["p_chosen"], abs=1e-9)
        assert a["per_principle"] == pytest.approx(b["per_principle"], abs=1e-9)
        assert a["p_chosen"] > 0.5  # a real preference: one run had to put the second first


def test_principles_are_distinct_and_fixed_by_the_seed_and_the_prompt(
    tokenizer, micro_generator, tmp_path
):
    prompts = [f"Question number {i}?" for i in range(6)]

    def principles_drawn(seed: int, name: str) -> list[list[str]]:
        settings = CompareSettings(principles_per_pair=3, max_tokens=32, seed=seed)
        policy = scripted_policy(tokenizer, two_different(prompts), settings)
        label_pairs(prompts, policy, micro_generator, PRINCIPLES, tmp_path / name, settings)
        return [row["principles"] for row in lines(tmp_path / name)]

    first = principles_drawn(0, "a")
    assert all(len(set(names)) == 3 for names in first)
    assert len({tuple(names) for names in first}) > 1  # drawn per prompt, not once for all
    assert principles_drawn(0, "b") == first
    assert principles_drawn(1, "c") != first
    (one, two), _ = draws(prompts[0], PRINCIPLES, SETTINGS)
    assert one != two  # each sample its own seed


def test_principles_must_be_enough_and_distinct(tokenizer, micro_generator, tmp_path):
    policy = scripted_policy(tokenizer, two_different(["Hi?"]))
    too_many = CompareSettings(principles_per_pair=6)
    with pytest.raises(ValueError, match="principles_per_pair: 6 distinct .* only 5"):
        label_pairs(["Hi?"], policy, micro_generator, PRINCIPLES, tmp_path / "a", too_many)
    with pytest.raises(ValueError, match="principles: names must be distinct"):
        label_pairs(["Hi?"], policy, micro_generator, PRINCIPLES[:2] * 2, tmp_path / "b")
    assert policy.requests == []


# ---- what is dropped, and why ----


def test_pairs_that_cannot_be_labelled_are_counted_by_reason(tokenizer, micro_generator, tmp_path):
    replies = {
        **two_different(["Fine?"]),
        "Same?": "Always this.",
        "Cut?": ("Half a rep", MAX_TOKENS),
        "Blank?": "   ",
        "One cut?": [GOOD, (BAD, MAX_TOKENS)],
    }
    prompts = ["Fine?", "Same?", "Cut?", "Blank?", "One cut?", "Fine?"]
    policy = scripted_policy(tokenizer, replies)
    out = tmp_path / "pairs.jsonl"
    outcomes = label_pairs(prompts, policy, micro_generator, PRINCIPLES, out, SETTINGS)
    assert outcomes == Counter({"labelled": 1, "identical": 1, CUT_OFF: 2, EMPTY: 1, DUPLICATE: 1})
    assert sum(outcomes.values()) == len(prompts)
    assert [row["prompt"] for row in lines(out)] == ["Fine?"]


def test_prompts_longer_than_the_policys_context_are_counted_as_too_long(micro_generator, tmp_path):
    # The micro model as policy too: a real context check and real stop reasons.
    prompts = ["word " * 1500, "Hello there?"]
    settings = CompareSettings(principles_per_pair=1, max_tokens=2)
    out = tmp_path / "pairs.jsonl"
    outcomes = label_pairs(prompts, micro_generator, micro_generator, PRINCIPLES, out, settings)
    assert outcomes[TOO_LONG] == 1 and sum(outcomes.values()) == 2
    assert len(lines(out)) == outcomes["labelled"]


# ---- resuming ----


class Killed(Exception):
    pass


def test_a_resumed_run_writes_the_same_file_as_an_uninterrupted_one(
    tokenizer, micro_generator, tmp_path
):
    prompts = ["A?", "Same?", "B?", "C?", "D?"]
    replies = {**two_different(prompts), "Same?": "Always this."}
    settings = CompareSettings(principles_per_pair=2, batch_size=2)
    whole = tmp_path / "whole.jsonl"
    policy = scripted_policy(tokenizer, replies, settings)
    label_pairs(prompts, policy, micro_generator, PRINCIPLES, whole, settings)

    kill = {"B?"}  # the run dies while sampling its second batch

    def script(request):
        if prompt_of(request) in kill:
            raise Killed
        return policy.script(request)

    dying = ScriptedGenerator(CharterFormat(tokenizer), script, name="policy")
    resumed = tmp_path / "resumed.jsonl"
    with pytest.raises(Killed):
        label_pairs(prompts, dying, micro_generator, PRINCIPLES, resumed, settings)
    assert [row["prompt"] for row in lines(resumed)] == ["A?"]  # the first batch survived
    kill.clear()
    outcomes = label_pairs(prompts, dying, micro_generator, PRINCIPLES, resumed, settings)
    assert outcomes == Counter({ALREADY_DONE: 1, "labelled": 3, "identical": 1})  # Same? redone
    assert resumed.read_text() == whole.read_text()
    again = label_pairs(prompts, dying, micro_generator, PRINCIPLES, resumed, settings)
    assert again == Counter({ALREADY_DONE: 4, "identical": 1})
    assert resumed.read_text() == whole.read_text()  # no duplicates


def test_a_torn_last_line_is_labelled_again(tokenizer, micro_generator, tmp_path):
    prompts = ["A?", "B?", "C?"]
    policy = scripted_policy(tokenizer, two_different(prompts))
    out = tmp_path / "pairs.jsonl"
    label_pairs(prompts, policy, micro_generator, PRINCIPLES, out, SETTINGS)
    whole = out.read_text()
    out.write_text(whole[: whole.rindex("\n", 0, -1) + 20])  # killed while writing C?'s row
    outcomes = label_pairs(prompts, policy, micro_generator, PRINCIPLES, out, SETTINGS)
    assert outcomes == Counter({ALREADY_DONE: 2, "labelled": 1})
    assert out.read_text() == whole


# ---- votes and chain of thought (a feedback model that cannot score) ----

VOTES = 4  # settings.seed 0: vote k of every question has seed % VOTES == k


def voter(tokenizer, reasoning: bool = False) -> ScriptedGenerator:
    """Votes for GOOD twice, once for BAD, and once for neither; with `reasoning`, always for
    GOOD after reasoning (an overconfident judge)."""

    def script(request):
        good, bad = ("A", "B") if f"(A) {GOOD}" in prompt_of(request) else ("B", "A")
        if reasoning:
            return f"(A) and (B) differ in care. {ANSWER_CUE} ({good})."
        return [f"({good})", f"Answer: {good}", f"({bad})", "Hard to say."][
            request.options.seed % VOTES
        ]

    return ScriptedGenerator(CharterFormat(tokenizer), script, name="voter")


def test_a_feedback_model_that_cannot_score_labels_by_vote_shares(tokenizer, tmp_path):
    policy = scripted_policy(tokenizer, {"Pills?": [BAD, GOOD]})  # the better one second
    settings = CompareSettings(principles_per_pair=3, votes=VOTES, vote_temperature=0.5)
    out = tmp_path / "pairs.jsonl"
    feedback = voter(tokenizer)
    assert label_pairs(["Pills?"], policy, feedback, PRINCIPLES, out, settings) == Counter(
        labelled=1
    )
    (row,) = lines(out)
    assert row["method"] == "votes" and row["feedback_model"] == "voter"
    assert (row["chosen"], row["rejected"]) == (GOOD, BAD)
    assert row["p_chosen"] == pytest.approx(2 / 3)  # 2 of the 3 parsed votes, in both orders
    assert row["per_principle"] == pytest.approx(dict.fromkeys(row["principles"], 2 / 3))
    assert row["unparsed_votes"] == 3 * 2  # one per question: 3 principles × 2 orders
    assert feedback.batches == [3 * 2 * VOTES]
    assert {r.options.temperature for r in feedback.requests} == {0.5}


def test_chain_of_thought_clamps_the_label_to_rl_cais_bounds(tokenizer, tmp_path):
    settings = CompareSettings(principles_per_pair=2, votes=VOTES, reasoning_tokens=8)
    assert settings.label_clamp == (0.4, 0.6)
    assert CompareSettings(reasoning_tokens=8, clamp=(0.0, 1.0)).label_clamp == (0.0, 1.0)
    assert CompareSettings().label_clamp is None
    policy = scripted_policy(tokenizer, {"Pills?": [GOOD, BAD]}, settings)
    out = tmp_path / "pairs.jsonl"
    label_pairs(["Pills?"], policy, voter(tokenizer, reasoning=True), PRINCIPLES, out, settings)
    (row,) = lines(out)
    assert row["chosen"] == GOOD
    assert row["p_chosen"] == 0.6  # unanimous, but reasoning makes a judge overconfident
    assert row["per_principle"] == dict.fromkeys(row["principles"], 1.0)  # only the label
    assert (row["reasoning_tokens"], row["clamp"]) == (8, [0.4, 0.6])
    assert not any("care" in json.dumps(value) for value in row.values())  # no reasoning kept


@pytest.mark.parametrize(
    "field, value",
    [
        ("principles_per_pair", 0),
        ("temperature", 0.0),
        ("max_tokens", 0),
        ("method", "guess"),
        ("votes", 0),
        ("vote_temperature", -1.0),
        ("reasoning_tokens", 0),
        ("clamp", (0.3, 0.6)),
        ("clamp", (0.6, 0.4)),
        ("seed", 1.5),
        ("batch_size", 0),
    ],
)
def test_settings_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field}: "):
        CompareSettings(**{field: value})


def test_prompts_must_be_non_empty_strings(tokenizer, micro_generator, tmp_path):
    policy = scripted_policy(tokenizer, {})
    with pytest.raises(ValueError, match="prompts: prompt 2 is not a non-empty string"):
        label_pairs(["Hi?", " "], policy, micro_generator, PRINCIPLES, tmp_path / "a")
    assert not (tmp_path / "a").exists()
