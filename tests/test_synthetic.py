"""Synthetic demonstrations: valid, checkable, disjoint between train and held-out, and both sides
of the thinking toggle."""

from __future__ import annotations

import json

import pytest

from charter.chat import TextBlock, ThinkingBlock, ToolResultBlock, ToolUseBlock, render
from charter.data.sft import record_from_dict
from charter.data.synthetic import (
    FALLBACK_GLOSSARY,
    TASKS,
    generate,
    split_glossary,
    wordnet_glossary,
)
from charter.tasks.checks import CHECKS, check
from charter.tasks.tools import calculate


def final_text(record) -> str:
    return "".join(
        b.text for b in record.conversation.messages[-1].content if isinstance(b, TextBlock)
    )


def user_texts(records) -> set[str]:
    return {
        b.text
        for r in records
        for m in r.conversation.messages
        if m.role == "user"
        for b in m.content
        if isinstance(b, TextBlock)
    }


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_every_demonstration_is_valid_and_passes_its_own_check(tokenizer, split):
    records = generate(split, 160, seed=1)
    assert {r.task for r in records} == set(TASKS)
    for record in records:
        assert check(record.task, record.answer, final_text(record)), record.to_json()
        # A wrong answer fails: the check really compares.
        assert not check(record.task, record.answer, "I do not know.")
        again = record_from_dict(json.loads(json.dumps(record.to_json())), "line")
        assert again.conversation == record.conversation and again.answer == record.answer
        assert any(render(record.conversation, tokenizer, thinking=False).loss_mask)


def test_train_and_held_out_prompts_are_disjoint():
    for task in TASKS.values():
        assert not set(map(str, task.templates["train"])) & set(map(str, task.templates["heldout"]))
    train, heldout = generate("train", 400, seed=0), generate("heldout", 400, seed=0)
    assert not user_texts(train) & user_texts(heldout)
    train_words = {r.answer for r in train if r.task == "definitions"}
    heldout_words = {r.answer for r in heldout if r.task == "definitions"}
    assert train_words and heldout_words and not train_words & heldout_words


def test_generation_is_seeded():
    first = [r.to_json() for r in generate("train", 24, seed=7)]
    assert first == [r.to_json() for r in generate("train", 24, seed=7)]
    assert first != [r.to_json() for r in generate("train", 24, seed=8)]


def test_thinking_fraction_sets_both_sides_of_the_toggle():
    def thinks(record) -> bool:
        blocks = [b for m in record.conversation.messages for b in m.content]
        return any(isinstance(b, ThinkingBlock) for b in blocks)

    assert all(thinks(r) for r in generate("train", 40, thinking_fraction=1.0))
    assert not any(thinks(r) for r in generate("train", 40, thinking_fraction=0.0))
    share = sum(map(thinks, generate("train", 400, thinking_fraction=0.5))) / 400
    assert 0.4 < share < 0.6


def test_arithmetic_thinking_shows_the_steps():
    record = generate("train", 1, seed=3, tasks=["arithmetic"], thinking_fraction=1.0)[0]
    thinking = record.conversation.messages[-1].content[0]
    assert isinstance(thinking, ThinkingBlock)
    assert thinking.thinking.count("=") >= 2  # at least two worked steps
    assert record.answer in thinking.thinking


def test_calculator_demonstrations_feed_the_real_result_back():
    for record in generate("heldout", 10, tasks=["calculator"]):
        user, call_turn, result_turn, answer_turn = record.conversation.messages
        call = next(b for b in call_turn.content if isinstance(b, ToolUseBlock))
        result = result_turn.content[0]
        assert isinstance(result, ToolResultBlock) and result.tool_use_id == call.id
        a, b = (int(x) for x in call.input["expression"].split(" * "))
        assert 100 <= a <= 999 and 100 <= b <= 999
        assert result.content == calculate(call.input["expression"]) == str(a * b) == record.answer
        assert [t.name for t in record.conversation.tools] == ["calculator"]


def test_calculate_is_exact_and_refuses_anything_but_arithmetic():
    assert calculate("347 * 829") == "287663"
    assert calculate("(1 + 2) / 4") == "0.75"
    assert calculate("-3 * (2 - 5)") == "9"
    assert calculate("12 x 3") == "36"
    for bad, message in [
        ("__import__('os')", "unsupported"),
        ("2 ** 1000", "unsupported"),
        ("1 / 0", "division by zero"),
        ("2 +", "not an arithmetic expression"),
    ]:
        with pytest.raises(ValueError, match=message):
            calculate(bad)


@pytest.mark.parametrize(
    "task, answer, response, expected",
    [
        ("arithmetic", "1234", "So the total is 1,234.", True),
        ("arithmetic", "1234", "1234 or maybe 1235", False),  # the last number counts
        ("format_word", "cold", '"Cold."', True),
        ("format_word", "cold", "It is cold.", False),
        ("format_list", "- a\n- b", "Here:\n- A\n- b", True),
        ("format_list", "- a\n- b", "- a\n- b\n- c", False),
        ("format_json", '{"name": "Ada", "age": 3}', '{"age": 3, "name": "Ada"}', True),
        ("format_json", '{"name": "Ada", "age": 3}', 'Sure: {"age": 3, "name": "Ada"}', False),
        ("multi_turn", "Oslo", "You live in oslo.", True),
        ("multi_turn", "Oslo", "You live in Oslofjord.", False),
        ("definitions", "a body of water", "Lake: a  body of water.", True),
    ],
)
def test_checks(task, answer, response, expected):
    assert check(task, answer, response) is expected


def test_wordnet_glossary_from_the_recipe_documents(tmp_path):
    common = " ".join(["water"] * 3 + ["stone"] * 3)
    lines = [
        "lake (noun): a body of water surrounded by land.",
        'stone, rock (noun): a lump of hard mineral matter. For example: "he threw a stone".',
        "Paris (noun): the capital of France.",  # a name, not a common word
        "quickly (adverb): with speed.",
        f"filler (noun): {common} everywhere here.",
    ]
    path = tmp_path / "wordnet.jsonl"
    path.write_text(json.dumps({"text": "\n".join(lines), "source": "wordnet"}) + "\n")
    assert wordnet_glossary(path, min_mentions=0) == [
        ("filler", f"{common} everywhere here"),
        ("lake", "a body of water surrounded by land"),
        ("stone", "a lump of hard mineral matter"),
    ]
    assert wordnet_glossary(path, min_mentions=3) == [("stone", "a lump of hard mineral matter")]
    held_out, train = (
        split_glossary(FALLBACK_GLOSSARY, "heldout"),
        split_glossary(FALLBACK_GLOSSARY, "train"),
    )
    assert held_out and train and sorted(held_out + train) == sorted(FALLBACK_GLOSSARY)


def test_unknown_task_and_split_are_errors():
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['poetry'\]"):
        generate("train", 1, tasks=["poetry"])
    with pytest.raises(ValueError, match="split must be one of"):
        generate("test", 1)


def test_every_synthetic_task_has_a_checker():
    assert set(TASKS) <= set(CHECKS)
    with pytest.raises(ValueError, match="unknown task 'poetry'; the checkable tasks are"):
        check("poetry", "a", "a")
