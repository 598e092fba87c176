"""Prefill speed and peak memory of SmolLM2 (or any checkpoint) in each runtime.

Each contender runs in a fresh process, so its peak resident memory (`ru_maxrss`) is its own:
load the model, prefill a `--prompt-tokens` prompt `--repeats` times (median tokens/s), then
decode 64 tokens greedily. Contenders: Charter's PyTorch engine, Charter's llama.cpp engine
(`--backend llamacpp`), and `transformers` (`LlamaForCausalLM`, a forward pass over the prompt
with its cache, as `generate()` does first).

    python bench/prefill_memory.py --model runs/smollm2 [--prompt-tokens 512]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONTENDERS = ["charter torch", "charter llama.cpp", "transformers"]


def measure_in_this_process(contender: str, model: str, prompt_tokens: int, repeats: int) -> dict:
    import torch

    from charter.checkpoint import load_tokenizer
    from charter.data.documents import python_docstrings
    from charter.infer.backends import load_engine
    from charter.infer.engine import GenerationRequest
    from charter.infer.sampling import SamplingParams

    tokenizer = load_tokenizer(model)
    text = " ".join(d.text for d in python_docstrings())
    prompt = tokenizer.encode(text)[:prompt_tokens]
    times = []
    if contender == "transformers":
        from transformers import LlamaForCausalLM

        hf = LlamaForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        ids = torch.tensor([prompt])
        with torch.inference_mode():
            for _ in range(repeats + 1):
                start = time.perf_counter()
                hf(ids, use_cache=True)
                times.append(time.perf_counter() - start)
            hf.generate(ids[:, :32], do_sample=False, max_new_tokens=64, pad_token_id=0)
    else:
        backend = "llamacpp" if contender == "charter llama.cpp" else "torch"
        engine = load_engine(model, backend, max_batch_size=1, max_len=prompt_tokens + 128)
        for _ in range(repeats + 1):
            request = GenerationRequest(prompt, SamplingParams(max_new_tokens=1, temperature=0))
            start = time.perf_counter()
            engine.add(request)  # prefill, then the first token
            times.append(time.perf_counter() - start)
            request.cancelled = True
            engine.step()  # frees the row
        engine.generate([prompt[:32]], SamplingParams(max_new_tokens=64, temperature=0))
    return {
        "contender": contender,
        "prefill_tokens_per_s": prompt_tokens / statistics.median(times[1:]),  # [0]: warm-up
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--contender", help=argparse.SUPPRESS)  # the child process's role
    args = parser.parse_args()
    if args.contender:
        result = measure_in_this_process(
            args.contender, str(args.model), args.prompt_tokens, args.repeats
        )
        print(json.dumps(result))
        return
    print(
        f"{args.model}: prefill of {args.prompt_tokens} tokens (median of {args.repeats}), "
        "peak RSS of the whole process (model load, prefill, 64-token decode)\n"
    )
    print("| runtime | prefill tokens/s | peak RSS (MB) |\n|---|---:|---:|")
    for contender in CONTENDERS:
        output = subprocess.run(
            [
                sys.executable,
                __file__,
                "--model",
                str(args.model),
                "--prompt-tokens",
                str(args.prompt_tokens),
                "--repeats",
                str(args.repeats),
                "--contender",
                contender,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        row = json.loads(output.strip().splitlines()[-1])
        print(f"| {contender} | {row['prefill_tokens_per_s']:,.0f} | {row['peak_rss_mb']:,.0f} |")


if __name__ == "__main__":
    main()
