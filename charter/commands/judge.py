"""`charter judge`: train the safety judge (`charter.train.judge`) and score rows with it
(`charter.align.judge`).

    charter judge train --backbone DIR --data train.jsonl --heldout heldout.jsonl --out RUN
    charter judge score --judge RUN/best rows.jsonl --out scored.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from charter.train.settings import add_settings_arguments


def run_train(args: argparse.Namespace) -> None:
    from charter.train.judge import train_judge
    from charter.train.settings import load_settings

    settings = load_settings(args.config, args.set)
    train_judge(args.backbone, args.data, args.heldout, args.out, settings)


def run_score(args: argparse.Namespace) -> None:
    from charter.align.judge import Judge, score_file

    judge = Judge.load_as(args.judge, args.dtype)
    count = score_file(judge, args.rows, args.out, args.batch_size)
    print(f"{count} rows scored → {args.out}", file=sys.stderr)


def register(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    train = actions.add_parser("train", help="train a judge on labelled rows")
    train.add_argument("--backbone", required=True, type=Path, help="the checkpoint to start from")
    train.add_argument(
        "--data", required=True, type=Path, help="judge JSONL (charter data judge-sources)"
    )
    train.add_argument("--heldout", type=Path, help="held-out judge JSONL (loss, accuracy, AUC)")
    train.add_argument("--out", required=True, type=Path, help="run directory")
    add_settings_arguments(train, "[train], [judge]", "train.steps=200 judge.freeze_layers=20")
    train.set_defaults(func=run_train)
    score = actions.add_parser("score", help="score rows with a trained judge")
    score.add_argument("--judge", required=True, type=Path, help="a trained judge directory")
    score.add_argument("rows", type=Path, help="JSONL rows: prompt (+ response) or messages")
    score.add_argument("--out", required=True, type=Path, help="JSONL of the rows and scores")
    score.add_argument("--batch-size", type=int, default=8, help="rows per forward pass")
    score.add_argument(
        "--dtype",
        choices=("fp32", "bf16", "int8"),
        default="fp32",
        help="the judge's precision (int8: int8 linear layers, compiled, CPU only)",
    )
    score.set_defaults(func=run_score)
