"""The training loop, as a `Trainer` whose parts a caller can drive. Pretraining, SFT, the reward
model and RL differ in their `Task` and in the models the trainer holds (models.py).

Per step: the task hands this rank its micro-batches of the global batch (a pure function of
the step for pretraining and SFT; sampled from the live models, as rollouts, for RL). Each loss
is a *sum* over targets, scaled by 1 / (targets in the whole global batch), so the gradient is
the mean over every target of every rank whatever the split, and one process or N give the same
step. Then every trained model clips its gradients and steps its own AdamW.

`fit()` is a whole run: every `eval_every` steps validation, every `save_every` a checkpoint with
`training_state/`, from which a run resumes exactly (bitwise on CPU); Ctrl-C finishes the step,
saves and exits. A driver with a loop of its own (an RL controller) calls the parts:

    trainer = Trainer(task, config, out_dir, ctx, trained={"policy": …, "value": …},
                      frozen={"reference": …, "reward": …})
    trainer.resume()
    while trainer.steps_done < config.steps:
        row = trainer.step()  # or trainer.step(batches), with batches the driver made
    trainer.save()
"""

from __future__ import annotations

import contextlib
import math
import shutil
import signal
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from tqdm import tqdm

from charter.files import replace_directory, temporary_sibling
from charter.metrics import MetricsLog
from charter.train.distributed import Distributed, shutdown
from charter.train.models import CheckpointFormat, RunModels, TrainedModel
from charter.train.optimizer import OptimizerSettings
from charter.train.state import (
    TrainingState,
    checkpoint_dirs,
    load_training_state,
    remove_partial_checkpoints,
    save_training_state,
)

MODEL = "model"  # the name of the trained model of a one-model run (pretraining, SFT)


