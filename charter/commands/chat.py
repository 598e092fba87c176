"""`charter chat --model SPEC`: a conversation with a model in the terminal (`charter.terminal`)."""

from __future__ import annotations

import argparse
import sys

from charter.infer.backends import add_engine_arguments, engine_options
from charter.infer.sampling import SamplingParams
from charter.terminal import ChatSession, chat_loop


def cmd_chat(args: argparse.Namespace) -> None:
    from charter.infer.spec import load_generator

    try:
        temperature = SamplingParams(temperature=args.temperature).temperature
        max_new_tokens = SamplingParams(max_new_tokens=args.max_new_tokens).max_new_tokens
        try:
            generator = load_generator(
                args.model, backend=args.backend, max_batch_size=1, **engine_options(args)
            )
        except ValueError as e:
            if "no chat template" in str(e):
                raise SystemExit(
                    f"{args.model} has no chat template; use `charter generate --raw` for plain "
                    "text"
                ) from e
            raise
        if args.guard:
            from charter.safety.guard import guard_generator

            generator = guard_generator(generator, args.guard)
        with generator:
            session = ChatSession(generator, args.system, temperature, max_new_tokens)
            print(f"chatting with {args.model}; /help lists commands", file=sys.stderr)
            chat_loop(session, sys.stdin, sys.stdout, sys.stderr)
    except KeyboardInterrupt:  # while loading
        print(file=sys.stderr)


def register(chat_parser: argparse.ArgumentParser) -> None:
    chat_parser.add_argument(
        "--model", required=True, help="a chat model: a checkpoint directory or model spec"
    )
    chat_parser.add_argument("--system", help="system prompt")
    chat_parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    chat_parser.add_argument("--max-new-tokens", type=int, default=512)
    chat_parser.add_argument(
        "--guard",
        metavar="FILE",
        help="chat behind the safety guard this TOML describes (e.g. charter/configs/safety.toml)",
    )
    add_engine_arguments(chat_parser)
    chat_parser.set_defaults(func=cmd_chat)
