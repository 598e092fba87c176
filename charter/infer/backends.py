"""Choosing the engine that generates with a checkpoint: PyTorch or llama.cpp.

One engine (`Engine`: `add`, `step`, `run`, `generate`, `stream`) runs on either backend, so
everything that generates — `charter generate`, `charter chat`, `charter serve`, evaluation,
red-teaming — takes a `--backend`:

- `torch`: Charter's own model in PyTorch, the reference, and the one path for GPUs;
- `llamacpp`: the checkpoint exported to GGUF and run by llama.cpp (`pip install
  'charter[llamacpp]'`), several times faster on CPU;
- `auto` (the default): llama.cpp on CPU when it is installed and the options allow it,
  PyTorch otherwise, and PyTorch too, with one warning, when the checkpoint cannot run on
  llama.cpp (its tokenizer has no llama.cpp equivalent, or llama.cpp refuses the file).

The engine options (`add_engine_arguments`, `engine_options`), each with its cost as measured
on SmolLM2-135M in docs/benchmarks.md:

- `--dtype fp32|bf16|f16`: the weights' type (and on llama.cpp the GGUF's). bf16 changed
  SmolLM2's assistant-token loss by -0.0002 nats; f16 is not measured.
- `--compile` (torch only): the decode step compiled by torch.compile: fp32 batch-1 decode at
  26.4 against 18.0 tokens/s eager, after compiling on the first step and again on the first
  larger batch (tens of seconds; its time is not in the benchmarks).
- `--frozen` (with `--compile`, torch only): the step compiled ahead of time with the weights
  frozen in: 150-180 s of compiling in bf16, 229 s with `--int8`, once for all batch sizes, and
  weights changed afterwards are not seen; bf16 batch-1 decode 2.7-3.6x transformers'.
- `--int8`: linear layers in int8. On torch, `quantize_int8` (int8 weights and activations):
  SmolLM2's perplexity +2.1 % (14.454 -> 14.763); frozen, 1.53x the bf16 frozen engine at batch
  1. On llama.cpp, the checkpoint exported as q8_0 (int8 weights in blocks of 32 with one scale
  each) instead of f32/bf16/f16.

The GGUF file is exported once per checkpoint content and dtype and kept in a bounded cache
(gguf_cache.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

import torch

from charter.checkpoint import load_checkpoint, load_tokenizer
from charter.infer.engine import Engine
from charter.infer.gguf_cache import cached_gguf
from charter.infer.int8_linear import quantize_int8
from charter.infer.torch_backend import TorchBackend

BACKENDS = ("auto", "torch", "llamacpp")
LLAMACPP_INSTALL = "pip install 'charter[llamacpp]' (builds llama-cpp-python from source)"

# The GGUF type that keeps each PyTorch dtype's precision.
GGUF_DTYPES = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}
# --dtype's names.
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}

def llamacpp_installed() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def resolve_backend(
    backend: str, device: str | torch.device = "cpu", *, torch_only: bool = False
) -> str:
    """`torch` or `llamacpp` for `backend`; refuses combinations that cannot run. `torch_only`:
    options only PyTorch has are asked for (compiling), so `auto` means torch."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    on_cpu = torch.device(device).type == "cpu"
    if backend == "auto":
        return "llamacpp" if on_cpu and llamacpp_installed() and not torch_only else "torch"
    if backend == "llamacpp":
        if not on_cpu:
            raise ValueError(f"the llamacpp backend runs on the CPU, not on device {device!r}")
        if not llamacpp_installed():
            raise ValueError(f"the llamacpp backend needs llama-cpp-python: {LLAMACPP_INSTALL}")
    return backend


