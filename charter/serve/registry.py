"""The models a server offers: each a `Generator` (a local checkpoint, or a remote endpoint that
the server fronts) under an id. A model's id is its directory name (or remote model id) unless
`NAME=SPEC` names it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from charter.eval.card import CARD_FILE
from charter.infer.engine import Engine
from charter.infer.generator import Generator
from charter.infer.local import LocalGenerator
from charter.infer.spec import load_generator, parse_model_spec
from charter.infer.torch_backend import TorchBackend
from charter.model import Transformer
from charter.serve.errors import ApiError
from charter.tokenizer import Tokenizer


@dataclass
class ServedModel:
    generator: Generator
    created_at: datetime
    card: str | None = None  # the model card (Markdown), when its checkpoint has one

    @property
    def name(self) -> str:
        return self.generator.name

    @property
    def context_window(self) -> int | None:
        return self.generator.context_window


def serve_model(
    name: str,
    model: Transformer,
    tokenizer: Tokenizer,
    *,
    max_batch_size: int = 8,
    max_waiting: int = 64,
    context: int | None = None,
    created_at: datetime | None = None,
) -> ServedModel:
    """A loaded model behind an engine and a `LocalGenerator`. `context` caps prompt + output
    per sequence (default: the model's), which sizes the KV cache."""
    engine = Engine(TorchBackend(model, max_batch_size=max_batch_size, max_len=context), tokenizer)
    generator = LocalGenerator(engine, name, max_waiting=max_waiting)
    return ServedModel(generator, created_at or datetime.now(UTC))


def split_name(spec: str) -> tuple[str | None, str]:
    """(NAME, SPEC) of `NAME=SPEC`, (None, SPEC) of a bare spec."""
    name, separator, model_spec = spec.partition("=")
    if not separator or "," in name or ":" in name:  # the `=` belongs to the spec's options
        return None, spec
    if not name:
        raise ValueError(f"--model {spec!r}: the model name is empty")
    return name, model_spec


def load_served_model(
    spec: str, *, backend: str = "auto", max_waiting: int = 64, **engine_options: Any
) -> ServedModel:
    """`NAME=SPEC` or `SPEC` (a model spec: `charter.infer.spec`); a local spec that names no
    backend runs on `backend`."""
    name, model_spec = split_name(spec)
    parsed = parse_model_spec(model_spec, default_backend=backend)
    generator = load_generator(parsed, name=name, max_waiting=max_waiting, **engine_options)
    created, card = datetime.now(UTC), None
    if parsed.is_local:
        directory = Path(parsed.target)
        created = datetime.fromtimestamp((directory / "config.json").stat().st_mtime, UTC)
        if (directory / CARD_FILE).exists():
            card = (directory / CARD_FILE).read_text(encoding="utf-8")
    return ServedModel(generator, created, card)


class Registry:
    def __init__(self, models: list[ServedModel]) -> None:
        self.models = {m.name: m for m in models}
        if len(self.models) != len(models):
            raise ValueError("two served models have the same name; name them with NAME=SPEC")

    def get(self, name: str) -> ServedModel:
        if name not in self.models:
            raise ApiError(
                404, f"model: {name!r} not found; served models: {', '.join(self.models)}"
            )
        return self.models[name]

    def stop(self) -> None:
        for model in self.models.values():
            model.generator.close()
