"""The guard's settings (`SafetyConfig`), read from TOML by `load_safety_config`.

    judge = "runs/judge-v3/best"      # a judge checkpoint; relative to the current directory
    judge_dtype = "bf16"              # fp32 | bf16 | f16 | int8: its precision (bf16 scores as
                                      # fp32 does, in half the time; int8 faster again, after
                                      # compiling at start: docs/redteam.md)
    refusal_text = "…"                # what a turn the input classifier blocks says

    [input]                           # the input classifier, on the judge's request_harm
    enabled = true
    threshold = 0.5
    [input.categories]                # optional: a threshold per category the judge names
    weapons = 0.3

    [output]                          # the output monitor, on the judge's response_harm
    enabled = true
    threshold = 0.5
    every_tokens = 16                 # score the partial reply every k output tokens
    hold_back = true                  # send each k tokens only once they are scored

    [log]                             # optional: one JSONL line per decision
    path = "logs/safety.jsonl"        # relative to the current directory
    bodies = false                    # also the request and reply text

A turn is blocked when the score reaches the threshold (score ≥ threshold). `judge_dtype`, the
`[input]` and `[output]` tables and their fields may be left out (the defaults above); `judge`
and `refusal_text` may not. Unknown keys are errors, and every error names the file and the field.
`charter/configs/safety.toml` is a commented example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charter.align.judge import PRECISIONS
from charter.data.judge_sources import CATEGORIES
from charter.files import read_toml


class SafetyConfigError(ValueError):
    """A safety config that cannot be read or holds a wrong field; the message names both."""


@dataclass(frozen=True)
class InputSettings:
    enabled: bool = True
    threshold: float = 0.5  # on request_harm
    categories: dict[str, float] = field(default_factory=dict)  # category → its own threshold

    def threshold_for(self, category: str) -> float:
        return self.categories.get(category, self.threshold)


@dataclass(frozen=True)
class OutputSettings:
    enabled: bool = True
    threshold: float = 0.5  # on response_harm
    every_tokens: int = 16
    hold_back: bool = True  # pass tokens on only once the monitor has read them


@dataclass(frozen=True)
class LogSettings:
    path: Path | None = None
    bodies: bool = False


@dataclass(frozen=True)
class SafetyConfig:
    judge: Path
    refusal_text: str
    input: InputSettings = field(default_factory=InputSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    log: LogSettings = field(default_factory=LogSettings)
    path: Path | None = None  # the file it was read from
    judge_dtype: str = "bf16"  # one of align.judge.PRECISIONS

    def describe(self) -> dict[str, Any]:
        """The settings as JSON-ready values, for `Guard.describe`."""
        return {
            "config": None if self.path is None else str(self.path),
            "judge": str(self.judge),
            "judge_dtype": self.judge_dtype,
            "input": {
                "enabled": self.input.enabled,
                "threshold": self.input.threshold,
                "categories": dict(self.input.categories),
            },
            "output": {
                "enabled": self.output.enabled,
                "threshold": self.output.threshold,
                "every_tokens": self.output.every_tokens,
                "hold_back": self.output.hold_back,
            },
            "log": None if self.log.path is None else str(self.log.path),
        }


def load_safety_config(path: str | Path) -> SafetyConfig:
    path = Path(path)
    data = read_toml(path, SafetyConfigError)
    read = _Reader(path)
    read.keys(data, "", {"judge", "judge_dtype", "refusal_text", "input", "output", "log"})
    judge = read.text(data, "judge", required=True)
    judge_dtype = read.text(data, "judge_dtype") or SafetyConfig.judge_dtype
    if judge_dtype not in PRECISIONS:
        choices = ", ".join(PRECISIONS)
        raise read.error("judge_dtype", f"must be one of {choices}, got {judge_dtype!r}")
    refusal_text = read.text(data, "refusal_text", required=True)

    inputs = read.table(data, "input")
    read.keys(inputs, "input", {"enabled", "threshold", "categories"})
    categories = read.table(inputs, "categories", "input.")
    read.keys(categories, "input.categories", set(CATEGORIES))
    input_settings = InputSettings(
        enabled=read.flag(inputs, "enabled", "input.", InputSettings.enabled),
        threshold=read.threshold(inputs, "threshold", "input.", InputSettings.threshold),
        categories={
            name: read.threshold(categories, name, "input.categories.") for name in categories
        },
    )

    outputs = read.table(data, "output")
    read.keys(outputs, "output", {"enabled", "threshold", "every_tokens", "hold_back"})
    every = outputs.get("every_tokens", OutputSettings.every_tokens)
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        raise read.error("output.every_tokens", f"must be an integer ≥ 1, got {every!r}")
    output_settings = OutputSettings(
        enabled=read.flag(outputs, "enabled", "output.", OutputSettings.enabled),
        threshold=read.threshold(outputs, "threshold", "output.", OutputSettings.threshold),
        every_tokens=every,
        hold_back=read.flag(outputs, "hold_back", "output.", OutputSettings.hold_back),
    )

    log = read.table(data, "log")
    read.keys(log, "log", {"path", "bodies"})
    log_path = read.text(log, "path", "log.")
    log_settings = LogSettings(
        path=None if log_path is None else Path(log_path),
        bodies=read.flag(log, "bodies", "log.", LogSettings.bodies),
    )
    return SafetyConfig(
        Path(judge), refusal_text, input_settings, output_settings, log_settings, path, judge_dtype
    )


class _Reader:
    """Checks the values of one file, raising `SafetyConfigError("{file}: {field}: …")`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def error(self, name: str, problem: str) -> SafetyConfigError:
        return SafetyConfigError(f"{self.path}: {name}: {problem}")

    def keys(self, table: dict[str, Any], name: str, known: set[str]) -> None:
        for key in table:
            if key not in known:
                where = f"{name}.{key}" if name else key
                raise self.error(
                    where, f"unknown field; expected one of {', '.join(sorted(known))}"
                )

    def table(self, data: dict[str, Any], key: str, prefix: str = "") -> dict[str, Any]:
        value = data.get(key, {})
        if not isinstance(value, dict):
            raise self.error(prefix + key, f"must be a table ([{prefix}{key}]), got {value!r}")
        return value

    def text(
        self, data: dict[str, Any], key: str, prefix: str = "", required: bool = False
    ) -> str | None:
        value = data.get(key)
        if value is None and not required:
            return None
        if value is None:
            raise self.error(prefix + key, "missing (a non-empty string)")
        if not isinstance(value, str) or not value.strip():
            raise self.error(prefix + key, f"must be a non-empty string, got {value!r}")
        return value

    def flag(self, data: dict[str, Any], key: str, prefix: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            raise self.error(prefix + key, f"must be true or false, got {value!r}")
        return value

    def threshold(
        self, data: dict[str, Any], key: str, prefix: str, default: float | None = None
    ) -> float:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise self.error(prefix + key, f"must be a number from 0 to 1, got {value!r}")
        return float(value)
