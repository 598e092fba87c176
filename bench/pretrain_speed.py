"""Pretraining speed and quality: `charter pretrain` settings vs transformers' fp32 eager step.

1. Step throughput on one batch, interleaved, medians: `transformers.LlamaForCausalLM` (fp32,
   eager: its default) against Charter's model in fp32 eager, bf16 autocast, and bf16 autocast +
   torch.compile, on the same weights.
2. Quality at equal tokens: three real `charter pretrain` runs on prepared shards (`--data`),
   fp32 eager, bf16 autocast eager and bf16 autocast + compile, same seed, steps and batches;
   their tokens/s (median over steps after warm-up, from metrics.jsonl), validation loss at five
   points, and the final bits per byte.

    python bench/pretrain_speed.py --data runs/demo/data [--tier mid] [--steps 60] [--lr 1e-3]
        [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from foundation import train_step_tokens_per_s
from transformers import LlamaForCausalLM

from charter.checkpoint import save_checkpoint
from charter.config import preset
from charter.metrics import read_metrics
from charter.model import Transformer


def step_throughput(tier: str, batch: int, seq_len: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    config = preset(tier, vocab_size=8192)
    charter = Transformer(config)
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(charter, f"{tmp}/m")
        hf = LlamaForCausalLM.from_pretrained(f"{tmp}/m", dtype=torch.float32)
    compiled = torch.compile(charter)
    data = torch.randint(0, 8192, (batch, seq_len + 1))
    bf16 = torch.autocast("cpu", dtype=torch.bfloat16)
    runs = {
        "transformers fp32 eager": lambda: train_step_tokens_per_s(
            hf.train(), lambda m, x: m(x).logits, data, 5
        ),
        "charter fp32 eager": lambda: train_step_tokens_per_s(
            charter.train(), lambda m, x: m(x), data, 5
        ),
        "charter bf16 eager": lambda: train_step_tokens_per_s(
            charter.train(), lambda m, x: _cast(bf16, m, x), data, 5
        ),
        "charter bf16 compiled": lambda: train_step_tokens_per_s(
            compiled.train(), lambda m, x: _cast(bf16, m, x), data, 5
        ),
    }
    results: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            results.setdefault(name, []).append(run())
    return {name: statistics.median(values) for name, values in results.items()}


def _cast(autocast, model, x):
    with autocast:
        return model(x)


# `charter pretrain` settings compared: (dtype, compile)
PRETRAIN_SETTINGS = {
    "fp32 eager": ("fp32", False),
    "bf16 autocast, eager": ("bf16", False),
    "bf16 autocast + compile": ("bf16", True),
}


def pretrain_run(
    data: Path, out: Path, tier: str, steps: int, lr: float, seed: int, dtype: str, compile: bool
) -> dict[str, float]:
    settings = [
        f"model.preset={tier}",
        f"train.steps={steps}",
        f"train.lr={lr}",
        "train.batch_size=16",
        "train.micro_batch_size=8",
        "train.warmup_steps=10",
        f"train.eval_every={max(1, steps // 5)}",
        f"train.save_every={steps}",
        "data.seq_len=256",
        "data.eval_windows=64",
        f"train.seed={seed}",
        f"train.dtype={dtype}",
        f"train.compile={'true' if compile else 'false'}",
    ]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "charter.cli",
            "pretrain",
            "--data",
            str(data),
            "--out",
            str(out),
            "--set",
            *settings,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    rows = read_metrics(out / "metrics.jsonl")
    evals = [r for r in rows if "val_loss" in r]
    return {
        "tokens/s": statistics.median([r["tokens_per_s"] for r in rows][5:]),
        "val loss": evals[-1]["val_loss"],
        "val bpb": evals[-1]["val_bpb"],
        "curve": [(r["step"], r["val_loss"]) for r in evals],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="`charter data prepare` output")
    parser.add_argument("--tier", default="mid")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of the runs")
    parser.add_argument("--seed", type=int, default=0, help="model initialisation and data order")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; tier {args.tier}")
    speeds = step_throughput(args.tier, 8, 256, args.repeats)
    reference = speeds["transformers fp32 eager"]
    print(f"\n{'training step (8 × 256 tokens)':32s} {'tokens/s':>10s} {'vs transformers':>16s}")
    for name, value in speeds.items():
        print(f"{name:32s} {value:10.1f} {value / reference:15.2f}×")

    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            name: pretrain_run(
                args.data, Path(tmp) / f"run{i}", args.tier, args.steps, args.lr, args.seed, *how
            )
            for i, (name, how) in enumerate(PRETRAIN_SETTINGS.items())
        }
    print(
        f"\ncharter pretrain, {args.steps} steps × 16 × 256 tokens, seed {args.seed}, same batches:"
    )
    header = f"{'tokens/s':>10s} {'vs transformers':>16s} {'val loss':>9s} {'val bpb':>8s}"
    print(f"{'settings':28s} {header}")
    for name, row in runs.items():
        print(
            f"{name:28s} {row['tokens/s']:10.1f} {row['tokens/s'] / reference:15.2f}× "
            f"{row['val loss']:9.4f} {row['val bpb']:8.4f}"
        )
    print(f"\n{'step':>6s}" + "".join(f" {name:>24s}" for name in runs))
    curves = [row["curve"] for row in runs.values()]
    for points in zip(*curves, strict=True):
        print(f"{points[0][0]:6d}" + "".join(f" {loss:24.4f}" for _, loss in points))


if __name__ == "__main__":
    main()
