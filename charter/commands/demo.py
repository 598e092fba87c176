"""`charter demo`: `charter pipeline --preset demo`, the README's main job."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(demo: argparse.ArgumentParser) -> None:
    from charter.commands.pipeline import cmd_pipeline

    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="the run directory")
    demo.add_argument(
        "--var", action="append", default=[], metavar="NAME=VALUE", help="replace a [vars] value"
    )
    demo.set_defaults(func=cmd_pipeline, preset="demo", config=None)
