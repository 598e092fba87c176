"""`charter redteam`: one automated red-team round (`charter.align.redteam`): attacks made from
seed requests by the chosen strategies, sent to the target, judged, stored in the findings
database, and the attack success rates printed per strategy and category.

    charter redteam --target runs/sft/final --judge runs/judge/best \\
        --seeds cache/cai/redteam.jsonl --heldout-seeds cache/cai/redteam-eval.jsonl \\
        --db runs/redteam/findings.sqlite --round 1 --strategies all \\
        --feed runs/redteam/round-1.jsonl --out runs/redteam/asr-1.json

The training seeds' attacks run first, then the held-out seeds' (less any attack text already
fed to training). A rerun resumes: what the database holds for this target and round is not
sent again. `--feed` writes this round's successful training attacks as a prompt file.
`--guard FILE` attacks the target behind the safety guard that FILE describes
(`charter.safety.guard`), stored under the target's name + "+guard".
"""

from __future__ import annotations

import argparse
import json
from contextlib import ExitStack
from pathlib import Path

from charter.log import log

# KV-cache positions per row: a many-shot attack is under 600 tokens besides its seed, and a
# multi-turn one holds three user turns and two replies.
REDTEAM_CONTEXT = 2048


def _target(args: argparse.Namespace):
    """The model under attack, and what the attacks are sent to: the model itself, or with
    `--guard` the model behind that safety guard (whose close closes the model too)."""
    from charter.infer.spec import generator_from_arguments

    model = generator_from_arguments(args.target, args, REDTEAM_CONTEXT)
    if args.guard is None:
        return model, model
    from charter.safety.guard import guard_generator

    try:
        return model, guard_generator(model, args.guard, args.judge_device)
    except BaseException:
        model.close()
        raise


def cmd_redteam(args: argparse.Namespace) -> None:
    from charter.align.judge import Judge
    from charter.align.redteam.findings import HELDOUT, TRAIN, Findings
    from charter.align.redteam.run import asr_report, feed, format_asr, heldout_attacks, run_round
    from charter.align.redteam.strategies import make_attacks, parse_strategies
    from charter.data.prompt_sets import draw, read_prompt_file
    from charter.files import write_json
    from charter.infer.spec import generator_from_arguments

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be ≥ 1, got {args.limit}")
    if args.seeds is None and args.heldout_seeds is None:
        raise ValueError("give --seeds (training attacks), --heldout-seeds, or both")
    if args.feed is not None and args.seeds is None:
        raise ValueError("--feed writes successful training attacks: it needs --seeds")
    strategies = parse_strategies(args.strategies, attacker=args.attacker is not None)
    seed_files = {TRAIN: args.seeds, HELDOUT: args.heldout_seeds}
    seeds = {split: read_prompt_file(path) for split, path in seed_files.items() if path}
    drawn = {split: draw(s, args.limit, args.seed, split) for split, s in seeds.items()}
    judge = Judge.load(args.judge, device=args.judge_device)
    with ExitStack() as stack:
        model, target = _target(args)
        stack.enter_context(target)
        attacker = None
        if args.attacker == args.target:
            attacker = model  # one model plays both parts, loaded once (and never guarded)
        elif args.attacker is not None:
            attacker = stack.enter_context(
                generator_from_arguments(args.attacker, args, REDTEAM_CONTEXT)
            )
        name = args.target_name or (f"{model.name}+guard" if args.guard else model.name)
        findings = stack.enter_context(Findings(args.db))
        rounds = {}
        for split, split_seeds in drawn.items():
            if split == TRAIN:
                attacks, not_made = make_attacks(split_seeds, strategies, attacker)
            else:
                attacks, not_made = heldout_attacks(split_seeds, strategies, findings, attacker)
            log(f"{split}: {len(attacks)} attacks from {len(split_seeds)} seeds on {name}")
            summary = run_round(
                target, judge, attacks, findings,
                round=args.round, split=split, target_name=name, judge_name=str(args.judge),
                max_tokens=args.max_tokens, batch_size=args.batch_size, threshold=args.threshold,
            )  # fmt: skip
            rounds[split] = {**summary, "not_made": dict(not_made)}
        report = {
            "target": name,
            "generator": target.describe(),
            "judge": str(args.judge),
            "round": args.round,
            "strategies": strategies,
            "attacker": args.attacker,
            "limit_per_file": args.limit,
            "seed": args.seed,
            "max_tokens": args.max_tokens,
            "threshold": args.threshold,
            "runs": rounds,
            "asr": asr_report(findings, args.round, name),
        }
        if args.feed is not None:
            fed = feed(findings, args.feed, round=args.round, target=name, seeds=seeds[TRAIN])
            report["fed"] = {"path": str(args.feed), "prompts": fed}
            log(f"{fed} successful training attacks -> {args.feed}")
    log(json.dumps(rounds))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, report)
    print(format_asr(report["asr"]))


def register(parser: argparse.ArgumentParser) -> None:
    from charter.infer.backends import add_engine_arguments

    parser.add_argument("--target", required=True, help="the model spec to attack")
    parser.add_argument(
        "--target-name", help="its name in the database (default: the spec's; +guard if guarded)"
    )
    parser.add_argument(
        "--guard", type=Path, help="attack it behind this safety guard (a safety TOML)"
    )
    parser.add_argument("--judge", required=True, type=Path, help="a trained judge directory")
    parser.add_argument("--judge-device", default="cpu", help="where the judge runs (cpu, cuda)")
    parser.add_argument("--seeds", type=Path,
                        help="training seeds (charter cai prompts: redteam.jsonl)")  # fmt: skip
    parser.add_argument("--heldout-seeds", type=Path,
                        help="held-out seed prompts (redteam-eval.jsonl)")  # fmt: skip
    parser.add_argument("--db", required=True, type=Path, help="the findings SQLite database")
    parser.add_argument("--round", required=True, type=int)
    parser.add_argument("--strategies", default="all",
                        help="comma-separated strategy names, or all (default)")  # fmt: skip
    parser.add_argument("--attacker", help="a model spec that rewrites seeds (strategy attacker)")
    parser.add_argument("--limit", type=int,
                        help="at most N seeds per file, drawn at random with --seed")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=128, help="of each reply")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="judge response_harm from which a reply is a success")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=16, help="attacks sent together")
    parser.add_argument("--feed", type=Path,
                        help="write the successful training attacks here (JSONL)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="the JSON report")
    add_engine_arguments(parser)
    parser.set_defaults(func=cmd_redteam)
