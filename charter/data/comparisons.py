"""People's comparisons of two replies to one prompt (the server's /compare page), kept in a
SQLite table `comparisons` and exported as preference pairs for `charter rm train`.

    comparisons = Comparisons("runs/feedback.sqlite")   # the file may also hold other tables
    comparisons.add(Comparison(prompt, "micro", reply_a, "micro", reply_b, choice=A))
    write_preferences(comparisons.all(), "prefs.jsonl")

A comparison is keyed by a hash of its prompt, models and replies, so a choice posted twice (a
retried request) is stored once; the first choice is kept. "Equally good" (`TIE`) is stored
too and exported with `p_chosen` 0.5: a soft label the Bradley–Terry loss reads as "no
preference", which pulls the two rewards together.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from charter import chat
from charter.data.preferences import HUMAN, preference_row
from charter.files import open_sqlite, write_jsonl

A, B, TIE = "a", "b", "tie"  # reply A is better · reply B is better · equally good
CHOICES = (A, B, TIE)
SOURCE = "compare-page"  # the `source` of the exported pairs


@dataclass
class Comparison:
    prompt: str  # the user message both replies answer
    model_a: str
    response_a: str
    model_b: str  # the same as model_a for two samples of one model
    response_b: str
    choice: str  # one of CHOICES
    time: str = ""
    id: str = ""

    def __post_init__(self) -> None:
        for field in ("prompt", "response_a", "response_b"):
            if not getattr(self, field).strip():
                raise ValueError(f"{field}: expected text, got only whitespace")
        if self.response_a == self.response_b:
            raise ValueError("response_b: the same text as response_a, so nothing to compare")
        if self.choice not in CHOICES:
            raise ValueError(f"choice: {self.choice!r} is not one of {', '.join(CHOICES)}")
        content = [self.prompt, self.model_a, self.response_a, self.model_b, self.response_b]
        digest = hashlib.sha256(json.dumps(content, ensure_ascii=False).encode()).hexdigest()
        self.id = self.id or digest[:16]
        self.time = self.time or datetime.now(UTC).isoformat(timespec="seconds")


_COLUMNS = [f.name for f in fields(Comparison)]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS comparisons (
    prompt TEXT NOT NULL, model_a TEXT NOT NULL, response_a TEXT NOT NULL,
    model_b TEXT NOT NULL, response_b TEXT NOT NULL, choice TEXT NOT NULL, time TEXT NOT NULL,
    id TEXT PRIMARY KEY
)"""


class Comparisons:
    """The `comparisons` table of the database at `path` (created when new). Each call is one
    transaction on a connection that the server's request handlers share."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = open_sqlite(self.path, _SCHEMA)

    def add(self, comparison: Comparison) -> bool:
        """Store `comparison` unless one with its id is there; whether it was new."""
        placeholders = ", ".join("?" for _ in _COLUMNS)
        with self._db:
            cursor = self._db.execute(
                f"INSERT OR IGNORE INTO comparisons ({', '.join(_COLUMNS)}) "
                f"VALUES ({placeholders})",
                astuple(comparison),
            )
            return cursor.rowcount == 1

    def all(self) -> list[Comparison]:
        """Every comparison, oldest first."""
        return self._select("1")

    def get(self, id: str) -> Comparison | None:
        found = self._select("id = ?", id)
        return found[0] if found else None

    def _select(self, where: str, *values: str) -> list[Comparison]:
        query = f"SELECT {', '.join(_COLUMNS)} FROM comparisons WHERE {where} ORDER BY time, rowid"
        return [Comparison(*row) for row in self._db.execute(query, values)]

    def close(self) -> None:
        self._db.close()


def preference(comparison: Comparison) -> dict[str, Any]:
    """The preference JSONL row of a comparison: the chosen reply first with `p_chosen` 1, or,
    for a tie, reply A first with 0.5."""
    c = comparison
    first, second = (B, A) if c.choice == B else (A, B)
    replies = {A: (c.response_a, c.model_a), B: (c.response_b, c.model_b)}
    (chosen, chosen_model), (rejected, rejected_model) = replies[first], replies[second]
    context = chat.Conversation([chat.Message("user", [chat.TextBlock(c.prompt)])])
    return preference_row(
        context,
        chosen,
        rejected,
        p_chosen=0.5 if c.choice == TIE else 1.0,
        feedback_model=HUMAN,
        source=SOURCE,
        chosen_model=chosen_model,
        rejected_model=rejected_model,
        comparison_id=c.id,
        time=c.time,
    )


def write_preferences(comparisons: list[Comparison], out: str | Path) -> dict[str, int]:
    """The comparisons as a preference JSONL file; counts of pairs and of ties among them."""
    write_jsonl(out, [preference(c) for c in comparisons])
    return {"pairs": len(comparisons), "ties": sum(c.choice == TIE for c in comparisons)}
