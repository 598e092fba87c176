"""`charter redteam-loop`: rounds of red-team → feed → SL-CAI update → red-team again
(`charter.redteam_loop`), with held-out ASR, over-refusal and benign QA per round.

    charter redteam-loop --model /tmp/smollm2 --judge runs/judge-v2/best --writer /tmp/qwen05 \\
        --seeds cache/cai/redteam.jsonl --heldout-seeds cache/cai/redteam-eval.jsonl \\
        --helpful runs/cai/select-smollm2-helpful.jsonl --benign-qa cache/cai/benign-qa.jsonl \\
        --sft-config charter/configs/smollm2-cai.toml --rounds 3 --limit 20 --out runs/loop
"""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_redteam_loop(args: argparse.Namespace) -> None:
    from charter.redteam_loop import LoopSettings, format_loop, run_loop

    settings = LoopSettings(
        model=args.model,
        judge=args.judge,
        writer=args.writer,
        seeds=args.seeds,
        heldout_seeds=args.heldout_seeds,
        helpful=args.helpful,
        benign_qa=args.benign_qa,
        sft_config=args.sft_config,
        rounds=args.rounds,
        strategies=args.strategies,
        limit=args.limit,
        max_tokens=args.max_tokens,
        safe_prompts=args.safe_prompts,
        safe_limit=args.safe_limit,
        backend=args.backend,
        sft_set=args.set,
    )
    report = run_loop(settings, args.out)
    print(format_loop(report))
    print(f"-> {args.out / 'loop.json'}")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="the round-0 checkpoint")
    parser.add_argument("--judge", required=True, help="a trained judge directory (verdicts)")
    parser.add_argument(
        "--writer",
        required=True,
        help="the model spec that writes the declines (the policy or a critic)",
    )
    parser.add_argument("--seeds", required=True, type=Path, help="training seed prompts")
    parser.add_argument("--heldout-seeds", required=True, type=Path, help="held-out seed prompts")
    parser.add_argument(
        "--helpful",
        required=True,
        nargs="+",
        type=Path,
        help="`cai select` files of helpful answers, mixed into each update",
    )
    parser.add_argument("--benign-qa", required=True, type=Path, help="benign QA records")
    parser.add_argument("--sft-config", required=True, type=Path, help="each update's settings")
    parser.add_argument("--set", nargs="*", default=[], help="overrides of the SFT settings")
    parser.add_argument("--rounds", type=int, default=3, help="updates (default 3)")
    parser.add_argument("--strategies", default="all")
    parser.add_argument("--limit", type=int, help="seeds per file and round, drawn at random")
    parser.add_argument("--max-tokens", type=int, default=128, help="of each red-team reply")
    parser.add_argument(
        "--safe-prompts",
        nargs="*",
        default=[],
        help="prompt files for over-refusal (default: XSTest's safe prompts)",
    )
    parser.add_argument(
        "--safe-limit", type=int, help="over-refusal prompts per set and round, drawn at random"
    )
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "llamacpp"])
    parser.add_argument("--out", required=True, type=Path, help="the loop's directory")
    parser.set_defaults(func=cmd_redteam_loop)