@dataclass
class TrainConfig(OptimizerSettings):
    """A run's `[train]` settings: the main model's optimizer settings (inherited) and the
    loop's."""

    steps: int = 1000
    batch_size: int = 32  # sequences (examples) per optimizer step, summed over ranks
    micro_batch_size: int = 8  # per rank per forward/backward (gradient accumulation)
    eval_every: int = 100
    save_every: int = 100
    keep_last: int = 2  # step checkpoints kept (plus best/)
    dtype: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    compile: bool = False
    parallel: str = "ddp"  # under torchrun: ddp | fsdp
    seed: int = 0
    stop_after: int | None = None  # end this run early (saving); a later run resumes to `steps`

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dtype not in ("auto", "fp32", "bf16"):
            raise ValueError(f"dtype {self.dtype!r}: choose auto, fp32 or bf16")
        for name in ("steps", "batch_size", "micro_batch_size", "eval_every", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")

    def learning_rate(self, step: int, total_steps: int | None = None) -> float:
        return super().learning_rate(step, self.steps if total_steps is None else total_steps)


class Batch(Protocol):
    num_targets: int  # what the loss is summed over (tokens, pairs, …)

    def to(self, device: torch.device) -> Batch: ...


Models = Mapping[str, nn.Module]  # the run's models by name, as `Trainer.models` gives them


class Task(Protocol):
    """What a training objective supplies to the loop."""

    def train_batches(
        self,
        step: int,
        rank: int,
        world_size: int,
        batch_size: int,
        micro_batch_size: int,
        models: Models,
    ) -> list[Batch]:
        """This rank's micro-batches of global batch `step` (the loop checks that `batch_size`
        splits into whole micro-batches on every rank). A task may sample them from `models`
        (rollouts); whatever else they depend on besides the step and the weights (a sampler's
        generator, a data cursor) must be in its `state_dict`, or resume is not exact."""

    def eval_batches(self, rank: int, world_size: int, micro_batch_size: int) -> list[Batch]: ...

    def loss(self, models: Models, batch: Batch) -> Tensor:
        """The loss summed over the batch's `num_targets` targets (a scalar)."""

    def eval_metrics(self, mean_loss: float) -> dict[str, float]:
        """Metrics to log from the mean validation loss (e.g. bits per byte)."""

    # Optional:
    # - `evaluate_generation(model) -> dict[str, float]`, metrics that need generated text (task
    #   accuracy) from the main model; run on rank 0 at each evaluation, unless parameters are
    #   sharded.
    # - `state_dict() -> dict` and `load_state_dict(state)`: this rank's task state, saved in
    #   every checkpoint's `training_state/task.pt` and restored on resume.


@dataclass
class TrainResult:
    last_step: int
    last_checkpoint: Path | None
    best_val_loss: float
    interrupted: bool  # by a signal (not by `stop_after`)


class Trainer:
    def __init__(
        self,
        task: Task,
        config: TrainConfig,
        out_dir: str | Path,
        ctx: Distributed,
        trained: dict[str, TrainedModel],
        frozen: dict[str, nn.Module] | None = None,
    ) -> None:
        """Train the models `trained` (the first is the main one: see models.py) on `task`,
        beside the `frozen` ones, writing checkpoints and metrics to `out_dir`. A trained model
        without optimizer settings of its own uses `config`'s."""
        if config.batch_size % (ctx.world_size * config.micro_batch_size):
            raise ValueError(  # every rank must get whole micro-batches of the global batch
                f"batch_size {config.batch_size} is not a multiple of world_size "
                f"{ctx.world_size} × micro_batch_size {config.micro_batch_size}"
            )
        self.task, self.config, self.out_dir, self.ctx = task, config, Path(out_dir), ctx
        self._models = RunModels(
            trained, frozen or {}, config, ctx, config.parallel, config.compile
        )
        self.models: Models = self._models.runners  # what the task is handed
        self.steps_done, self.tokens_seen, self.best_val_loss = 0, 0, math.inf
        self.resumed_from: Path | None = None
        self._started = False  # resumed or stepped: `fit` must not resume again
        self._cast = autocast_dtype(config, ctx.device)

    # ---- the parts ----

    def resume(self) -> Path | None:
        """Load the run directory's last checkpoint, if any: weights, optimizer states, progress,
        RNG and task state. Returns the checkpoint loaded."""
        self._started = True
        if self.ctx.is_main:
            remove_partial_checkpoints(self.out_dir)
        existing = checkpoint_dirs(self.out_dir)
        if not existing:
            return None
        checkpoint = existing[-1]
        state = load_training_state(checkpoint)
        self._models.load(checkpoint, state.optimizers)
        self._load_task_state(checkpoint, state.task)
        progress = state.progress
        self.steps_done, self.best_val_loss = progress["step"], progress["best_val_loss"]
        self.tokens_seen = progress["tokens_seen"]
        self.resumed_from = checkpoint
        if self.ctx.is_main:
            tqdm.write(f"resuming from {checkpoint} (step {self.steps_done})")
        return checkpoint

    def step(self, batches: list[Batch] | None = None) -> dict[str, Any]:
        """One optimizer step of every trained model on global batch `steps_done`, from this
        rank's micro-batches `batches` or else the task's. Returns the step's metrics."""
        self._started = True
        ctx, config = self.ctx, self.config
        started = time.perf_counter()
        lrs = {
            name: model.set_learning_rate(self.steps_done, config.steps)
            for name, model in self._models.trained.items()
        }
        if batches is None:
            batches = self.task.train_batches(
                self.steps_done,
                ctx.rank,
                ctx.world_size,
                config.batch_size,
                config.micro_batch_size,
                self.models,
            )
        step_targets = ctx.all_reduce(sum(b.num_targets for b in batches))
        if not step_targets:
            raise ValueError(f"global batch {self.steps_done} has no targets")
        self._models.train()  # a task that sampled its batches may have switched modes
        loss_sum = 0.0
        for i, batch in enumerate(batches):
            with self._models.gradient_sync(enabled=i == len(batches) - 1):
                with autocast(ctx.device, self._cast):
                    loss = self.task.loss(self.models, batch.to(ctx.device))
                # ×world_size: DDP and FSDP average gradients over ranks; we want the sum.
                (loss * (ctx.world_size / step_targets)).backward()
            loss_sum += float(loss.detach())
        norms = {name: model.clip_and_step() for name, model in self._models.trained.items()}
        self.steps_done += 1
        self.tokens_seen += int(step_targets)
        main = next(iter(lrs))
        row: dict[str, Any] = dict(
            step=self.steps_done,
            loss=ctx.all_reduce(loss_sum) / step_targets,
            lr=lrs.pop(main),
            grad_norm=norms.pop(main),
            tokens=self.tokens_seen,
            tokens_per_s=step_targets / (time.perf_counter() - started),
        )
        for name in lrs:  # the further trained models'
            row[f"lr/{name}"], row[f"grad_norm/{name}"] = lrs[name], norms[name]
        return row

    def evaluate(self) -> dict[str, float]:
        """The validation loss (and the task's metrics) over every rank's eval batches."""
        ctx = self.ctx
        self._models.train(False)
        try:
            loss_sum, targets = 0.0, 0
            with torch.no_grad():
                for batch in self.task.eval_batches(
                    ctx.rank, ctx.world_size, self.config.micro_batch_size
                ):
                    batch = batch.to(ctx.device)
                    with autocast(ctx.device, self._cast):
                        loss_sum += float(self.task.loss(self.models, batch))
                    targets += batch.num_targets
            total_targets = ctx.all_reduce(targets)
            results = {}
            if total_targets:
                mean = ctx.all_reduce(loss_sum) / total_targets
                results = {"val_loss": mean, **self.task.eval_metrics(mean)}
            generation = getattr(self.task, "evaluate_generation", None)
            if generation and ctx.is_main and self.config.parallel != "fsdp":
                results.update(generation(self._models.main.wrapped))
            ctx.barrier()
        finally:
            self._models.train()
        return results

    def save(self) -> Path:
        """A checkpoint of step `steps_done`: every trained model and `training_state/`. Keeps
        the last `keep_last` of them."""
        state_dicts = self._models.state_dicts()  # collectives under FSDP
        training_state = TrainingState(
            progress=dict(
                step=self.steps_done,
                best_val_loss=self.best_val_loss,
                tokens_seen=self.tokens_seen,
                config=asdict(self.config),
            ),
            optimizers=self._models.optimizer_state_dicts(),
            task=self._task_states(),
        )
        directory = self.out_dir / "checkpoints" / f"step-{self.steps_done:06d}"
        if self.ctx.is_main:
            tmp = temporary_sibling(directory)
            self._models.write(tmp, state_dicts)
            save_training_state(tmp, training_state)
            replace_directory(tmp, directory)
            for old in checkpoint_dirs(self.out_dir)[: -self.config.keep_last]:
                shutil.rmtree(old)
        self.ctx.barrier()
        return directory

    def save_models(self, directory: Path) -> None:
        """The trained models alone (no training state), e.g. `best/` and `final/`."""
        state_dicts = self._models.state_dicts()  # collectives under FSDP
        if self.ctx.is_main:
            tmp = temporary_sibling(directory)
            self._models.write(tmp, state_dicts)
            replace_directory(tmp, directory)
        self.ctx.barrier()

    # ---- a whole run ----

    def fit(self) -> TrainResult:
        """Train to `config.steps` (or `stop_after`), resuming first from the run directory's
        last checkpoint unless this trainer has already resumed or stepped."""
        config, ctx = self.config, self.ctx
        if not self._started:
            self.resume()
        metrics = None
        if ctx.is_main:
            resumed_step = self.steps_done if self.resumed_from else None
            metrics = MetricsLog(self.out_dir / "metrics.jsonl", resumed_step)
        last_checkpoint, interrupted = None, False
        bar = tqdm(
            total=config.steps,
            initial=self.steps_done,
            disable=not ctx.is_main,
            unit="step",
            dynamic_ncols=True,
        )
        with StopRequest() as stop:
            while self.steps_done < config.steps:
                row = self.step()
                step = self.steps_done
                if step % config.eval_every == 0 or step == config.steps:
                    row.update(self.evaluate())
                    if row.get("val_loss", math.inf) < self.best_val_loss:
                        self.best_val_loss = row["val_loss"]
                        self.save_models(self.out_dir / "best")
                if metrics:
                    metrics.write(**row)
                bar.set_postfix(
                    loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s']:,.0f}", refresh=False
                )
                bar.update(1)
                interrupted = ctx.all_reduce(stop.requested, op="max") > 0
                stopping = interrupted or step == config.stop_after
                if step % config.save_every == 0 or step == config.steps or stopping:
                    last_checkpoint = self.save()
                if stopping:
                    break
        bar.close()
        if self.steps_done == config.steps:
            self.save_models(self.out_dir / "final")
        return TrainResult(self.steps_done, last_checkpoint, self.best_val_loss, interrupted)

    # ---- the task's state ----

    def _task_states(self) -> list[dict[str, Any]] | None:
        """Every rank's task state (a collective), or None for a task without state."""
        state_dict = getattr(self.task, "state_dict", None)
        return self.ctx.all_gather_object(state_dict()) if state_dict else None

    def _load_task_state(self, checkpoint: Path, states: list[dict[str, Any]] | None) -> None:
        load = getattr(self.task, "load_state_dict", None)
        if (states is None) != (load is None):
            has = "has no" if states is None else "has a"
            raise ValueError(
                f"{checkpoint}: the checkpoint {has} task state (training_state/task.pt), "
                f"the task {'keeps one' if load else 'does not keep one'}"
            )
        if states is None:
            return
        if len(states) != self.ctx.world_size:
            raise ValueError(
                f"{checkpoint}: task state saved by {len(states)} ranks; resume it with as many "
                f"(this run has {self.ctx.world_size})"
            )
        load(states[self.ctx.rank])


class OneModelTask(Task, CheckpointFormat, Protocol):
    """A task that also writes its model's checkpoints (pretraining, SFT)."""


def train(
    model: nn.Module,
    task: OneModelTask,
    config: TrainConfig,
    out_dir: str | Path,
    ctx: Distributed,
) -> TrainResult:
    """Train one model (named `MODEL`) with the run's optimizer settings: `Trainer.fit`."""
    return Trainer(task, config, out_dir, ctx, trained={MODEL: TrainedModel(model, task)}).fit()


def train_and_report(
    model: nn.Module, task: OneModelTask, config: TrainConfig, out_dir: str | Path, ctx: Distributed
) -> TrainResult:
    """`train` for a command line: leaves the process group, prints where the model went, and
    exits with status 130 after a Ctrl-C (its step saved), as interrupted programs do."""
    try:
        result = train(model, task, config, out_dir, ctx)
    finally:
        shutdown(ctx)
    if ctx.is_main:
        print(f"last checkpoint: {result.last_checkpoint}")
        if math.isfinite(result.best_val_loss):
            print(
                f"best checkpoint: {Path(out_dir) / 'best'} (val loss {result.best_val_loss:.4f})"
            )
    if result.interrupted:
        raise SystemExit(130)
    return result


class StopRequest:
    """First Ctrl-C (SIGINT) or SIGTERM: finish the current step, save, stop. A second Ctrl-C
    interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    def __enter__(self) -> StopRequest:
        self._previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in self._previous:
            signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if config.dtype == "bf16" or (config.dtype == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to `dtype` on `device` (`autocast_dtype`'s choice), or nothing for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
