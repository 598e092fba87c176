"""`charter info DIR`: a checkpoint's architecture, size, tokenizer and files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


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


def register(info: argparse.ArgumentParser) -> None:
    info.add_argument("model_dir")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)
