"""Every `charter` verb: the verb table, and one module per verb (or verb group) here that adds
its arguments and runs it, thin: parse, call the library, print.

Each module has `register(verbs)`, which adds the verbs the table gives it to the top-level
subparsers and sets `func` on each to a handler taking the parsed arguments. Modules import the
library inside their handlers, so `charter --help` stays quick. When a training verb finishes,
`main` records its stage in the final checkpoint's `lineage.json` (`charter.data.lineage`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys

# The verbs, in the order `charter --help` lists them: verb → (module here, what it does).
VERBS: dict[str, tuple[str, str]] = {
    "data": ("data", "obtain corpora, token shards, SFT data and judge data"),
    "tokenizer": ("tokenizer", "train a BPE tokenizer"),
    "pretrain": ("pretrain", "pretrain a model on prepared token shards"),
    "sft": ("sft", "supervised fine-tuning on demonstrations"),
    "judge": ("judge", "train and run the safety judge"),
    "cai": ("cai", "Constitutional AI: prompts, SL-CAI revisions and RL-CAI preference labels"),
    "dpo": ("dpo", "Direct Preference Optimization of a policy on preference pairs"),
    "rm": ("rm", "train a Bradley–Terry reward model on preference pairs and score conversations"),
    "ppo": ("ppo", "PPO with a KL penalty to a frozen reference, against a reward model"),
    "eval": ("eval", "evaluate models: the suite (→ eval.json) and single studies"),
    "gate": ("gate", "the release gate: eval.json against a release policy → gate.json, card.md"),
    "redteam": ("redteam", "automated red-teaming: attacks, judged findings, success rates"),
    "redteam-loop": ("redteam_loop", "rounds of red-team → SL-CAI update → red-team, ASR by round"),
    "generate": ("generate", "one assistant turn (prints only the completion)"),
    "chat": ("chat", "chat with a model in the terminal"),
    "serve": ("serve", "serve models over the Anthropic Messages API, OpenAI chat and a web chat"),
    "feedback": ("feedback", "export the comparisons people made on the server's /compare page"),
    "import": ("imports", "import a GGUF file or a Hugging Face Llama directory"),
    "export": ("export", "export a checkpoint for other runtimes"),
    "info": ("info", "describe a model directory"),
    "plot": ("plot", "plot a metric of one or more metrics.jsonl files"),
    "pipeline": ("pipeline", "every stage in order, resumable, then report.html: --preset NAME"),
    "report": ("report", "draw a pipeline run's report again"),
    "demo": ("demo", "the demo pipeline (charter pipeline --preset demo)"),
}


# The verbs that train a policy into OUT/final, with the argument naming the checkpoint each starts
# from: OUT/final's lineage (charter.data.lineage) is that checkpoint's stages, then this run's.
TRAINING_VERBS: dict[str, str | None] = {
    "pretrain": None,
    "sft": "base",
    "dpo": "base",
    "ppo": "policy",
}
DATA_ARGUMENTS = ("data", "heldout", "prompts")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="charter", description="Charter: every stage of a Claude-style assistant system."
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    for verb, (module, help) in VERBS.items():
        command = verbs.add_parser(verb, help=help)
        importlib.import_module(f"charter.commands.{module}").register(command)
    return parser


def record_lineage(args: argparse.Namespace, argv: list[str]) -> None:
    """Add a finished training run's stage to the lineage of its final checkpoint."""
    from charter.data.lineage import record_stage
    from charter.train.settings import load_settings

    final = args.out / "final"
    if not final.is_dir() or os.environ.get("RANK", "0") != "0":  # interrupted, or not rank 0
        return
    data: list = []
    for name in DATA_ARGUMENTS:
        value = getattr(args, name, None) or []
        data += value if isinstance(value, list) else [value]
    base = TRAINING_VERBS[args.verb]
    settings = {"config": str(args.config) if args.config else None}
    settings.update(load_settings(args.config, args.set))
    record_stage(final, args.verb, "charter " + shlex.join(argv), settings, data,
                 getattr(args, base) if base else None)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
        if args.verb in TRAINING_VERBS:
            record_lineage(args, argv)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"charter {args.verb}: error: {e}") from e
