"""`charter serve`: the Messages API, OpenAI chat completions and the web chat over Generators
(local checkpoints, or remote endpoints the server fronts)."""

from __future__ import annotations

import argparse
from dataclasses import replace

from charter.log import log
from charter.network import is_loopback
from charter.serve.auth import KEYS_VARIABLE, collect_keys


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from charter.infer.backends import engine_options
    from charter.safety.config import load_safety_config
    from charter.safety.guard import Guard, load_judge
    from charter.serve.app import create_app
    from charter.serve.registry import Registry, load_served_model

    keys = collect_keys(args.api_key or [], args.api_key_file)
    if not keys and not is_loopback(args.host):
        raise SystemExit(
            f"charter serve: refusing to listen on {args.host} without an API key: pass "
            f"--api-key, --api-key-file or set {KEYS_VARIABLE} (or listen on 127.0.0.1)"
        )
    # Read before the models load, so that a mistake in it is reported at once.
    safety = load_safety_config(args.guard) if args.guard else None
    _check_gates(args)
    models = []
    for spec in args.model:
        log(f"loading {spec}")
        models.append(
            load_served_model(
                spec,
                backend=args.backend,
                max_waiting=args.max_waiting,
                max_batch_size=args.max_batch_size,
                max_len=args.context,
                device=args.device,
                **engine_options(args),
            )
        )
    if safety is not None:
        judge = load_judge(safety, args.device)
        models = [replace(m, generator=Guard(m.generator, judge, safety)) for m in models]
        log(f"every model behind the guard of {args.guard} (judge {safety.judge})")
    registry = Registry(models)
    app = create_app(
        registry,
        api_keys=keys,
        requests_per_minute=args.rate_limit,
        max_body_bytes=args.max_body_bytes,
        feedback_db=args.feedback_db,
    )
    if keys:
        log(f"{len(keys)} API key(s) configured")
    else:
        log(f"no API key configured: serving on loopback only ({args.host}), without auth")
    log(f"models: {', '.join(registry.models)}; web chat at http://{args.host}:{args.port}/")
    if args.feedback_db:
        log(f"feedback pages /redteam and /compare store into {args.feedback_db}")
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    finally:
        registry.stop()


def _check_gates(args: argparse.Namespace) -> None:
    """Refuse a local checkpoint that has not passed its release gate (or whose weights or
    evaluation changed since, or that passed behind a guard it is not served behind), naming
    every such model and why, unless --allow-ungated; remote models are their provider's to
    gate."""
    from pathlib import Path

    from charter.eval.gate import gate_problem
    from charter.infer.spec import parse_model_spec
    from charter.serve.registry import split_name

    problems = []
    for spec in args.model:
        parsed = parse_model_spec(split_name(spec)[1], default_backend=args.backend)
        if parsed.is_local and Path(parsed.target).is_dir():
            problem = gate_problem(Path(parsed.target), args.guard)
            if problem:
                problems.append(problem)
    if problems and not args.allow_ungated:
        raise SystemExit(
            "charter serve: refusing to serve a model that has not passed its release gate:\n  "
            + "\n  ".join(problems)
            + "\n(charter eval MODEL, then charter gate MODEL; or --allow-ungated to serve anyway)"
        )
    for problem in problems:
        log(f"serving ungated (--allow-ungated): {problem}")


def register(serve: argparse.ArgumentParser) -> None:
    from charter.infer.backends import add_engine_arguments

    serve.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="[NAME=]SPEC",
        help="a model to serve (repeatable): a checkpoint directory or another model spec "
        "(README: model specs); its id is the directory name or remote model id unless NAME= "
        "gives one",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        help=f"an accepted API key (repeatable; also from ${KEYS_VARIABLE}, comma separated)",
    )
    serve.add_argument("--api-key-file", help="a file of accepted API keys, one per line")
    serve.add_argument(
        "--rate-limit",
        type=float,
        metavar="N",
        help="requests per minute per API key (default: none)",
    )
    serve.add_argument(
        "--max-batch-size", type=int, default=8, help="sequences decoded together per model"
    )
    serve.add_argument(
        "--max-waiting",
        type=int,
        default=64,
        help="requests queued beyond the batch before answering 529 overloaded",
    )
    serve.add_argument(
        "--context",
        type=int,
        help="tokens per sequence, prompt and output (default: the model's context); the KV "
        "cache holds max-batch-size × this many",
    )
    serve.add_argument("--max-body-bytes", type=int, default=8 * 2**20)
    serve.add_argument(
        "--guard",
        metavar="FILE",
        help="put every served model behind the safety guard this TOML describes (input "
        "classifier and output monitor; e.g. charter/configs/safety.toml)",
    )
    serve.add_argument(
        "--feedback-db",
        metavar="PATH",
        help="a SQLite file for the /redteam and /compare pages' ratings (red-team findings and "
        "comparisons; `charter feedback export` turns the comparisons into preference pairs); "
        "without it the pages cannot save",
    )
    serve.add_argument(
        "--allow-ungated",
        action="store_true",
        help="serve local checkpoints that have not passed `charter gate` (a warning each)",
    )
    serve.add_argument("--device", default="cpu")
    add_engine_arguments(serve)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=cmd_serve)
