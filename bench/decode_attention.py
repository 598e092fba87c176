"""Single-query attention over a KV cache (`charter.model.decode_attention`) in its two forms:
batched matmuls (its default when eager) and products and sums (its default when compiled),
each eager and compiled, at SmolLM2's head layout (9 query heads on 3 KV heads, head_dim 64)
and depth (30 layers).

    python bench/decode_attention.py [--batch-sizes 1 8] [--lengths 100 1000]
        [--dtypes bfloat16 float32] [--repeats 50] [--layers 30]

Prints the median time of all layers' attention per form, and each form's largest difference from
fp32 scaled_dot_product_attention.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from tqdm import tqdm

from charter.model import decode_attention

HEADS, KV_HEADS, HEAD_DIM = 9, 3, 64


def every_layer(as_sums: bool, layers: int) -> Callable:
    def run(q, keys, values, mask):
        return [decode_attention(q, keys, values, mask, as_sums) for _ in range(layers)]

    return run


def median_ms(run: Callable, args: tuple, repeats: int) -> float:
    run(*args)  # compiles, when compiled
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--lengths", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--layers", type=int, default=30, help="SmolLM2 has 30")
    args = parser.parse_args(argv)

    runners = {}
    for name, as_sums in (("matmuls", False), ("sums", True)):
        runners[f"{name}, eager"] = every_layer(as_sums, args.layers)
        # Dynamic, as the engine compiles its decode step.
        runners[f"{name}, compiled"] = torch.compile(
            every_layer(as_sums, args.layers), dynamic=True
        )
    cases = [(d, b, s) for d in args.dtypes for b in args.batch_sizes for s in args.lengths]
    results = []
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads; ms per {args.layers} layers")
    print("| dtype | batch | keys | form | ms | max diff from fp32 SDPA |")
    print("|---|---:|---:|---|---:|---:|")
    for dtype_name, batch, length in tqdm(cases, desc="cases"):
        dtype = getattr(torch, dtype_name)
        q = torch.randn(batch, HEADS, 1, HEAD_DIM)
        keys = torch.randn(batch, KV_HEADS, length, HEAD_DIM)
        values = torch.randn(batch, KV_HEADS, length, HEAD_DIM)
        mask = torch.ones(batch, 1, 1, length, dtype=torch.bool)
        reference = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True)
        inputs = (q.to(dtype), keys.to(dtype), values.to(dtype), mask)
        with torch.inference_mode():
            for name, run in runners.items():
                ms = median_ms(run, inputs, args.repeats)
                diff = (run(*inputs)[0].float() - reference).abs().max().item()
                results.append(dict(dtype=dtype_name, batch=batch, keys=length, form=name, ms=ms))
                print(f"| {dtype_name} | {batch} | {length} | {name} | {ms:.3f} | {diff:.1e} |")
    return results


if __name__ == "__main__":
    main()
