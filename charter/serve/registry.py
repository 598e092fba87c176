"""The models a server offers: each a checkpoint directory, its tokenizer, and the worker thread
that generates with it. A model's id is its directory name unless `NAME=DIR` names it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import torch

from charter.checkpoint import load_tokenizer
from charter.infer.backends import load_engine
from charter.infer.engine import Engine
from charter.model import Transformer
from charter.serve.errors import ApiError
from charter.serve.worker import ModelWorker
from charter.tokenizer import Tokenizer


@dataclass
class ServedModel:
    name: str
    tokenizer: Tokenizer
    worker: ModelWorker
    created_at: datetime

    @property
    def context_window(self) -> int:
        return self.worker.engine.max_len


def parse_model_spec(spec: str) -> tuple[str, Path]:
    """`NAME=DIR` or `DIR` (named after the directory)."""
    name, separator, directory = spec.partition("=")
    if not separator:
        directory = spec
        name = Path(spec).resolve().name
    if not name:
        raise ValueError(f"--model {spec!r}: the model name is empty")
    return name, Path(directory)


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
    """Wrap a loaded model in an engine and a started worker thread. `context` caps prompt +
    output per sequence (default: the model's), which sizes the KV cache."""
    engine = Engine(model, tokenizer, max_batch_size=max_batch_size, max_len=context)
    return serve_engine(name, engine, max_waiting=max_waiting, created_at=created_at)


def serve_engine(
    name: str, engine: Engine, *, max_waiting: int = 64, created_at: datetime | None = None
) -> ServedModel:
    """Put an engine (of either backend) behind a started worker thread."""
    worker = ModelWorker(engine, max_waiting=max_waiting)
    worker.start()
    return ServedModel(name, engine.tokenizer, worker, created_at or datetime.now(UTC))


def load_served_model(
    spec: str,
    *,
    max_batch_size: int,
    max_waiting: int,
    context: int | None,
    dtype: torch.dtype,
    device: str,
    backend: str = "auto",
) -> ServedModel:
    name, directory = parse_model_spec(spec)
    if not load_tokenizer(directory).chat_template:
        raise ValueError(f"{directory}: the tokenizer has no chat template; it cannot be served")
    engine = load_engine(
        directory,
        backend,
        max_batch_size=max_batch_size,
        max_len=context,
        dtype=dtype,
        device=device,
    )
    created = datetime.fromtimestamp((directory / "config.json").stat().st_mtime, UTC)
    return serve_engine(name, engine, max_waiting=max_waiting, created_at=created)


class Registry:
    def __init__(self, models: list[ServedModel]) -> None:
        self.models = {m.name: m for m in models}
        if len(self.models) != len(models):
            raise ValueError("two served models have the same name; name them with NAME=DIR")

    def get(self, name: str) -> ServedModel:
        if name not in self.models:
            raise ApiError(
                404, f"model: {name!r} not found; served models: {', '.join(self.models)}"
            )
        return self.models[name]

    def stop(self) -> None:
        for model in self.models.values():
            model.worker.stop()
