"""Model-written replies for the judge: which requests are asked, resumable writing without
duplicates, and the rule-based labels (refusal patterns; compliance only for benign requests)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from charter.chat.format import CharterFormat
from charter.cli import main
from charter.data.judge_replies import (
    SOURCE,
    UNLABELLED,
    read_replies,
    requests_to_answer,
    write_replies,
)
from charter.infer.generator import TurnOptions
from tests.generator_helpers import ScriptedGenerator


def write_rows(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def requests_file(tmp_path):
    rows = [{"prompt": f"benign {i}", "request_harm": 0, "source": "a"} for i in range(6)]
    rows += [{"prompt": "harmful 0", "request_harm": 1, "source": "b"}]
    rows += [{"prompt": "answered", "response": "x", "response_harm": 0, "source": "a"}]
    rows += [{"prompt": "refusal only", "response": "No.", "refusal": 1, "source": "c"}]
    path = tmp_path / "train.jsonl"
    write_rows(path, rows)
    return path


def test_requests_are_unanswered_request_rows_at_most_n_per_source_spread_out(tmp_path):
    chosen = requests_to_answer(requests_file(tmp_path), per_source=3)
    assert [r["prompt"] for r in chosen] == ["benign 0", "benign 2", "benign 4", "harmful 0"]
    only_b = requests_to_answer(requests_file(tmp_path), per_source=3, sources={"b"})
    assert [r["prompt"] for r in only_b] == ["harmful 0"]


def test_an_interrupted_run_continues_without_writing_anything_twice(tmp_path, tokenizer):
    requests = requests_to_answer(requests_file(tmp_path), per_source=10)
    generator = ScriptedGenerator(CharterFormat(tokenizer), lambda r: "Sure: step one.")
    out = tmp_path / "replies.jsonl"
    options = TurnOptions(max_tokens=8, temperature=0.0)
    assert write_replies(generator, requests[:3], out, options, batch_size=2) == 3
    assert write_replies(generator, requests, out, options, batch_size=2) == 4  # the rest
    assert write_replies(generator, requests, out, options, batch_size=2) == 0
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in written] == [r["prompt"] for r in requests]
    assert written[0]["model"] == "scripted" and written[0]["response"] == "Sure: step one."
    assert generator.batches == [2, 1, 2, 2]


def test_labels_come_from_the_refusal_patterns_and_the_requests_harm(tmp_path):
    rows = [
        {"prompt": "p1", "response": "I can't help.", "request_harm": 1, "model": "m"},
        {"prompt": "p2", "response": "Here you go.", "request_harm": 0, "model": "m"},
        {"prompt": "p3", "response": "Here you go.", "request_harm": 1, "model": "m"},
        {"prompt": "p4", "response": "  ", "request_harm": 0, "model": "m"},
    ]
    path = tmp_path / "replies.jsonl"
    write_rows(path, rows)
    read = read_replies([path], lambda text: "can't" in text)
    labels = [(r.prompt, r.refusal, r.response_harm, r.source) for r in read.rows]
    assert labels == [("p1", 1, None, SOURCE), ("p2", 0, 0, SOURCE)]
    assert read.dropped == Counter({UNLABELLED: 1, "empty reply": 1})
    write_rows(path, [{"prompt": "p", "response": "r", "request_harm": 2, "model": "m"}])
    with pytest.raises(ValueError, match=r"replies\.jsonl:1: request_harm: expected 0 or 1"):
        read_replies([path], lambda text: False)


def test_judge_sources_reads_reply_files_after_every_other_source(tmp_path, monkeypatch):
    from charter.data import judge_data
    from tests.test_judge_data import eval_files, fixed, request

    xstest, labels = eval_files(tmp_path)
    monkeypatch.setattr(
        judge_data, "SOURCES", [fixed("chats", "train", [request("Hi", "chats", 0)])]
    )
    replies = tmp_path / "replies.jsonl"
    write_rows(replies, [{"prompt": "Hi", "response": "Hello!", "request_harm": 0, "model": "m"}])
    main(["data", "judge-sources", "--cache", str(tmp_path / "cache"), "--out",
          str(tmp_path / "judge"), "--xstest", str(xstest), "--refusal-labels", str(labels),
          "--replies", str(replies)])  # fmt: skip
    written = [json.loads(x) for x in (tmp_path / "judge/train.jsonl").read_text().splitlines()]
    assert [(r["source"], r.get("refusal")) for r in written] == [("chats", None), (SOURCE, 0)]
