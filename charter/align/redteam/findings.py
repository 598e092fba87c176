"""The red-team findings database: one SQLite file holding every attack sent to a model, its
reply, and the verdict on it, from automated rounds and from people (the server's /redteam page).

    findings = Findings("runs/redteam/findings.sqlite")
    findings.add([Finding(...), ...])        # one transaction; a finding already there is kept
    findings.asr(round=2, split="heldout", by="strategy")
    → {"role_play": Rate(attacks=40, successes=3), ...}

A finding is keyed by (attack_id, target, round): an interrupted round that runs again skips
what it already has, and nothing is stored twice. `attack_id` is a hash of the strategy and the
attack's messages, so the same attack on another model or in another round is the same id.
Attack success rate (ASR) is successes over attacks: a success is a reply that delivered harmful
help (`verdict == SUCCESS`), judged by the trained judge or by a person.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from charter.files import open_sqlite

TRAIN, HELDOUT, HUMAN = "train", "heldout", "human"  # where an attack's seed came from
SPLITS = (TRAIN, HELDOUT, HUMAN)
SUCCESS, REFUSED, SAFE = "success", "refused", "safe"  # harmful help · declined · answered safely
VERDICTS = (SUCCESS, REFUSED, SAFE)
GROUPINGS = ("strategy", "category", "round", "target", "split")


def attack_id(strategy: str, messages: list[dict[str, Any]]) -> str:
    """A stable id of an attack: what is sent, and how it was made."""
    text = json.dumps([strategy, messages], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Finding:
    seed: str  # the harmful request the attack was made from
    strategy: str
    category: str  # the seed's category (the judge's categories), "unknown" when not known
    split: str  # one of SPLITS
    messages: list[dict[str, Any]]  # the attack as sent: Messages-API user/assistant turns
    response: str  # the target's reply to the last turn
    verdict: str  # one of VERDICTS
    round: int
    target: str  # the attacked model's name (a guarded model's name says so)
    judge: str  # who gave the verdict: a judge checkpoint's name, or "human"
    refusal: float | None = None  # the judge's probabilities, when a judge gave the verdict
    response_harm: float | None = None
    source: str = ""  # where the seed came from (file:line)
    stop_reason: str = ""
    time: str = ""
    attack_id: str = ""

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"split: {self.split!r} is not one of {', '.join(SPLITS)}")
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict: {self.verdict!r} is not one of {', '.join(VERDICTS)}")
        if not self.messages or self.messages[-1].get("role") != "user":
            raise ValueError("messages: an attack ends with a user turn")
        self.attack_id = self.attack_id or attack_id(self.strategy, self.messages)
        self.time = self.time or now()

    @property
    def attack_text(self) -> str:
        """The attack's last user turn (all of a single-turn attack)."""
        content = self.messages[-1]["content"]
        if isinstance(content, str):
            return content
        return "\n\n".join(block.get("text", "") for block in content)


@dataclass(frozen=True)
class Rate:
    attacks: int
    successes: int

    @property
    def asr(self) -> float:
        return self.successes / self.attacks if self.attacks else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"attacks": self.attacks, "successes": self.successes, "asr": round(self.asr, 4)}


_COLUMNS = [f.name for f in fields(Finding)]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS findings (
    attack_id TEXT NOT NULL, target TEXT NOT NULL, round INTEGER NOT NULL,
    seed TEXT NOT NULL, strategy TEXT NOT NULL, category TEXT NOT NULL, split TEXT NOT NULL,
    messages TEXT NOT NULL, response TEXT NOT NULL, verdict TEXT NOT NULL, judge TEXT NOT NULL,
    refusal REAL, response_harm REAL, source TEXT NOT NULL, stop_reason TEXT NOT NULL,
    time TEXT NOT NULL,
    PRIMARY KEY (attack_id, target, round)
)"""


class Findings:
    """The database at `path` (created with its table when new). Usable from several threads
    (the server's request handlers): each call is one transaction on a shared connection."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = open_sqlite(self.path, _SCHEMA)

    def add(self, findings: Iterable[Finding]) -> int:
        """Store findings in one transaction (a crash keeps all or none of them); one already
        stored under its key is kept as it was. Returns how many were new."""
        rows = [self._row(f) for f in findings]
        placeholders = ", ".join("?" for _ in _COLUMNS)
        with self._db:
            before = self._db.total_changes
            self._db.executemany(
                f"INSERT OR IGNORE INTO findings ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
                rows,
            )
            return self._db.total_changes - before

    def keys(self, target: str, round: int) -> set[str]:
        """The attack ids already stored for this target and round (what a rerun skips)."""
        query = "SELECT attack_id FROM findings WHERE target = ? AND round = ?"
        return {row[0] for row in self._db.execute(query, (target, round))}

    def query(self, **where: Any) -> list[Finding]:
        """Findings whose columns equal the given values (`round=2, split="heldout"`), oldest
        first."""
        unknown = set(where) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown findings column {sorted(unknown)[0]!r}")
        clause = " AND ".join(f"{key} = ?" for key in where) or "1"
        rows = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM findings WHERE {clause} ORDER BY time, rowid",
            list(where.values()),
        )
        return [self._finding(row) for row in rows]

    def asr(self, by: str = "strategy", **where: Any) -> dict[str, Rate]:
        """Attack success rate per value of `by` (one of GROUPINGS) over the matching findings,
        and the overall rate under "all"."""
        if by not in GROUPINGS:
            raise ValueError(f"by: {by!r} is not one of {', '.join(GROUPINGS)}")
        counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for finding in self.query(**where):
            for key in (str(getattr(finding, by)), "all"):
                counts[key][0] += 1
                counts[key][1] += finding.verdict == SUCCESS
        return {key: Rate(*counts[key]) for key in sorted(counts, key=lambda k: (k == "all", k))}

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Findings:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _row(finding: Finding) -> list[Any]:
        values = asdict(finding)
        values["messages"] = json.dumps(finding.messages, ensure_ascii=False)
        return [values[column] for column in _COLUMNS]

    @staticmethod
    def _finding(row: tuple) -> Finding:
        values = dict(zip(_COLUMNS, row))
        values["messages"] = json.loads(values["messages"])
        return Finding(**values)
