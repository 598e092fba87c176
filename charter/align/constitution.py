"""A constitution: the principles Constitutional AI asks for feedback under, read from TOML.

The file (`constitution.toml` beside this module by default) has a top-level `system_prompt`
(the constitution in a few sentences, for context distillation), one `[[principle]]` table per
principle with every field of `feedback.Principle` (`name`, `category`, `critique_request`,
`revision_request`, `comparison_question`), and optional `[[example]]` tables with every field of
`feedback.FewShotExample`. Every field is a required, non-empty string and no others are allowed,
so a typo is an error rather than a silently ignored key. An error names the file, the line of
the table's header where it can be found, the entry (a principle by its name, or as
`principle[3]`, counting from 0, where it has none) and the field.
"""

from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.align.feedback import FewShotExample, Principle
from charter.files import read_toml

DEFAULT_CONSTITUTION = Path(__file__).with_name("constitution.toml")
TOP_LEVEL = ("system_prompt", "principle", "example")


class ConstitutionError(ValueError):
    """A constitution file that cannot be read or is not in the expected shape, or a request
    for a principle or category it does not have."""


@dataclass(frozen=True)
class Constitution:
    principles: tuple[Principle, ...]
    examples: tuple[FewShotExample, ...]  # few-shot critiques and revisions; may be empty
    system_prompt: str
    path: Path  # the file it was read from

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.principles)

    @property
    def categories(self) -> tuple[str, ...]:
        """The distinct categories, in the order they first appear."""
        return tuple(dict.fromkeys(p.category for p in self.principles))

    def get(self, name: str) -> Principle:
        for principle in self.principles:
            if principle.name == name:
                return principle
        raise ConstitutionError(
            f"{self.path}: no principle {name!r}; choose from {', '.join(self.names)}"
        )

    def in_category(self, category: str) -> tuple[Principle, ...]:
        chosen = tuple(p for p in self.principles if p.category == category)
        if not chosen:
            raise ConstitutionError(
                f"{self.path}: no principle in category {category!r}; "
                f"categories: {', '.join(self.categories)}"
            )
        return chosen

    def sample(self, rng: random.Random, k: int = 1) -> list[Principle]:
        """`k` distinct principles drawn at random (the same ones for the same `rng` state)."""
        if not 1 <= k <= len(self.principles):
            raise ConstitutionError(
                f"cannot sample {k} distinct principles from {self.path}, which has "
                f"{len(self.principles)}"
            )
        return rng.sample(self.principles, k)


def load_constitution(path: str | Path | None = None) -> Constitution:
    """The constitution in `path`, or the packaged one (`DEFAULT_CONSTITUTION`) for None."""
    path = DEFAULT_CONSTITUTION if path is None else Path(path)
    data = read_toml(path, ConstitutionError)
    text = path.read_text(encoding="utf-8")  # for the line numbers of its tables

    unknown = sorted(set(data) - set(TOP_LEVEL))
    if unknown:
        raise ConstitutionError(
            f"{path}: {unknown[0]}: unknown top-level field; expected {', '.join(TOP_LEVEL)}"
        )
    system_prompt = data.get("system_prompt")
    if system_prompt is None:
        raise ConstitutionError(f"{path}: system_prompt: missing (a top-level string)")
    if not isinstance(system_prompt, str) or not system_prompt.strip():
        raise ConstitutionError(f"{path}: system_prompt: must be a non-empty string")

    principles = _entries(data, "principle", Principle, path, text)
    if not principles:
        raise ConstitutionError(f"{path}: no [[principle]] tables; a constitution needs one")
    lines = _header_lines(text, "principle", len(principles))
    first: dict[str, int] = {}
    for index, principle in enumerate(principles):
        if principle.name in first:
            where = _where(path, lines[index], f"principle {principle.name!r}")
            raise ConstitutionError(
                f"{where}: name: duplicate (also principle[{first[principle.name]}])"
            )
        first[principle.name] = index
    examples = _entries(data, "example", FewShotExample, path, text)
    return Constitution(tuple(principles), tuple(examples), system_prompt, path)


def _entries(data: dict[str, Any], table: str, cls: type, path: Path, text: str) -> list[Any]:
    """The `[[table]]` entries of `data` as `cls` instances: every dataclass field of `cls` is
    required and must be a non-empty string, and no other field is allowed."""
    raw = data.get(table, [])
    if not isinstance(raw, list) or not all(isinstance(entry, dict) for entry in raw):
        raise ConstitutionError(f"{path}: {table}: must be an array of tables ([[{table}]])")
    fields = [f.name for f in dataclasses.fields(cls)]
    lines = _header_lines(text, table, len(raw))
    built = []
    for index, entry in enumerate(raw):
        name = entry.get("name")
        label = (
            f"{table} {name!r}" if isinstance(name, str) and name.strip() else f"{table}[{index}]"
        )
        where = _where(path, lines[index], label)
        unknown = sorted(set(entry) - set(fields))
        if unknown:
            raise ConstitutionError(
                f"{where}: {unknown[0]}: unknown field; expected {', '.join(fields)}"
            )
        for field in fields:
            if field not in entry:
                raise ConstitutionError(f"{where}: {field}: missing")
            value = entry[field]
            if not isinstance(value, str):
                raise ConstitutionError(
                    f"{where}: {field}: must be a string, got {type(value).__name__}"
                )
            if not value.strip():
                raise ConstitutionError(f"{where}: {field}: empty")
        built.append(cls(**{field: entry[field] for field in fields}))
    return built


def _header_lines(text: str, table: str, count: int) -> list[int | None]:
    """The line of each of the `count` entries' `[[table]]` headers; None for each where the
    headers do not number `count` (entries written as an inline array have none)."""
    header = re.compile(rf"\s*\[\[\s*{table}\s*\]\]\s*(#.*)?")
    lines = [n for n, line in enumerate(text.splitlines(), 1) if header.fullmatch(line)]
    return lines if len(lines) == count else [None] * count


def _where(path: Path, line: int | None, label: str) -> str:
    return f"{path}:{line}: {label}" if line is not None else f"{path}: {label}"
