"""`charter pretrain`: pretrain a model on prepared token shards (`charter.train.pretrain`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from charter.train.settings import add_settings_arguments


def run(args: argparse.Namespace) -> None:
    from charter.train.pretrain import pretrain
    from charter.train.settings import load_settings

    pretrain(args.data, args.out, load_settings(args.config, args.set))


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="`charter data prepare` output")
    parser.add_argument("--out", required=True, type=Path, help="run directory")
    add_settings_arguments(parser, "[model], [train], [data]", "train.steps=100 model.preset=mid")
    parser.set_defaults(func=run)
