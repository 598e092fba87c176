"""`charter eval sft --model DIR --data FILE`: held-out task accuracy of a fine-tuned model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from charter.cli import log, verb_group


def cmd_eval_sft(args: argparse.Namespace) -> None:
    from charter.data.sft import read_sft
    from charter.eval.sft_tasks import evaluate
    from charter.files import write_json
    from charter.infer.backends import engine_options
    from charter.infer.spec import load_generator

    records = list(read_sft(args.data))[: args.limit]
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.thinking]
    log(f"evaluating {args.model} on {len(records)} held-out prompts × {len(modes)} mode(s)")
    generator = load_generator(
        args.model,
        max_batch_size=args.batch_size,
        max_len=2048,
        backend=args.backend,
        **engine_options(args),
    )
    with generator:
        report, attempts = evaluate(
            records, generator, max_new_tokens=args.max_new_tokens, thinking_modes=modes
        )
    report = {
        "model": str(args.model),
        "data": [str(p) for p in args.data],
        "generator": generator.describe(),
        **report,
    }
    if args.out:
        write_json(args.out, report)
    if args.details:
        args.details.parent.mkdir(parents=True, exist_ok=True)
        with open(args.details, "w", encoding="utf-8") as f:
            for attempt in attempts:
                f.write(json.dumps(attempt.to_json(), ensure_ascii=False) + "\n")
    print(json.dumps(report, indent=2))


def register(verbs: argparse._SubParsersAction) -> None:
    from charter.infer.backends import add_engine_arguments

    evaluate = verb_group(verbs, "eval", help="evaluate models")
    sft = evaluate.add_parser("sft", help="held-out accuracy on the synthetic SFT tasks")
    sft.add_argument("--model", required=True, help="a model spec (README: model specs)")
    sft.add_argument(
        "--data",
        required=True,
        nargs="+",
        type=Path,
        help="held-out SFT JSONL file(s) (sft-synth, benign-qa)",
    )
    sft.add_argument("--thinking", choices=["off", "on", "both"], default="both")
    sft.add_argument("--max-new-tokens", type=int, default=256)
    sft.add_argument("--batch-size", type=int, default=8)
    sft.add_argument("--limit", type=int, help="evaluate only the first N records")
    sft.add_argument("--out", type=Path, help="write the report as JSON here")
    sft.add_argument("--details", type=Path, help="write every attempt as JSONL here")
    add_engine_arguments(sft)
    sft.set_defaults(func=cmd_eval_sft)
