"""`charter export gguf`: a checkpoint as a GGUF file for llama.cpp."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_export_gguf(args: argparse.Namespace) -> None:
    from charter.interop.gguf_export import export_gguf

    out = export_gguf(args.model_dir, args.out, args.dtype)
    print(f"exported {args.model_dir} as {args.dtype}: {out.stat().st_size / 1e6:.1f} MB")
    print(f"saved: {out}")


def register(parser: argparse.ArgumentParser) -> None:
    from charter.interop.gguf_export import EXPORT_TYPES

    kinds = parser.add_subparsers(dest="export_verb", required=True)
    to_gguf = kinds.add_parser("gguf", help="a GGUF file for llama.cpp")
    to_gguf.add_argument("model_dir", type=Path, help="a checkpoint directory")
    to_gguf.add_argument("--out", required=True, type=Path, help="the .gguf file to write")
    to_gguf.add_argument(
        "--dtype",
        choices=list(EXPORT_TYPES),
        default="f32",
        help="type of the weight matrices (norms stay f32); default f32",
    )
    to_gguf.set_defaults(func=cmd_export_gguf)
