"""`charter gate MODEL --policy FILE`: the release gate (`charter.eval.gate`) on a checkpoint's
`eval.json`; writes `gate.json` and the model card `card.md` beside the checkpoint, and exits
non-zero, naming the failed metrics, when the model does not pass."""

from __future__ import annotations

import argparse
from pathlib import Path

from charter.log import log


def cmd_gate(args: argparse.Namespace) -> None:
    from charter.checkpoint import load_config
    from charter.config import num_parameters
    from charter.eval.card import CARD_FILE, model_card
    from charter.eval.gate import EVAL_FILE, GATE_FILE, gate, load_policy
    from charter.files import read_json, resolve_directory, write_json

    checkpoint = resolve_directory(args.model)
    evaluation = args.eval or checkpoint / EVAL_FILE
    if not evaluation.exists():
        raise FileNotFoundError(f"{evaluation}: no such file (run charter eval {args.model} first)")
    policy = load_policy(args.policy)
    parameters = num_parameters(load_config(checkpoint))
    report = read_json(evaluation)
    verdict = gate(checkpoint, evaluation, report, policy, parameters, args.tier)
    write_json(checkpoint / GATE_FILE, verdict)
    card = checkpoint / CARD_FILE
    card.write_text(model_card(checkpoint, report, verdict), encoding="utf-8")
    for c in verdict["checks"]:
        result = "pass" if c["passed"] else f"FAIL: {c['reason']}"
        print(f"{c['metric']:40s} {c['threshold']:28s} {result}")
    log(f"{checkpoint / GATE_FILE} and {card} written")
    if not verdict["passed"]:
        raise SystemExit(
            f"charter gate: {checkpoint} fails {policy.name} (tier {verdict['tier']}) on: "
            + ", ".join(verdict["failed"])
        )
    print(f"{checkpoint} passes {policy.name} (tier {verdict['tier']})")


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a checkpoint directory with its eval.json")
    parser.add_argument(
        "--policy",
        type=Path,
        help="the release policy TOML (default: the shipped one)",
    )
    parser.add_argument("--eval", type=Path, help="the evaluation (default: MODEL/eval.json)")
    parser.add_argument("--tier", help="hold the model to this tier, not the one its size picks")
    parser.set_defaults(func=cmd_gate)
