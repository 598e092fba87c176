"""`charter tokenizer train`: a byte-level BPE on documents, measured on held-out ones."""

from __future__ import annotations

import argparse
from pathlib import Path

from charter.log import log


def cmd_tokenizer_train(args: argparse.Namespace) -> None:
    from charter.chat import CHAT_TEMPLATE
    from charter.data.documents import python_docstrings, read_documents
    from charter.tokenizer import Tokenizer, bytes_per_token

    documents = list(read_documents(args.input) if args.input else python_docstrings())
    texts = [d.text for d in documents]
    # Every k-th document is held out, so the figure measures text the merges never saw.
    every = max(2, round(1 / args.held_out_fraction))
    held_out = texts[::every]
    train = [t for i, t in enumerate(texts) if i % every]
    if not train or not held_out:
        raise SystemExit(f"need at least 2 documents to train and measure, got {len(texts)}")
    log(
        f"training a {args.vocab_size}-token BPE on {len(train)} documents "
        f"({sum(len(t.encode()) for t in train) / 1e6:.2f} MB)"
    )
    tokenizer = Tokenizer.train(train, vocab_size=args.vocab_size, chat_template=CHAT_TEMPLATE)
    tokenizer.save(args.out)
    ratio = bytes_per_token(tokenizer, held_out)
    print(f"vocab size: {tokenizer.vocab_size}")
    print(f"held-out documents: {len(held_out)}")
    print(f"held-out bytes per token: {ratio:.3f}")
    print(f"saved: {args.out}")


def register(parser: argparse.ArgumentParser) -> None:
    tokenizer_verbs = parser.add_subparsers(dest="tokenizer_verb", required=True)
    train = tokenizer_verbs.add_parser("train", help="train a byte-level BPE tokenizer")
    train.add_argument(
        "--input",
        nargs="*",
        help=".txt/.md/.jsonl/.parquet files or directories "
        "(default: the Python standard library's docstrings)",
    )
    train.add_argument("--vocab-size", type=int, default=8192)
    train.add_argument("--held-out-fraction", type=float, default=0.05)
    train.add_argument("--out", required=True, type=Path)
    train.set_defaults(func=cmd_tokenizer_train)
