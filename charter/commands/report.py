"""`charter report RUN`: a pipeline run's report drawn again (`charter.report`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_report(args: argparse.Namespace) -> None:
    from charter.report import write_report

    paths = write_report(args.run)
    print(f"report: {paths['html']} (and {paths['md'].name})")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", type=Path, help="a pipeline's run directory")
    parser.set_defaults(func=cmd_report)
