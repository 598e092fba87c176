"""`charter <verb>`: one entry point for every stage. Each verb parses its arguments and delegates.

Results go to stdout; progress and logs go to stderr, so `charter generate … > out.txt` holds
only the completion.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from pathlib import Path


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- charter tokenizer train ----


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


# ---- charter generate ----


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


# ---- charter info ----


def cmd_info(args: argparse.Namespace) -> None:
    from charter.checkpoint import load_config, load_tokenizer
    from charter.config import flops_per_token, num_parameters

    config = load_config(args.model_dir)
    directory = Path(args.model_dir)
    info = {
        "directory": str(directory),
        "parameters": num_parameters(config),
        "parameters_without_embedding": num_parameters(config, include_embedding=False),
        "training_flops_per_token": flops_per_token(config, config.max_position_embeddings),
        "context_length": config.max_position_embeddings,
        "config": {k: v for k, v in config.__dict__.items()},
        "files": {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file()},
    }
    if (directory / "tokenizer.json").exists():
        tokenizer = load_tokenizer(directory)
        info["tokenizer"] = {
            "vocab_size": tokenizer.vocab_size,
            "eos_tokens": [tokenizer.decode([i]) for i in tokenizer.eos_token_ids],
            "chat_template": bool(tokenizer.chat_template),
        }
    if args.json:
        print(json.dumps(info, indent=2))
        return
    c = config
    print(
        f"{directory}: Llama, {info['parameters'] / 1e6:.2f}M parameters "
        f"({info['parameters_without_embedding'] / 1e6:.2f}M without the embedding)"
    )
    print(
        f"  layers {c.num_hidden_layers}, width {c.hidden_size}, heads {c.num_attention_heads} "
        f"(KV {c.num_key_value_heads}, head_dim {c.head_dim}), SwiGLU {c.intermediate_size}"
    )
    print(
        f"  vocab {c.vocab_size}, context {c.max_position_embeddings}, "
        f"RoPE θ {c.rope_theta:g}, tied embeddings: {c.tie_word_embeddings}"
    )
    print(f"  training FLOPs/token at full context: {info['training_flops_per_token'] / 1e6:.1f}M")
    if "tokenizer" in info:
        t = info["tokenizer"]
        print(
            f"  tokenizer: {t['vocab_size']} tokens, EOS {t['eos_tokens']}, "
            f"chat template: {t['chat_template']}"
        )
    for name, size in info["files"].items():
        print(f"  {name:32s} {size:>12,d} bytes")


# ---- argument parsing ----

# Modules that add verbs of their own: each has `register(verbs)`, which adds its subparsers to
# the `verbs` action and sets `func` on each to a handler taking the parsed arguments.
COMMAND_MODULES: list[str] = [
    "charter.interop.commands",
    "charter.chat_terminal",
    "charter.serve.commands",
    "charter.data.commands",
    "charter.data.sft_commands",
    "charter.eval.sft_commands",
    "charter.eval.refusal_commands",
    "charter.train.pretrain",
    "charter.train.sft",
    "charter.eval.plots",
    "charter.interop.gguf_export",
    "charter.pipeline",
]


def verb_group(
    verbs: argparse._SubParsersAction, name: str, help: str
) -> argparse._SubParsersAction:
    """The sub-verbs of `charter NAME`, created by whichever module asks first, so several modules
    can add verbs to one group (`charter data fetch`, `charter data sft-synth`)."""
    if name not in verbs.choices:
        group = verbs.add_parser(name, help=help)
        group.sub_verbs = group.add_subparsers(dest=f"{name}_verb", required=True)
    return verbs.choices[name].sub_verbs


def build_parser() -> argparse.ArgumentParser:
    from charter.infer.backends import add_engine_arguments

    parser = argparse.ArgumentParser(prog="charter", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)

    tokenizer = verbs.add_parser("tokenizer", help="train a BPE tokenizer")
    tokenizer_verbs = tokenizer.add_subparsers(dest="tokenizer_verb", required=True)
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

    generate = verbs.add_parser("generate", help="complete one prompt (prints only the completion)")
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

    info = verbs.add_parser("info", help="describe a model directory")
    info.add_argument("model_dir")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(verbs)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"charter {args.verb}: error: {e}") from e


if __name__ == "__main__":
    main()