def check_engine_options(
    backend: str,
    device: str | torch.device,
    dtype: torch.dtype,
    compile: bool,
    frozen: bool,
    int8: bool,
) -> None:
    """Refuse option combinations no engine runs, naming the options."""
    if frozen and not compile:
        raise ValueError("frozen (--frozen) is a way of compiling: it needs compile (--compile)")
    if backend == "llamacpp" and compile:
        raise ValueError(
            "compile (--compile) and frozen (--frozen) are options of the torch backend; "
            "llama.cpp runs compiled code already"
        )
    if int8 and torch.device(device).type != "cpu":
        raise ValueError(f"int8 (--int8) runs on the CPU, not on device {device!r}")
    if backend == "llamacpp" and dtype not in GGUF_DTYPES:
        raise ValueError(f"dtype {dtype} has no GGUF equivalent for the llamacpp backend")


def load_engine(
    model_dir: str | Path,
    backend: str = "auto",
    *,
    max_batch_size: int = 8,
    max_len: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    compile: bool = False,
    frozen: bool = False,
    int8: bool = False,
    cache_dir: Path | None = None,
    n_threads: int | None = None,
) -> Engine:
    """An engine for checkpoint `model_dir` on `backend`, with the options the module docstring
    describes. `compile` and `frozen` apply to PyTorch only (so `auto` then means PyTorch);
    `int8` is `quantize_int8` on PyTorch and a q8_0 GGUF on llama.cpp; `n_threads` (default:
    every core this process may use) applies to llama.cpp only."""
    check_engine_options(backend, device, dtype, compile, frozen, int8)
    chosen = resolve_backend(backend, device, torch_only=compile or dtype not in GGUF_DTYPES)
    tokenizer = load_tokenizer(model_dir)
    if chosen == "llamacpp":
        from charter.infer.llamacpp_backend import LlamaCppBackend, LlamaCppLoadError
        from charter.interop.gguf_export import GGUFExportError

        try:
            backend = LlamaCppBackend(
                cached_gguf(model_dir, "q8_0" if int8 else GGUF_DTYPES[dtype], cache_dir),
                max_batch_size=max_batch_size,
                max_len=max_len,
                n_threads=n_threads,
                kv_type="f32" if dtype == torch.float32 else "f16",  # as precise as PyTorch's
            )
            return Engine(backend, tokenizer)
        except (GGUFExportError, LlamaCppLoadError) as e:
            if backend != "auto":
                raise
            print(
                f"warning: the llamacpp backend cannot run {model_dir} ({e}); running it on torch",
                file=sys.stderr,
            )
    model = load_checkpoint(model_dir, dtype=dtype, device=device)
    if int8:
        quantize_int8(model)
    backend = TorchBackend(
        model, max_batch_size=max_batch_size, max_len=max_len, compile=compile, frozen=frozen
    )
    return Engine(backend, tokenizer)


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    """`--backend` alone, for commands whose own options cover the rest (`add_engine_arguments`
    adds it with the engine options)."""
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="the engine: torch (PyTorch), llamacpp (llama.cpp, CPU), or auto (llamacpp on CPU "
        "when installed and the checkpoint runs there, else torch; the default)",
    )


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """`--backend`, `--dtype`, `--compile`, `--frozen` and `--int8`; `engine_options(args)` turns
    them into `load_engine`'s keyword arguments. Costs: docs/benchmarks.md, and this module's
    docstring."""
    add_backend_argument(parser)
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32",
                        help="the weights' type; default fp32")  # fmt: skip
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch only: compile the decode step with torch.compile (faster decoding, after "
        "compiling for tens of seconds on the first step)",
    )
    parser.add_argument(
        "--frozen",
        action="store_true",
        help="torch only, with --compile: compile the step ahead of time with the weights "
        "frozen in (the fastest torch engine; 2.5-4 minutes of compiling for SmolLM2)",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="int8 linear layers: weights and activations on torch (SmolLM2's perplexity "
        "+2.1%%), a q8_0 GGUF on llamacpp",
    )


def engine_options(args: argparse.Namespace) -> dict[str, Any]:
    """`load_engine`'s keyword arguments from `add_engine_arguments`' options (the backend is
    `args.backend`, passed on its own)."""
    return {
        "dtype": DTYPES[args.dtype],
        "compile": args.compile,
        "frozen": args.frozen,
        "int8": args.int8,
    }
