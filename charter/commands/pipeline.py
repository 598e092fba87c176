"""`charter pipeline`: every stage in order, resumable (`charter.pipeline`), then the report
(`charter.report`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_pipeline(args: argparse.Namespace) -> None:
    from charter.pipeline import load_pipeline, preset_path, run_pipeline
    from charter.report import write_report

    source = args.config or preset_path(args.preset)
    out = args.out or Path("runs") / (args.preset if not args.config else source.stem)
    overrides = dict(_assignment(text) for text in args.var)
    pipeline = load_pipeline(source, out, overrides)
    run_pipeline(pipeline, out)
    paths = write_report(out)
    print(f"\nreport: {paths['html']} (and {paths['md'].name}, figures in {paths['figures']})")
    candidate = pipeline.report.get("candidate")
    if candidate:
        print(f"talk to the model: charter chat --model {candidate}")
        print(f"serve it: charter serve --model {candidate}  (add --allow-ungated if its gate "
              "failed: the report says)")  # fmt: skip


def _assignment(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals:
        raise ValueError(f"--var {text!r}: write NAME=VALUE")
    return name, value


def register(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--preset",
        default="demo",
        help="micro (CI, under a minute), demo (from scratch) or smollm2",
    )
    which.add_argument("--config", type=Path, help="your own pipeline TOML instead of a preset")
    parser.add_argument("--out", type=Path, help="the run directory (default: runs/PRESET)")
    parser.add_argument(
        "--var", action="append", default=[], metavar="NAME=VALUE", help="replace a [vars] value"
    )
    parser.set_defaults(func=cmd_pipeline)
