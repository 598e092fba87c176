"""The one training loop. Pretraining, SFT and the reward model differ only in their `Task`.

Per step: the task hands this rank its micro-batches of the global batch; each loss is a *sum*
over targets, scaled by 1 / (targets in the whole global batch), so the gradient is the mean over
every target of every rank whatever the split, and one process or N give the same step. Then
clip, AdamW, log. Every `eval_every` steps: validation; every `save_every`: a checkpoint with
`training_state/`, from which a run resumes exactly (bitwise on CPU). Ctrl-C finishes the step,
saves and exits.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import signal
import time
from dataclasses import asdict, dataclass
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
from tqdm import tqdm

from charter.files import replace_directory, temporary_sibling
from charter.train.distributed import Distributed, shutdown, wrap_model
from charter.train.metrics import MetricsLog
from charter.train.optimizer import make_adamw
from charter.train.schedule import SCHEDULES
from charter.train.state import (
    checkpoint_dirs,
    load_training_state,
    remove_partial_checkpoints,
    save_training_state,
)


@dataclass
class TrainConfig:
    steps: int = 1000
    batch_size: int = 32  # sequences (examples) per optimizer step, summed over ranks
    micro_batch_size: int = 8  # per rank per forward/backward (gradient accumulation)
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    schedule: str = "cosine"  # cosine | wsd
    decay_fraction: float = 0.2  # wsd: the final share of steps spent decaying
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 100
    save_every: int = 100
    keep_last: int = 2  # step checkpoints kept (plus best/)
    dtype: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    compile: bool = False
    parallel: str = "ddp"  # under torchrun: ddp | fsdp
    seed: int = 0
    stop_after: int | None = None  # end this run early (saving); a later run resumes to `steps`

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r}: choose from {', '.join(SCHEDULES)}")
        if self.dtype not in ("auto", "fp32", "bf16"):
            raise ValueError(f"dtype {self.dtype!r}: choose auto, fp32 or bf16")
        for name in ("steps", "batch_size", "micro_batch_size", "eval_every", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")

    def learning_rate(self, step: int) -> float:
        kwargs = dict(
            peak=self.lr, warmup=self.warmup_steps, total=self.steps, min_ratio=self.min_lr_ratio
        )
        if self.schedule == "wsd":
            kwargs["decay_fraction"] = self.decay_fraction
        return SCHEDULES[self.schedule](step, **kwargs)


class Batch(Protocol):
    num_targets: int  # what the loss is summed over (tokens, pairs, …)

    def to(self, device: torch.device) -> Batch: ...


class Task(Protocol):
    """What a training objective supplies to the loop."""

    def train_batches(
        self, step: int, rank: int, world_size: int, batch_size: int, micro_batch_size: int
    ) -> list[Batch]:
        """This rank's micro-batches of global batch `step` (a pure function of its arguments;
        the loop checks that `batch_size` splits into whole micro-batches on every rank)."""

    def eval_batches(self, rank: int, world_size: int, micro_batch_size: int) -> list[Batch]: ...

    def loss(self, model: nn.Module, batch: Batch) -> Tensor:
        """The loss summed over the batch's `num_targets` targets (a scalar)."""

    def eval_metrics(self, mean_loss: float) -> dict[str, float]:
        """Metrics to log from the mean validation loss (e.g. bits per byte)."""

    def write_checkpoint(self, directory: Path, state_dict: dict[str, Tensor]) -> None:
        """Write the model files (config, weights, tokenizer) into `directory`."""

    def read_checkpoint(self, directory: Path) -> dict[str, Tensor]:
        """The model's full state dict from a directory `write_checkpoint` wrote."""

    # Optional: `evaluate_generation(model) -> dict[str, float]`, metrics that need generated
    # text (task accuracy); run on rank 0 at each evaluation, unless parameters are sharded.


@dataclass
class TrainResult:
    last_step: int
    last_checkpoint: Path | None
    best_val_loss: float
    interrupted: bool  # by a signal (not by `stop_after`)


