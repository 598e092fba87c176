"""`training_state/` inside a checkpoint: everything besides the weights that exact resume needs.

    training_state/progress.json   step, tokens seen, best validation loss, the run's config
    training_state/optimizer.pt    {trained model's name: its AdamW moments and step counts,
                                   keyed by parameter name}
    training_state/rng.pt          torch's RNG states
    training_state/task.pt         the task's own state, one entry per rank (tasks that have one)

Pretraining and SFT need no task state: their batches are a pure function of (seed, step), so
the step is the data cursor. A task whose batches are sampled from the live model (rollouts)
keeps its sampler's generator and any cursor in `task.pt`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from charter.files import read_json, write_json

STATE_DIR = "training_state"


@dataclass
class TrainingState:
    progress: dict[str, Any]
    optimizers: dict[str, dict[str, Any]]  # by trained model's name
    task: list[dict[str, Any]] | None  # by rank; None for a task without state


def save_training_state(checkpoint_dir: Path, state: TrainingState) -> None:
    directory = checkpoint_dir / STATE_DIR
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "progress.json", state.progress)
    torch.save(state.optimizers, directory / "optimizer.pt")
    if state.task is not None:
        torch.save(state.task, directory / "task.pt")
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, directory / "rng.pt")


def load_training_state(checkpoint_dir: Path) -> TrainingState:
    """The saved state; restores torch's RNG states as a side effect."""
    directory = checkpoint_dir / STATE_DIR
    if not directory.is_dir():
        raise FileNotFoundError(f"{checkpoint_dir}: no {STATE_DIR}/ to resume from")
    task_path = directory / "task.pt"
    state = TrainingState(
        progress=read_json(directory / "progress.json"),
        optimizers=torch.load(directory / "optimizer.pt", weights_only=True),
        task=torch.load(task_path, weights_only=True) if task_path.exists() else None,
    )
    rng = torch.load(directory / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete step checkpoints of a run, oldest first (temporary dirs start with '.')."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))


def remove_partial_checkpoints(run_dir: Path) -> None:
    """Delete temporary directories a killed run left half written (never a complete one)."""
    for root in (run_dir, run_dir / "checkpoints"):
        if root.is_dir():
            for path in root.glob(".*.tmp-*"):
                shutil.rmtree(path)
