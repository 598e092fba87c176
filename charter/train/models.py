"""The models of a training run, by name: trained ones, each with its own optimizer and
learning-rate schedule, and frozen ones that are only called (a reference policy, a reward model).

A trained model is moved to the device, wrapped for DDP or FSDP under torchrun
(`distributed.wrap_model`) and compiled if asked; its weights and optimizer state are in every
checkpoint. A frozen model is moved to the device and put in eval mode with its gradients off; it
is never wrapped (it has no gradients to synchronise) and never saved.

A checkpoint holds the main model (the first trained one) at its top level, so that it stays a
directory that loads as that model, and each further trained model in a subdirectory of its name:

    step-000100/                  the main model's files (e.g. the policy's)
    step-000100/value/            the files of the trained model named "value"
    step-000100/training_state/   every trained model's optimizer state, … (state.py)
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from charter.train.distributed import Distributed, wrap_model
from charter.train.optimizer import OptimizerSettings
from charter.train.state import STATE_DIR

# Gathered whole on rank 0's CPU for writing; loaded whole on every rank.
_FULL_ON_CPU = StateDictOptions(full_state_dict=True, cpu_offload=True)
_FULL = StateDictOptions(full_state_dict=True)


class CheckpointFormat(Protocol):
    """How a model's files are written and read (e.g. a Hugging Face Llama directory)."""

    def write_checkpoint(self, directory: Path, state_dict: dict[str, Tensor]) -> None:
        """Write the model files (config, weights, tokenizer) into the existing `directory`."""

    def read_checkpoint(self, directory: Path) -> dict[str, Tensor]:
        """The model's full state dict from a directory `write_checkpoint` wrote."""


@dataclass
class TrainedModel:
    """A model for the trainer to train, and how its checkpoints are written."""

    module: nn.Module
    format: CheckpointFormat
    optimizer: OptimizerSettings | None = None  # None: the run's `[train]` settings


