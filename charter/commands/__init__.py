"""Every `charter` verb: the verb table, and one module per verb (or verb group) here that adds
its arguments and runs it, thin: parse, call the library, print.

Each module has `register(verbs)`, which adds the verbs the table gives it to the top-level
subparsers and sets `func` on each to a handler taking the parsed arguments. Modules import the
library inside their handlers, so `charter --help` stays quick.
"""

from __future__ import annotations

import argparse
import importlib

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
    "demo": ("demo", "run the whole pipeline on the embedded defaults"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="charter", description="Charter: every stage of a Claude-style assistant system."
    )
    verbs = parser.add_subparsers(dest="verb", required=True)
    for verb, (module, help) in VERBS.items():
        command = verbs.add_parser(verb, help=help)
        importlib.import_module(f"charter.commands.{module}").register(command)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"charter {args.verb}: error: {e}") from e
