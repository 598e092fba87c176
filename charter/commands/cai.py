"""`charter cai`: Constitutional AI's data stages (`charter.align.sl_cai`, `.cai_compare`,
`.contrast_pairs`).

    charter cai prompts --judge-data cache/judge --out cache/cai
    charter cai revise  --policy MODEL [--reviser MODEL] --prompts P.jsonl --out chains.jsonl
    charter cai select  --model MODEL --prompts P.jsonl --out picks.jsonl
    charter cai sft     chains.jsonl picks.jsonl --out sl-cai.jsonl
    charter cai report  chains.jsonl
    charter cai compare --policy MODEL --feedback MODEL --prompts P.jsonl --out prefs.jsonl
    charter cai contrast --targets picks.jsonl --replies replies.jsonl --out DIR

MODEL is a model spec (README: model specs): a checkpoint, or a remote Messages endpoint.
`--constitution FILE` replaces the packaged constitution everywhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

# Positions of KV cache per row: few-shot examples, a response, a critique and a revision.
CAI_CONTEXT = 2048


def _generator(spec: str, args: argparse.Namespace):
    from charter.infer.spec import generator_from_arguments

    return generator_from_arguments(spec, args, CAI_CONTEXT)


@contextmanager
def _second(spec: str | None, first, first_spec: str, args: argparse.Namespace):
    """The generator for `spec`, or `first` itself where `spec` is None or names the same model
    (so one model plays both parts without being loaded twice)."""
    if spec in (None, first_spec):
        yield first
    else:
        with _generator(spec, args) as second:
            yield second


def _prompts(args: argparse.Namespace):
    from charter.data.prompt_sets import draw, read_prompt_file

    prompts = [p for path in args.prompts for p in read_prompt_file(path)]
    return draw(prompts, args.limit, args.seed, "cai")


def _report(outcomes, out: Path) -> None:
    counts = ", ".join(f"{n} {reason}" for reason, n in outcomes.most_common())
    print(f"{counts} -> {out}", file=sys.stderr)


def cmd_prompts(args: argparse.Namespace) -> None:
    from charter.data.cai_prompts import build_cai_prompts, write_cai_prompts
    from charter.eval.dangerous import dangerous_probes

    prompts = build_cai_prompts(
        args.judge_data, args.general, args.max_chars, args.seed, dangerous_probes()
    )
    paths = write_cai_prompts(prompts, args.out)
    print(json.dumps(prompts.report(), indent=1))
    print(f"-> {', '.join(str(p) for p in paths.values())}")


def cmd_revise(args: argparse.Namespace) -> None:
    from charter.align.constitution import load_constitution
    from charter.align.sl_cai import ReviseSettings, revise_chains

    settings = ReviseSettings(
        rounds=args.rounds,
        max_tokens=args.max_new_tokens,
        critique_tokens=args.critique_tokens,
        temperature=args.temperature,
        examples=args.examples,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    constitution = load_constitution(args.constitution)
    prompts = _prompts(args)
    with (
        _generator(args.policy, args) as policy,
        _second(args.reviser, policy, args.policy, args) as reviser,
    ):
        outcomes = revise_chains(prompts, policy, reviser, constitution, args.out, settings)
    _report(outcomes, args.out)


def cmd_select(args: argparse.Namespace) -> None:
    from charter.align.constitution import load_constitution
    from charter.align.sl_cai import SelectSettings, select_responses
    from charter.eval.refusal import is_refusal

    settings = SelectSettings(
        samples=args.samples,
        max_tokens=args.max_new_tokens,
        temperature=args.temperature,
        examples=args.examples,
        decline=tuple(args.decline) if args.decline else None,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    constitution = load_constitution(args.constitution)
    with _generator(args.model, args) as writer:
        outcomes = select_responses(
            _prompts(args),
            writer,
            constitution,
            is_refusal,
            args.out,
            settings,
        )
    _report(outcomes, args.out)


def _rows(paths: list[Path]) -> list[dict]:
    from charter.data.sft import jsonl_lines

    return [row for path in paths for _, row in jsonl_lines(path)]


def cmd_sft(args: argparse.Namespace) -> None:
    from charter.align.sl_cai import sft_records
    from charter.data.sft import write_sft

    records, outcomes = sft_records(_rows(args.chains), args.max_harmful, args.seed)
    write_sft(records, args.out)
    _report(outcomes, args.out)


def cmd_report(args: argparse.Namespace) -> None:
    from charter.align.sl_cai import round_report
    from charter.eval.refusal import is_refusal

    report = round_report(_rows(args.chains), is_refusal)
    print(json.dumps({"detector": "refusal patterns", "rounds": report}, indent=1))


def cmd_compare(args: argparse.Namespace) -> None:
    from charter.align.cai_compare import CompareSettings, label_pairs
    from charter.align.constitution import load_constitution

    settings = CompareSettings(
        principles_per_pair=args.principles,
        temperature=args.temperature,
        max_tokens=args.max_new_tokens,
        method=args.method,
        votes=args.votes,
        reasoning_tokens=args.reasoning_tokens,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    principles = load_constitution(args.constitution).principles
    prompts = [p.text for p in _prompts(args)]
    with (
        _generator(args.policy, args) as policy,
        _second(args.feedback, policy, args.policy, args) as judge,
    ):
        outcomes = label_pairs(prompts, policy, judge, principles, args.out, settings)
    _report(outcomes, args.out)


def cmd_contrast(args: argparse.Namespace) -> None:
    from charter.align.contrast_pairs import contrast_pairs
    from charter.eval.refusal import is_refusal
    from charter.files import write_jsonl

    splits, dropped = contrast_pairs(_rows(args.targets), _rows(args.replies), is_refusal)
    args.out.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        write_jsonl(args.out / f"contrast-{split}.jsonl", rows)
        kinds = Counter(row["source"] for row in rows)
        print(
            f"{len(rows)} {split} pairs ({dict(kinds)}) -> {args.out / f'contrast-{split}.jsonl'}"
        )
    print(json.dumps({"left out": dropped}), file=sys.stderr)


def _generation_arguments(parser: argparse.ArgumentParser, temperature: float) -> None:
    from charter.infer.backends import add_engine_arguments

    parser.add_argument("--prompts", required=True, nargs="+", type=Path,
                        help="prompt JSONL files (charter cai prompts)")  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, help="JSONL, appended to (resumes)")
    parser.add_argument("--limit", type=int, help="only N prompts, drawn at random with --seed")
    parser.add_argument("--constitution", type=Path, help="default: the packaged one")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=temperature,
                        help=f"of the policy's samples (default {temperature})")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32, help="prompts per written batch")
    add_engine_arguments(parser)


def register(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)

    prompts = actions.add_parser("prompts", help="red-team, helpful and evaluation prompt files")
    prompts.add_argument("--judge-data", required=True, type=Path,
                         help="charter data judge-sources' output directory")  # fmt: skip
    prompts.add_argument("--out", required=True, type=Path)
    prompts.add_argument("--general", type=int, default=300,
                         help="general benign questions in helpful.jsonl")  # fmt: skip
    prompts.add_argument("--max-chars", type=int, default=1000)
    prompts.add_argument("--seed", type=int, default=0)
    prompts.set_defaults(func=cmd_prompts)

    revise = actions.add_parser("revise", help="SL-CAI: critique → revision chains")
    revise.add_argument("--policy", required=True, help="the model whose responses are revised")
    revise.add_argument("--reviser", help="the critic and reviser (default: the policy)")
    revise.add_argument("--rounds", type=int, default=4)
    revise.add_argument("--critique-tokens", type=int, default=160)
    revise.add_argument("--examples", type=int, default=2, help="few-shot examples shown")
    _generation_arguments(revise, temperature=0.0)
    revise.set_defaults(func=cmd_revise)

    select = actions.add_parser(
        "select", help="SL-CAI, small-scale mode: samples under the constitution, best kept"
    )
    select.add_argument(
        "--model", required=True, help="the model that writes the samples: the policy, or a critic"
    )
    select.add_argument("--samples", type=int, default=4, help="samples per prompt")
    select.add_argument(
        "--decline", nargs=2, metavar=("REASON", "ALTERNATIVE"),
        help="write harmful prompts' responses from these two openings, for example "
        "\"I can't help with that, because it could\" \"Instead, I can\"",
    )  # fmt: skip
    select.add_argument("--examples", type=int, default=4, help="examples shown as prior turns")
    _generation_arguments(select, temperature=0.8)
    select.set_defaults(func=cmd_select)

    sft = actions.add_parser("sft", help="SFT JSONL (prompt → final) from revise/select files")
    sft.add_argument("chains", nargs="+", type=Path)
    sft.add_argument("--out", required=True, type=Path)
    sft.add_argument("--max-harmful", type=int,
                     help="keep at most N harmful prompts' targets, drawn with --seed")  # fmt: skip
    sft.add_argument("--seed", type=int, default=0)
    sft.set_defaults(func=cmd_sft)

    report = actions.add_parser("report", help="share of harmful prompts declined per round")
    report.add_argument("chains", nargs="+", type=Path)
    report.set_defaults(func=cmd_report)

    compare = actions.add_parser("compare", help="RL-CAI: AI preference labels on two samples")
    compare.add_argument("--policy", required=True, help="the model that samples the two replies")
    compare.add_argument("--feedback", help="the feedback model (default: the policy)")
    compare.add_argument("--principles", type=int, default=4, help="principles per pair (k)")
    compare.add_argument("--method", choices=("auto", "logprobs", "votes"), default="auto")
    compare.add_argument("--votes", type=int, default=8, help="samples per question (votes)")
    compare.add_argument("--reasoning-tokens", type=int,
                         help="chain of thought first; labels clamped to [0.4, 0.6]")  # fmt: skip
    _generation_arguments(compare, temperature=1.0)
    compare.set_defaults(func=cmd_compare)

    contrast = actions.add_parser(
        "contrast", help="pairs that decline harmful prompts and answer benign ones"
    )
    contrast.add_argument(
        "--targets", required=True, nargs="+", type=Path,
        help="select/revise rows: prompt, harmful, final (the preferred side)",
    )  # fmt: skip
    contrast.add_argument(
        "--replies", required=True, nargs="+", type=Path,
        help="charter eval refusal rows: prompt, response (the other side)",
    )  # fmt: skip
    contrast.add_argument(
        "--out", required=True, type=Path, help="writes contrast-train/contrast-heldout.jsonl"
    )
    contrast.set_defaults(func=cmd_contrast)