class _Trained:
    """A trained model on its device: wrapped, maybe compiled, with its own optimizer."""

    def __init__(
        self,
        spec: TrainedModel,
        settings: OptimizerSettings,
        ctx: Distributed,
        parallel: str,
        compile: bool,
    ) -> None:
        self.format, self.settings = spec.format, settings
        self.wrapped = wrap_model(spec.module.to(ctx.device), ctx, parallel)
        self.optimizer = settings.make_optimizer(self.wrapped)
        self.runner = torch.compile(self.wrapped) if compile else self.wrapped  # the task calls

    def set_learning_rate(self, step: int, total_steps: int) -> float:
        lr = self.settings.learning_rate(step, total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def clip_and_step(self) -> float:
        """Clip the gradients, step the optimizer, clear the gradients; the norm before clipping."""
        norm = nn.utils.clip_grad_norm_(self.wrapped.parameters(), self.settings.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        full_tensor = getattr(norm, "full_tensor", None)  # a DTensor under FSDP2
        return float(full_tensor() if full_tensor else norm)


class RunModels:
    """The trained and frozen models of a run. The first trained model is the main one."""

    def __init__(
        self,
        trained: dict[str, TrainedModel],
        frozen: dict[str, nn.Module],
        settings: OptimizerSettings,
        ctx: Distributed,
        parallel: str,
        compile: bool,
    ) -> None:
        if not trained:
            raise ValueError("a run needs at least one trained model")
        _check_names(trained, frozen)
        _check_no_shared_parameters(trained, frozen)
        self.trained = {
            name: _Trained(spec, spec.optimizer or settings, ctx, parallel, compile)
            for name, spec in trained.items()
        }
        self.frozen = {name: freeze(module.to(ctx.device)) for name, module in frozen.items()}

    @property
    def main(self) -> _Trained:
        return next(iter(self.trained.values()))

    @property
    def runners(self) -> dict[str, nn.Module]:
        """Every model as a task calls it: trained ones through their wrapper, frozen ones as
        they are."""
        return {**{n: m.runner for n, m in self.trained.items()}, **self.frozen}

    def train(self, mode: bool = True) -> None:
        """Training (or eval) mode for the trained models; frozen ones stay in eval mode."""
        for model in self.trained.values():
            model.runner.train(mode)

    @contextlib.contextmanager
    def gradient_sync(self, enabled: bool) -> Iterator[None]:
        """Skip the gradient all-reduce on all but the last micro-batch of a step."""
        with contextlib.ExitStack() as stack:
            if not enabled:
                for model in self.trained.values():
                    stack.enter_context(_no_gradient_sync(model.wrapped))
            yield

    # ---- checkpoints ----

    def state_dicts(self) -> dict[str, dict[str, Tensor]]:
        """Every trained model's full state dict, on the CPU (a collective under FSDP)."""
        return {
            name: get_model_state_dict(m.wrapped, options=_FULL_ON_CPU)
            for name, m in self.trained.items()
        }

    def optimizer_state_dicts(self) -> dict[str, dict[str, Any]]:
        return {
            name: get_optimizer_state_dict(m.wrapped, m.optimizer, options=_FULL_ON_CPU)
            for name, m in self.trained.items()
        }

    def write(self, directory: Path, state_dicts: dict[str, dict[str, Tensor]]) -> None:
        """Write every trained model's files into the existing `directory` (on one rank)."""
        for name, model in self.trained.items():
            target = self._directory(directory, name)
            target.mkdir(exist_ok=True)
            model.format.write_checkpoint(target, state_dicts[name])

    def load(self, directory: Path, optimizer_states: dict[str, dict[str, Any]]) -> None:
        """Load every trained model's weights from `directory`, and its optimizer's state."""
        missing = set(self.trained) - set(optimizer_states)
        if missing:
            raise ValueError(
                f"{directory}: no optimizer state for trained model(s) {', '.join(sorted(missing))}"
            )
        for name, model in self.trained.items():
            weights = model.format.read_checkpoint(self._directory(directory, name))
            set_model_state_dict(model.wrapped, weights, options=_FULL)
            set_optimizer_state_dict(
                model.wrapped, model.optimizer, optimizer_states[name], options=_FULL
            )

    def _directory(self, checkpoint: Path, name: str) -> Path:
        return checkpoint if name == next(iter(self.trained)) else checkpoint / name


def freeze(module: nn.Module) -> nn.Module:
    """`module` in eval mode with its gradients off: called, never trained."""
    return module.eval().requires_grad_(False)


def _check_names(trained: dict[str, Any], frozen: dict[str, Any]) -> None:
    both = set(trained) & set(frozen)
    if both:
        raise ValueError(f"model name(s) {', '.join(sorted(both))} both trained and frozen")
    for name in (*trained, *frozen):
        # A trained model's name is the name of its subdirectory in a checkpoint.
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name == STATE_DIR:
            raise ValueError(
                f"model name {name!r}: use lowercase letters, digits and _ (not {STATE_DIR!r})"
            )


def _check_no_shared_parameters(
    trained: dict[str, TrainedModel], frozen: dict[str, nn.Module]
) -> None:
    """Two optimizers must not step one parameter, and freezing a model (its gradients off)
    must not reach a trained one: a reference model is a copy of the policy, not the policy."""
    owner: dict[int, str] = {}
    for name, spec in trained.items():
        for param in spec.module.parameters():
            if owner.setdefault(id(param), name) != name:
                raise ValueError(
                    f"trained models {owner[id(param)]!r} and {name!r} share parameters: "
                    "train them as one model"
                )
    for name, module in frozen.items():
        shared = {owner[id(p)] for p in module.parameters() if id(p) in owner}
        if shared:
            raise ValueError(
                f"frozen model {name!r} shares parameters with trained model {shared.pop()!r}"
            )


@contextlib.contextmanager
def _no_gradient_sync(model: nn.Module) -> Iterator[None]:
    if hasattr(model, "no_sync"):  # DDP
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:  # a single process: nothing to synchronise
        yield
