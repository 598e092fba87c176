"""Choosing the engine that generates with a checkpoint: PyTorch or llama.cpp.

Both engines have one interface (`Engine`: `add`, `step`, `run`, `generate`, `stream`), so
everything that generates — `charter generate`, `charter chat`, `charter serve`, evaluation,
red-teaming — takes a `--backend`:

- `torch`: Charter's own model in PyTorch, the reference, and the one path for GPUs;
- `llamacpp`: the checkpoint exported to GGUF and run by llama.cpp (`pip install
  'charter[llamacpp]'`), several times faster on CPU;
- `auto` (the default): llama.cpp on CPU when it is installed, PyTorch otherwise.

The GGUF file is exported once per checkpoint content and dtype and kept in a cache directory
(`$CHARTER_CACHE/gguf`, default `~/.cache/charter/gguf`), named by a hash of the checkpoint's
files, so a retrained checkpoint is re-exported and an unchanged one never is.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import torch

from charter.checkpoint import load_checkpoint, load_tokenizer
from charter.files import resolve_directory
from charter.infer.engine import Engine

BACKENDS = ("auto", "torch", "llamacpp")
LLAMACPP_INSTALL = "pip install 'charter[llamacpp]' (builds llama-cpp-python from source)"

# The GGUF type that keeps each PyTorch dtype's precision.
GGUF_DTYPES = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}

# Part of every cache key: bump it when the exporter's output changes, so old files are not used.
EXPORT_FORMAT = "charter-gguf-1"


def llamacpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def resolve_backend(backend: str, device: str | torch.device = "cpu") -> str:
    """`torch` or `llamacpp` for `backend`; refuses combinations that cannot run."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    on_cpu = torch.device(device).type == "cpu"
    if backend == "auto":
        return "llamacpp" if on_cpu and llamacpp_installed() else "torch"
    if backend == "llamacpp":
        if not on_cpu:
            raise ValueError(f"the llamacpp backend runs on the CPU, not on device {device!r}")
        if not llamacpp_installed():
            raise ValueError(f"the llamacpp backend needs llama-cpp-python: {LLAMACPP_INSTALL}")
    return backend


def default_cache_dir() -> Path:
    root = os.environ.get("CHARTER_CACHE") or Path.home() / ".cache" / "charter"
    return Path(root) / "gguf"


def checkpoint_hash(directory: str | Path) -> str:
    """SHA-256 of every file at the top of a checkpoint directory (names and contents)."""
    digest = hashlib.sha256(EXPORT_FORMAT.encode())
    for path in sorted(p for p in resolve_directory(directory).iterdir() if p.is_file()):
        with path.open("rb") as f:
            file_digest = hashlib.file_digest(f, "sha256").digest()
        digest.update(path.name.encode() + b"\0" + file_digest)
    return digest.hexdigest()


def cached_gguf(model_dir: str | Path, dtype: str = "f32", cache_dir: Path | None = None) -> Path:
    """The checkpoint as a GGUF file of `dtype`, exported on first use."""
    from charter.interop.gguf_export import export_gguf

    path = (cache_dir or default_cache_dir()) / f"{checkpoint_hash(model_dir)[:24]}-{dtype}.gguf"
    if not path.exists():
        print(f"exporting {model_dir} to {path} for llama.cpp", file=sys.stderr, flush=True)
        export_gguf(model_dir, path, dtype, progress=False)
    return path


def load_engine(
    model_dir: str | Path,
    backend: str = "auto",
    *,
    max_batch_size: int = 8,
    max_len: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    compile: bool = False,
    cache_dir: Path | None = None,
    n_threads: int | None = None,
) -> Engine:
    """An engine for checkpoint `model_dir` on `backend`. `compile` applies to PyTorch only;
    `n_threads` (default: every core this process may use) to llama.cpp only."""
    tokenizer = load_tokenizer(model_dir)
    if resolve_backend(backend, device) == "torch":
        model = load_checkpoint(model_dir, dtype=dtype, device=device)
        return Engine(
            model, tokenizer, max_batch_size=max_batch_size, max_len=max_len, compile=compile
        )
    from charter.infer.llamacpp_engine import LlamaCppEngine

    if dtype not in GGUF_DTYPES:
        raise ValueError(f"dtype {dtype} has no GGUF equivalent for the llamacpp backend")
    gguf_path = cached_gguf(model_dir, GGUF_DTYPES[dtype], cache_dir)
    return LlamaCppEngine(
        gguf_path,
        tokenizer,
        max_batch_size=max_batch_size,
        max_len=max_len,
        n_threads=n_threads,
        kv_type="f32" if dtype == torch.float32 else "f16",  # as precise as PyTorch's cache
    )


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="the engine: torch (PyTorch), llamacpp (llama.cpp, CPU), or auto (llamacpp on CPU "
        "when installed, else torch; the default)",
    )
