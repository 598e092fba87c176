"""`charter dpo`: Direct Preference Optimization of a policy on preference pairs
(`charter.train.dpo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from charter.train.settings import add_settings_arguments


def run(args: argparse.Namespace) -> None:
    from charter.train.dpo import train_dpo
    from charter.train.settings import load_settings

    settings = load_settings(args.config, args.set)
    train_dpo(args.base, args.data, args.heldout or [], args.out, settings)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base", required=True, type=Path, help="the policy to train (also the reference)"
    )
    parser.add_argument("--data", required=True, nargs="+", type=Path, help="preference JSONL")
    parser.add_argument(
        "--heldout",
        nargs="*",
        type=Path,
        help="held-out preference JSONL (loss and reward metrics)",
    )
    parser.add_argument("--out", required=True, type=Path, help="run directory")
    add_settings_arguments(parser, "[train], [dpo]", "train.steps=100 dpo.beta=0.2")
    parser.set_defaults(func=run)
