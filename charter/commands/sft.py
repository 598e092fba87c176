"""`charter sft`: supervised fine-tuning on demonstrations (`charter.train.sft`), with the held-out
task evaluation (`charter.eval.sft_tasks`) measured while it trains."""

from __future__ import annotations

import argparse
from pathlib import Path

from charter.train.settings import add_settings_arguments


def run(args: argparse.Namespace) -> None:
    from charter.eval.sft_tasks import evaluate_model
    from charter.train.settings import load_settings
    from charter.train.sft import fine_tune

    def generation_eval(model, tokenizer, records, max_new_tokens):
        return evaluate_model(model, tokenizer, records, max_new_tokens=max_new_tokens)

    settings = load_settings(args.config, args.set)
    fine_tune(args.base, args.data, args.heldout, args.out, settings, generation_eval)


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", required=True, type=Path, help="the model to fine-tune")
    parser.add_argument("--data", required=True, nargs="+", help="SFT JSONL files")
    parser.add_argument("--heldout", nargs="*", help="held-out SFT JSONL (loss and task metrics)")
    parser.add_argument("--out", required=True, type=Path, help="run directory")
    add_settings_arguments(parser, "[train], [sft]", "train.steps=100 sft.max_seq_len=512")
    parser.set_defaults(func=run)
