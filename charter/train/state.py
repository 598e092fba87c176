"""`training_state/` inside a checkpoint: everything besides the weights that exact resume needs.

    training_state/progress.json   step, tokens seen, best validation loss, the run's config
    training_state/optimizer.pt    AdamW moments and step counts, keyed by parameter name
    training_state/rng.pt          torch's RNG states

Data order needs no state of its own: batches are a pure function of (seed, step), so the
step is the data cursor.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from charter.files import read_json, write_json

STATE_DIR = "training_state"


def save_training_state(
    checkpoint_dir: Path, progress: dict[str, Any], optimizer_state: dict[str, Any]
) -> None:
    directory = checkpoint_dir / STATE_DIR
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "progress.json", progress)
    torch.save(optimizer_state, directory / "optimizer.pt")
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, directory / "rng.pt")


def load_training_state(checkpoint_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(progress, optimizer_state); restores the RNG states as a side effect."""
    directory = checkpoint_dir / STATE_DIR
    if not directory.is_dir():
        raise FileNotFoundError(f"{checkpoint_dir}: no {STATE_DIR}/ to resume from")
    progress = read_json(directory / "progress.json")
    optimizer_state = torch.load(directory / "optimizer.pt", weights_only=True)
    rng = torch.load(directory / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return progress, optimizer_state


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
