"""`charter generate`: one assistant turn (or, with `--raw`, a plain-text completion); only the
completion goes to stdout."""

from __future__ import annotations

import argparse
import asyncio
import sys


def cmd_generate(args: argparse.Namespace) -> None:
    from charter.checkpoint import load_tokenizer
    from charter.infer.backends import engine_options, load_engine
    from charter.infer.sampling import SamplingParams
    from charter.infer.spec import load_generator, parse_model_spec

    spec = parse_model_spec(args.model, default_backend=args.backend)
    raw = args.raw or (spec.is_local and not load_tokenizer(spec.target).chat_template)
    if not raw:
        with load_generator(spec, max_batch_size=1, **engine_options(args)) as generator:
            asyncio.run(_stream_turn(generator, args))
        sys.stdout.write("\n")
        return
    # A plain-text completion (--raw, or a base model without a chat template): the engine.
    if args.system:
        raise SystemExit("--system needs a chat template (the directory has none, or --raw)")
    if not spec.is_local:
        raise SystemExit("--raw needs a local model: a remote endpoint answers chat turns")
    engine = load_engine(spec.target, spec.kind, max_batch_size=1, **engine_options(args))
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        stop=args.stop or [],
        seed=args.seed,
    )
    for piece in engine.stream(engine.tokenizer.encode(args.prompt), params):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


async def _stream_turn(generator, args: argparse.Namespace) -> None:
    """Print one assistant turn's text as it arrives."""
    from charter.chat.parse import BlockDelta
    from charter.infer.generator import user_turn

    request = user_turn(
        args.prompt,
        args.system,
        max_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        stop_sequences=args.stop or [],
        seed=args.seed,
    )
    stream = await generator.open(request)
    async for event in stream.events():
        if isinstance(event, BlockDelta) and event.kind == "text":
            sys.stdout.write(event.text)
            sys.stdout.flush()


def register(generate: argparse.ArgumentParser) -> None:
    from charter.infer.backends import add_engine_arguments

    generate.add_argument(
        "--model", required=True, help="a checkpoint directory or model spec (README: model specs)"
    )
    generate.add_argument("--prompt", required=True)
    generate.add_argument("--system", help="system prompt (chat models)")
    generate.add_argument(
        "--raw", action="store_true", help="complete the prompt as plain text (no chat turn)"
    )
    generate.add_argument("--max-new-tokens", type=int, default=256)
    generate.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    generate.add_argument("--top-k", type=int, default=0, help="0 = off")
    generate.add_argument("--top-p", type=float, default=1.0)
    generate.add_argument("--stop", nargs="*", help="stop strings (excluded from the output)")
    generate.add_argument("--seed", type=int)
    add_engine_arguments(generate)
    generate.set_defaults(func=cmd_generate)
