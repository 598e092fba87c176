"""`charter demo`: the whole pipeline on the embedded defaults (`charter.pipeline`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_demo(args: argparse.Namespace) -> None:
    from charter.commands import main
    from charter.pipeline import SAMPLE_PROMPTS, demo_stages, run_stages

    stages = demo_stages(args.work, args.cache, args.sft_examples)
    run_stages(stages)
    tuned = args.work / "sft" / "final"
    for prompt in SAMPLE_PROMPTS:
        print(f"\n> {prompt}")
        main(
            [
                "generate",
                "--model",
                str(tuned),
                "--prompt",
                prompt,
                "--temperature",
                "0",
                "--max-new-tokens",
                "80",
            ]
        )
    print(f"\nartifacts in {args.work}; talk to the model: charter chat --model {tuned}")


def register(demo: argparse.ArgumentParser) -> None:
    demo.add_argument("--work", type=Path, default=Path("runs/demo"), help="artifacts go here")
    demo.add_argument("--cache", type=Path, default=Path("cache"), help="downloads go here")
    demo.add_argument("--sft-examples", type=int, default=4000)
    demo.set_defaults(func=cmd_demo)
