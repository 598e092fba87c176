"""Contrast pairs: declines preferred on harmful prompts, answers on benign ones, each side
checked by the refusal detector, split by the prompt's hash; and `charter cai contrast`."""

from __future__ import annotations

import json

from charter.align.contrast_pairs import RULE, contrast_pairs
from charter.commands import main
from charter.data.judge_data import HELDOUT, TRAIN, hash_split
from charter.data.preferences import read_preferences
from charter.eval.refusal import is_refusal

DECLINE = "I can't help with that, because it could hurt people. Instead, I can explain the law."
ANSWER = "Sure. Use the kill command with the process id."


def rows(n: int = 30):
    targets, replies = [], []
    for i in range(n):
        harmful = i % 2 == 0
        prompt = f"Request number {i}?"
        targets.append(
            {"prompt": prompt, "harmful": harmful, "final": DECLINE if harmful else ANSWER}
        )
        replies.append({"prompt": prompt, "response": ANSWER if harmful else DECLINE})
    return targets, replies


def test_harmful_prompts_prefer_the_decline_and_benign_ones_the_answer():
    targets, replies = rows()
    splits, dropped = contrast_pairs(targets, replies, is_refusal)
    assert dropped == {}
    pairs = splits[TRAIN] + splits[HELDOUT]
    assert len(pairs) == 30 and splits[TRAIN] and splits[HELDOUT]
    for row in pairs:
        harmful = row["source"] == "contrast-harmful"
        assert (row["chosen"], row["rejected"]) == (
            (DECLINE, ANSWER) if harmful else (ANSWER, DECLINE)
        )
        assert row["p_chosen"] == 1.0 and row["feedback_model"] == RULE
    assert all(hash_split(row["prompt"]) == HELDOUT for row in splits[HELDOUT])


def test_pairs_the_detector_does_not_see_as_labelled_are_left_out_and_counted():
    targets, replies = rows(6)
    targets[0]["final"] = ANSWER  # harmful, but the target complies
    replies[2]["response"] = DECLINE  # harmful, and the other reply declines too
    replies[1]["response"] = ANSWER  # benign, and the other reply answers too
    targets[3]["final"] = DECLINE  # benign, but the target declines
    del targets[4]["final"]
    replies.pop()  # prompt 5 has no other reply
    splits, dropped = contrast_pairs(targets, replies, is_refusal)
    assert splits[TRAIN] + splits[HELDOUT] == []
    assert dropped == {
        "target complies": 1,
        "other reply declines too": 1,
        "other reply answers too": 1,
        "target declines": 1,
        "no target": 1,
        "no other reply": 1,
    }


def test_the_command_writes_preference_files(tmp_path, capsys):
    targets, replies = rows()
    for name, data in (("targets", targets), ("replies", replies)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    files = ["--targets", tmp_path / "targets.jsonl", "--replies", tmp_path / "replies.jsonl"]
    main(["cai", "contrast", *map(str, files), "--out", str(tmp_path / "out")])
    train = read_preferences(tmp_path / "out" / "contrast-train.jsonl")
    heldout = read_preferences(tmp_path / "out" / "contrast-heldout.jsonl")
    assert len(train) + len(heldout) == 30
    assert f"{len(train)} train pairs" in capsys.readouterr().out
