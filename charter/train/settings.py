"""Run settings: a TOML file of sections (`[model]`, `[train]`, `[data]`) plus command-line
overrides `--set section.key=value`, checked against the dataclasses they fill."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path
from typing import Any


def load_settings(path: str | Path | None, overrides: list[str]) -> dict[str, dict[str, Any]]:
    settings: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                settings = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: {e}") from e
    for item in overrides:
        key, sep, raw = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot:
            raise ValueError(f"--set {item!r}: expected section.key=value, e.g. train.lr=3e-4")
        settings.setdefault(section, {})[name] = _parse_value(raw)
    return settings


def add_settings_arguments(parser, sections: str, example: str) -> None:
    """`--config FILE` and `--set SECTION.KEY=VALUE …` on a training command."""
    parser.add_argument("--config", type=Path, help=f"TOML settings ({sections})")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help=f"override settings, e.g. {example}",
    )


def _parse_value(raw: str) -> Any:
    """A TOML value if it parses as one (numbers, booleans, quoted strings), else the string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def fill(cls: type, values: dict[str, Any], section: str) -> Any:
    """An instance of dataclass `cls` from `values`; unknown keys and wrong types are errors."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        if name not in fields:
            raise ValueError(f"[{section}] unknown setting {name!r}; known: {', '.join(fields)}")
        kwargs[name] = _coerce(value, hints[name], f"[{section}] {name}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    if typing.get_origin(hint) is list:  # list[str]: a list, each item checked
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    allowed = typing.get_args(hint) or (hint,)
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    for kind in allowed:
        origin = typing.get_origin(kind) or kind
        if kind is type(None) and value is None:
            return value
        if (
            isinstance(origin, type)
            and isinstance(value, origin)
            and not (origin is int and isinstance(value, bool))
        ):
            return value
    names = " or ".join(getattr(k, "__name__", str(k)) for k in allowed)
    raise ValueError(f"{where}: expected {names}, got {value!r}")
