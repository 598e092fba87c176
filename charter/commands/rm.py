"""`charter rm`: train a Bradley–Terry reward model on preference pairs and score replies with it
(`charter.train.reward`).

    charter rm train --base DIR --data hh-train.jsonl --data rl-cai.jsonl:2 \
        --heldout hh-heldout.jsonl --out RUN [--config TOML] [--set rm.margin=0.5 …]
    charter rm score --rm RUN/best rows.jsonl --out scored.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from charter.train.settings import add_settings_arguments


def weighted_file(text: str) -> tuple[Path, float]:
    """`FILE` or `FILE:WEIGHT` (weight 1 by default; a suffix that is not a number is part of
    the file name)."""
    name, sep, weight = text.rpartition(":")
    if sep and name:
        try:
            return Path(name), float(weight)
        except ValueError:
            pass
    return Path(text), 1.0


def run_train(args: argparse.Namespace) -> None:
    from charter.train.reward import train_reward_model
    from charter.train.settings import load_settings

    settings = load_settings(args.config, args.set)
    train_reward_model(args.base, args.data, args.heldout, args.out, settings)


def run_score(args: argparse.Namespace) -> None:
    from charter.infer.backends import DTYPES
    from charter.train.reward import RewardModel, score_file

    model = RewardModel.load(args.rm, dtype=DTYPES[args.dtype])
    count = score_file(model, args.rows, args.out, args.batch_size)
    print(f"{count} rows scored → {args.out}", file=sys.stderr)


def register(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    train = actions.add_parser("train", help="train a reward model on preference pairs")
    train.add_argument(
        "--base", required=True, type=Path, help="the checkpoint to start from (e.g. the policy)"
    )
    train.add_argument(
        "--data",
        required=True,
        action="append",
        type=weighted_file,
        metavar="FILE[:WEIGHT]",
        help="preference JSONL, repeatable; pairs are drawn from each in proportion to its "
        "weight (default 1)",
    )
    train.add_argument(
        "--heldout",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="held-out preference JSONL, repeatable (loss; accuracy and margin per file)",
    )
    train.add_argument("--out", required=True, type=Path, help="run directory")
    add_settings_arguments(train, "[train], [rm]", "train.steps=200 rm.margin=0.5")
    train.set_defaults(func=run_train)
    score = actions.add_parser("score", help="score replies with a trained reward model")
    score.add_argument("--rm", required=True, type=Path, help="a trained reward model directory")
    score.add_argument(
        "rows", type=Path, help="JSONL rows: prompt and response, or messages ending with a reply"
    )
    score.add_argument("--out", required=True, type=Path, help="JSONL of the rows and rewards")
    score.add_argument("--batch-size", type=int, default=8, help="rows per forward pass")
    score.add_argument(
        "--dtype", choices=("fp32", "bf16"), default="fp32", help="the model's precision"
    )
    score.set_defaults(func=run_score)
