"""`charter plot`: a metric of one or more metrics.jsonl files (`charter.eval.plots`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("metrics", nargs="+", type=Path)
    parser.add_argument("--y", required=True, help="metric to plot, e.g. val_bpb")
    parser.add_argument("--x", default="tokens", help="x axis (default: tokens)")
    parser.add_argument("--label", nargs="*", help="one label per file")
    parser.add_argument("--title")
    parser.add_argument("--out", required=True, type=Path, help="PNG file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from charter.eval.plots import plot_metrics

    plot_metrics(args.metrics, args.y, args.out, args.x, args.label, args.title)
