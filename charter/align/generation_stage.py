"""What CAI's generation stages (`sl_cai`, `cai_compare`) share: the prompts still to do when a
run resumes its output file, a seed of each prompt's own, why a generated turn cannot be used,
and the checks of their settings.

Seeds come from the prompt's text, not its place in the run, so a resumed run (with other batch
boundaries) samples exactly what an uninterrupted one would on a generator that honours seeds.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from charter.infer.generator import END_TURN, InvalidRequest

ALREADY_DONE, DUPLICATE = "already in the file", "duplicate prompt"
TOO_LONG, CUT_OFF, EMPTY = "too long for the context", "cut off", "empty"

Item = TypeVar("Item")


def pending(
    items: Sequence[Item], key: Callable[[Item], str], done: set[str]
) -> tuple[list[Item], Counter]:
    """The items still to do, each once, in order, and the count of those left out: already
    in the output file (`done` holds their keys), or a repeat of an earlier item."""
    todo: dict[str, Item] = {}
    outcomes: Counter = Counter()
    for item in items:
        if key(item) in done:
            outcomes[ALREADY_DONE] += 1
        elif key(item) in todo:
            outcomes[DUPLICATE] += 1
        else:
            todo[key(item)] = item
    return list(todo.values()), outcomes


def prompt_seed(seed: int, text: str) -> int:
    """A seed of this text's own, the same in every run and process, below 2**31 (it fits
    every backend's seed type)."""
    digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def unusable(turn: Any) -> str | None:
    """Why a turn from `generate(..., errors="return")` cannot be used, or None when it can: the
    prompt did not fit the context, the turn was cut off (at the token limit), or it is empty.
    Any other invalid request is a bug in the stage, and raised."""
    if isinstance(turn, InvalidRequest):
        if turn.field != "messages":
            raise turn
        return TOO_LONG
    if turn.stop_reason != END_TURN:
        return CUT_OFF
    return EMPTY if not turn.text.strip() else None


def at_least(settings: Any, **minimums: int) -> None:
    """Each named field of `settings` must be an integer ≥ its minimum; the error names it."""
    for field, low in minimums.items():
        value = getattr(settings, field)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{field}: must be an integer ≥ {low}, got {value!r}")