class _StopRequest:
    """First Ctrl-C (SIGINT) or SIGTERM: finish the current step, save, stop. A second Ctrl-C
    interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    def __enter__(self) -> _StopRequest:
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


def train(
    model: nn.Module,
    task: Task,
    config: TrainConfig,
    out_dir: str | Path,
    ctx: Distributed,
) -> TrainResult:
    out_dir = Path(out_dir)
    if config.batch_size % (ctx.world_size * config.micro_batch_size):
        raise ValueError(  # every rank must get whole micro-batches of the global batch
            f"batch_size {config.batch_size} is not a multiple of world_size {ctx.world_size} "
            f"× micro_batch_size {config.micro_batch_size}"
        )
    model.to(ctx.device)
    wrapped = wrap_model(model, ctx, config.parallel)
    optimizer = make_adamw(wrapped, config.lr, config.weight_decay, (config.beta1, config.beta2))
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    start_step, best_val_loss, tokens_seen = 0, math.inf, 0
    if ctx.is_main:
        remove_partial_checkpoints(out_dir)
    existing = checkpoint_dirs(out_dir)
    if existing:
        progress, optimizer_state = load_training_state(existing[-1])
        loading = StateDictOptions(full_state_dict=True)
        set_model_state_dict(wrapped, task.read_checkpoint(existing[-1]), options=loading)
        set_optimizer_state_dict(wrapped, optimizer, optimizer_state, options=loading)
        start_step, best_val_loss = progress["step"], progress["best_val_loss"]
        tokens_seen = progress["tokens_seen"]
        if ctx.is_main:
            tqdm.write(f"resuming from {existing[-1]} (step {start_step})")
    runner = torch.compile(wrapped) if config.compile else wrapped
    metrics = (
        MetricsLog(out_dir / "metrics.jsonl", start_step if existing else None)
        if ctx.is_main
        else None
    )
    cast = autocast_dtype(config, ctx.device)

    def save(step: int) -> Path:
        state = get_model_state_dict(wrapped, options=full)  # collective under FSDP
        optimizer_state = get_optimizer_state_dict(wrapped, optimizer, options=full)
        directory = out_dir / "checkpoints" / f"step-{step:06d}"
        if ctx.is_main:
            tmp = temporary_sibling(directory)
            task.write_checkpoint(tmp, state)
            progress = dict(
                step=step,
                best_val_loss=best_val_loss,
                tokens_seen=tokens_seen,
                config=asdict(config),
            )
            save_training_state(tmp, progress, optimizer_state)
            replace_directory(tmp, directory)
            for old in checkpoint_dirs(out_dir)[: -config.keep_last]:
                shutil.rmtree(old)
        ctx.barrier()
        return directory

    def evaluate() -> dict[str, float]:
        runner.eval()
        loss_sum, targets = 0.0, 0
        with torch.no_grad():
            for batch in task.eval_batches(ctx.rank, ctx.world_size, config.micro_batch_size):
                batch = batch.to(ctx.device)
                with _autocast(ctx.device, cast):
                    loss_sum += float(task.loss(runner, batch))
                targets += batch.num_targets
        total_targets = ctx.all_reduce(targets)
        results = {}
        if total_targets:
            mean = ctx.all_reduce(loss_sum) / total_targets
            results = {"val_loss": mean, **task.eval_metrics(mean)}
        generation = getattr(task, "evaluate_generation", None)
        if generation and ctx.is_main and config.parallel != "fsdp":
            results.update(generation(wrapped))
        ctx.barrier()
        runner.train()
        return results

    last_checkpoint, step, interrupted = None, start_step, False
    bar = tqdm(
        total=config.steps,
        initial=start_step,
        disable=not ctx.is_main,
        unit="step",
        dynamic_ncols=True,
    )
    runner.train()
    with _StopRequest() as stop:
        while step < config.steps:
            started = time.perf_counter()
            lr = config.learning_rate(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batches = task.train_batches(
                step, ctx.rank, ctx.world_size, config.batch_size, config.micro_batch_size
            )
            step_targets = ctx.all_reduce(sum(b.num_targets for b in batches))
            loss_sum = 0.0
            for i, batch in enumerate(batches):
                with _gradient_sync(wrapped, enabled=i == len(batches) - 1):
                    with _autocast(ctx.device, cast):
                        loss = task.loss(runner, batch.to(ctx.device))
                    # ×world_size: DDP and FSDP average gradients over ranks; we want the sum.
                    (loss * (ctx.world_size / step_targets)).backward()
                loss_sum += float(loss.detach())
            grad_norm = _total_norm(
                nn.utils.clip_grad_norm_(wrapped.parameters(), config.grad_clip)
            )
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += int(step_targets)
            train_loss = ctx.all_reduce(loss_sum) / step_targets
            elapsed = time.perf_counter() - started
            row: dict[str, Any] = dict(
                step=step,
                loss=train_loss,
                lr=lr,
                grad_norm=grad_norm,
                tokens=tokens_seen,
                tokens_per_s=step_targets / elapsed,
            )
            if step % config.eval_every == 0 or step == config.steps:
                row.update(evaluate())
                if row.get("val_loss", math.inf) < best_val_loss:
                    best_val_loss = row["val_loss"]
                    _save_model(task, wrapped, full, out_dir / "best", ctx)
            if metrics:
                metrics.write(**row)
            bar.set_postfix(
                loss=f"{train_loss:.4f}", tok_s=f"{row['tokens_per_s']:,.0f}", refresh=False
            )
            bar.update(1)
            interrupted = ctx.all_reduce(stop.requested, op="max") > 0
            stopping = interrupted or step == config.stop_after
            if step % config.save_every == 0 or step == config.steps or stopping:
                last_checkpoint = save(step)
            if stopping:
                break
    bar.close()
    if step == config.steps:
        _save_model(task, wrapped, full, out_dir / "final", ctx)
    return TrainResult(step, last_checkpoint, best_val_loss, interrupted)


def train_and_report(
    model: nn.Module, task: Task, config: TrainConfig, out_dir: str | Path, ctx: Distributed
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


def _save_model(
    task: Task, wrapped: nn.Module, full: StateDictOptions, directory: Path, ctx: Distributed
) -> None:
    """The model alone (no training state), e.g. `best/` and `final/`."""
    state = get_model_state_dict(wrapped, options=full)  # collective under FSDP
    if ctx.is_main:
        tmp = temporary_sibling(directory)
        task.write_checkpoint(tmp, state)
        replace_directory(tmp, directory)
    ctx.barrier()


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def _gradient_sync(model: nn.Module, enabled: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of a step."""
    if enabled:
        yield
    elif hasattr(model, "no_sync"):  # DDP
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


def _total_norm(norm: Tensor) -> float:
    full_tensor = getattr(norm, "full_tensor", None)  # a DTensor under FSDP2
    return float(full_tensor() if full_tensor else norm)
