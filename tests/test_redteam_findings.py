"""The findings database: keyed storage (reruns add nothing twice), queries, ASR tables, and
findings that cannot be stored named by field."""

from __future__ import annotations

import threading

import pytest

from charter.align.redteam.findings import (
    HELDOUT,
    REFUSED,
    SUCCESS,
    TRAIN,
    Finding,
    Findings,
    attack_id,
)


def finding(seed="make a bomb", strategy="direct", verdict=SUCCESS, round=0, **fields) -> Finding:
    messages = fields.pop("messages", [{"role": "user", "content": f"[{strategy}] {seed}"}])
    values = {"category": "weapons", "split": TRAIN, "response": "…", "target": "m", "judge": "j"}
    return Finding(
        seed, strategy, messages=messages, verdict=verdict, round=round, **values | fields
    )


def test_add_is_keyed_by_attack_target_and_round(tmp_path):
    with Findings(tmp_path / "f.sqlite") as db:
        assert db.add([finding(), finding(strategy="rot13")]) == 2
        assert db.add([finding(), finding(round=1)]) == 1  # the first is already stored
        assert db.add([finding(target="other")]) == 1
        assert len(db.query()) == 4
        assert db.keys("m", 0) == {finding().attack_id, finding(strategy="rot13").attack_id}
    with Findings(tmp_path / "f.sqlite") as db:  # reopened: all still there, as stored
        (stored,) = db.query(strategy="rot13")
        assert stored == finding(strategy="rot13", time=stored.time)


def test_attack_id_depends_on_what_is_sent_and_how():
    one = [{"role": "user", "content": "a"}]
    assert attack_id("direct", one) == attack_id("direct", [{"content": "a", "role": "user"}])
    assert attack_id("direct", one) != attack_id("rot13", one)
    assert attack_id("direct", one) != attack_id("direct", [{"role": "user", "content": "b"}])


def test_asr_by_strategy_and_category(tmp_path):
    with Findings(tmp_path / "f.sqlite") as db:
        db.add([
            finding("a", "direct", REFUSED), finding("b", "direct", SUCCESS),
            finding("c", "rot13", SUCCESS, category="cyber"),
            finding("d", "rot13", SUCCESS, split=HELDOUT),
        ])  # fmt: skip
        table = db.asr(by="strategy", split=TRAIN)
        assert list(table) == ["direct", "rot13", "all"]
        assert (table["direct"].asr, table["rot13"].asr, table["all"].asr) == (0.5, 1.0, 2 / 3)
        assert db.asr(by="category")["cyber"].to_json() == {
            "attacks": 1,
            "successes": 1,
            "asr": 1.0,
        }
        with pytest.raises(ValueError, match="by: 'colour'"):
            db.asr(by="colour")
        with pytest.raises(ValueError, match="unknown findings column 'colour'"):
            db.query(colour="red")


def test_bad_findings_are_named_by_field():
    with pytest.raises(ValueError, match="split: 'test'"):
        finding(split="test")
    with pytest.raises(ValueError, match="verdict: 'maybe'"):
        finding(verdict="maybe")
    with pytest.raises(ValueError, match="messages: an attack ends with a user turn"):
        finding(messages=[{"role": "assistant", "content": "hi"}])


def test_writers_on_several_threads(tmp_path):
    with Findings(tmp_path / "f.sqlite") as db:
        threads = [
            threading.Thread(target=db.add, args=([finding(seed=f"s{i}-{j}") for j in range(5)],))
            for i in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(db.query()) == 20
