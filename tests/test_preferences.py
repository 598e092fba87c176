"""Preference files: the shared schema of human and AI pairs (prompt or messages), its errors,
and HH-RLHF's comparisons turned into it on the judge's split."""

from __future__ import annotations

import gzip
import json

import pytest

from charter.data.judge_data import HELDOUT, TRAIN, hash_split
from charter.data.preferences import hh_preferences, read_preferences, write_hh_preferences

GOOD_ROW = {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go.", "p_chosen": 0.7}
GOOD_ROW["feedback_model"] = "micro"


def test_reads_human_and_ai_pairs_keeping_every_key(tmp_path):
    path = tmp_path / "prefs.jsonl"
    human = {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away.", "p_chosen": 1}
    human |= {"feedback_model": "human", "source": "hh-rlhf"}
    ai = human | {"p_chosen": 0.75, "principles": ["kind"], "feedback_model": "micro"}
    del ai["source"]
    path.write_text(f"{json.dumps(human)}\n\n{json.dumps(ai)}\n")
    first, second = read_preferences(path)
    assert [first.row, second.row] == [human, ai]
    assert (first.chosen, first.rejected, first.p_chosen) == ("Hello!", "Go away.", 1.0)
    assert first.source == "hh-rlhf" and second.source == str(path)
    assert first.where == f"{path}:1" and second.where == f"{path}:3"
    assert first.context.messages[0].content[0].text == "Hi?"


def test_a_messages_context_is_a_conversation_ending_with_a_user_turn(tmp_path):
    path = tmp_path / "prefs.jsonl"
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "How do I pick a lock?"},
    ]
    row = {k: v for k, v in GOOD_ROW.items() if k != "prompt"} | {"messages": messages}
    path.write_text(json.dumps(row | {"system": "Be kind."}) + "\n")
    (pair,) = read_preferences(path)
    assert [m.role for m in pair.context.messages] == ["user", "assistant", "user"]
    assert pair.context.system == "Be kind."
    path.write_text(json.dumps(row | {"messages": messages[:2]}) + "\n")
    with pytest.raises(ValueError, match=f"^{path}:1: messages: .*end with a user message"):
        read_preferences(path)


@pytest.mark.parametrize(
    "change, field",
    [
        ({"prompt": None}, "prompt"),
        ({"chosen": "  "}, "chosen"),
        ({"rejected": 3}, "rejected"),
        ({"p_chosen": 1.5}, "p_chosen"),
        ({"p_chosen": "0.7"}, "p_chosen"),
        ({"p_chosen": True}, "p_chosen"),
        ({"feedback_model": None}, "feedback_model"),
        ({"principles": "kind"}, "principles"),
        ({"source": 3}, "source"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path, change, field):
    path = tmp_path / "prefs.jsonl"
    path.write_text(f"{json.dumps(GOOD_ROW)}\n{json.dumps(GOOD_ROW | change)}\n")
    with pytest.raises(ValueError, match=f"^{path}:2: {field}: "):
        read_preferences(path)


def test_a_row_needs_exactly_one_of_prompt_and_messages(tmp_path):
    path = tmp_path / "prefs.jsonl"
    for row in ({k: v for k, v in GOOD_ROW.items() if k != "prompt"}, GOOD_ROW | {"messages": []}):
        path.write_text(json.dumps(row) + "\n")
        with pytest.raises(ValueError, match=f"^{path}:1: give exactly one of prompt and messages"):
            read_preferences(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match=f"^{path}:1: expected a JSON object"):
        read_preferences(path)


def _transcript(*turns: str) -> str:
    return "".join(
        f"\n\n{speaker}: {text}" for speaker, text in zip(["Human", "Assistant"] * 9, turns)
    )


def test_hh_comparisons_become_preference_rows_on_the_judges_split(tmp_path):
    lines = [
        {
            "chosen": _transcript(f"Question {i}?", "A kind answer."),
            "rejected": _transcript(f"Question {i}?", "A cruel answer."),
        }
        for i in range(40)
    ]
    lines.append({"chosen": _transcript("Q?", "Same."), "rejected": _transcript("Q?", "Same.")})
    lines.append({"chosen": _transcript("Q?", "A."), "rejected": _transcript("Other?", "B.")})
    lines.append(
        {
            "chosen": _transcript("Q?", "A.", "More?", "Yes."),
            "rejected": _transcript("Q?", "A.", "More?", "No."),
        }
    )
    source = tmp_path / "hh.jsonl.gz"
    with gzip.open(source, "wt") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    splits, dropped = hh_preferences(source)
    assert dropped == {"identical replies": 1, "transcripts differ before the final reply": 1}
    rows = splits[TRAIN] + splits[HELDOUT]
    assert len(rows) == 41 and splits[TRAIN] and splits[HELDOUT]
    for row in splits[HELDOUT]:
        assert hash_split(f"{row['prompt']}") == HELDOUT
    multi = next(r for r in rows if "messages" in r)
    assert [m["role"] for m in multi["messages"]] == ["user", "assistant", "user"]
    assert (multi["chosen"], multi["rejected"]) == ("Yes.", "No.")
    report = write_hh_preferences(source, tmp_path / "out")
    assert report["pairs"] == {TRAIN: len(splits[TRAIN]), HELDOUT: len(splits[HELDOUT])}
    back = read_preferences(tmp_path / "out" / "hh-heldout.jsonl")
    assert [p.row for p in back] == splits[HELDOUT]
    assert all(p.p_chosen == 1.0 and p.row["feedback_model"] == "human" for p in back)
