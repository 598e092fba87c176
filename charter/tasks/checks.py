"""Answer checkers: is a model's final response correct for a task's answer? Shared by the
held-out evaluation and, later, rewards for RL; `CHECKS` names the checker of every task
(the synthetic tasks of `charter.data.synthetic`, and the benign QA set of `charter.eval`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def last_number(text: str) -> str | None:
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def _normalise(text: str) -> str:
    return " ".join(text.lower().replace("\u2019", "'").split())


def check_number(answer: str, response: str) -> bool:
    return last_number(response) == answer


def check_contains(answer: str, response: str) -> bool:
    return _normalise(answer) in _normalise(response)


def check_word(answer: str, response: str) -> bool:
    """Exactly one word (quotes and final punctuation aside), equal to the answer."""
    word = response.strip().strip("\"'").rstrip(".!").strip("\"'")
    return " " not in word and word.lower() == answer.lower()


def check_mention(answer: str, response: str) -> bool:
    """The answer appears as a whole word (or number) in the response."""
    return re.search(rf"(?<!\w){re.escape(answer.lower())}(?!\w)", response.lower()) is not None


def bullet_items(text: str) -> list[str]:
    return [line.strip()[2:].strip() for line in text.splitlines() if line.strip().startswith("- ")]


def check_list(answer: str, response: str) -> bool:
    expected = [_normalise(item) for item in bullet_items(answer)]
    return [_normalise(item) for item in bullet_items(response)] == expected


def check_json(answer: str, response: str) -> bool:
    """The response is one JSON object (nothing else) equal to the answer's."""
    try:
        return json.loads(response.strip()) == json.loads(answer)
    except json.JSONDecodeError:
        return False


CHECKS: dict[str, Callable[[str, str], bool]] = {
    "arithmetic": check_number,
    "calculator": check_number,
    "units": check_number,
    "definitions": check_contains,
    "format_list": check_list,
    "format_json": check_json,
    "format_word": check_word,
    "multi_turn": check_mention,
    "benign_qa": check_contains,
}


def check(task: str, answer: str, response: str) -> bool:
    if task not in CHECKS:
        raise ValueError(f"unknown task {task!r}; the checkable tasks are {sorted(CHECKS)}")
    return CHECKS[task](answer, response)
