"""Output tokens/s of a remote Generator (`AnthropicGenerator` against `charter serve`) against
the local path (`LocalGenerator`, the engine in this process) on the same model, both answering
the same greedy requests with the same number in flight.

The server runs as its own `charter serve` process with as many rows as requests in flight;
runs alternate local, remote, local, … so that a slow minute of a shared machine hurts both.
Greedy decoding gives both paths the same tokens to generate. The figure to watch is remote /
local (the target: ≥ 0.9), as the ratio of the medians and as the median of each remote run's
ratio to the local run just before it.

    python bench/remote_generator.py --model DIR [--backend auto|torch|llamacpp]
        [--concurrency 8] [--requests 16] [--max-tokens 64] [--runs 5]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
from pathlib import Path

from serve_load import API_KEY, PROMPTS, start_server, wait_until_up

from charter.infer.anthropic_remote import AnthropicGenerator
from charter.infer.generator import Generator, user_turn
from charter.infer.spec import load_generator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tokens_per_second(generator: Generator, requests: list) -> tuple[float, int]:
    start = time.perf_counter()
    turns = generator.generate(requests)
    seconds = time.perf_counter() - start
    tokens = sum(t.output_tokens for t in turns)
    return tokens / seconds, tokens


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="a checkpoint directory")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "llamacpp"])
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--requests", type=int, default=16, help="requests per run")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=5, help="runs of each path")
    parser.add_argument("--context", type=int, default=1024, help="tokens per sequence")
    parser.add_argument("--port", type=int, help="for the server (default: a free one)")
    args = parser.parse_args(argv)

    requests = [
        user_turn(PROMPTS[i % len(PROMPTS)], max_tokens=args.max_tokens, temperature=0.0)
        for i in range(args.requests)
    ]
    port = args.port or free_port()
    base_url = f"http://127.0.0.1:{port}"
    # The local engine first: a llama.cpp backend exports the GGUF the server then finds cached.
    local = load_generator(
        f"{args.backend}:{args.model}",
        name="bench",
        max_batch_size=args.concurrency,
        max_len=args.context,
    )
    server = start_server(
        str(args.model), port, API_KEY, args.concurrency, args.context, args.backend
    )
    remote = None
    try:
        wait_until_up(base_url, server)
        remote = AnthropicGenerator(
            "bench", base_url, api_key=API_KEY, max_concurrency=args.concurrency
        )
        # One unmeasured run each: first runs pay for warm-up (threads, caches, pages of the
        # weights), and a local run right after the server started ran at a third of its speed.
        local.generate(requests)
        remote.generate(requests)
        rates: dict[str, list[float]] = {"local": [], "remote": []}
        for run in range(args.runs):
            for path, generator in (("local", local), ("remote", remote)):
                rate, tokens = tokens_per_second(generator, requests)
                rates[path].append(rate)
                print(f"run {run + 1} {path}: {rate:.1f} tok/s ({tokens} tokens)", file=sys.stderr)
    finally:
        for generator in (local, remote):
            if generator is not None:
                generator.close()
        server.terminate()
        server.wait(timeout=60)

    medians = {path: statistics.median(values) for path, values in rates.items()}
    print("| path | runs (tok/s) | median tok/s |")
    print("|---|---|---:|")
    for path, label in (("local", "LocalGenerator"), ("remote", "AnthropicGenerator → serve")):
        runs = ", ".join(f"{r:.1f}" for r in rates[path])
        print(f"| {label} | {runs} | {medians[path]:.1f} |")
    pairs = [r / loc for loc, r in zip(rates["local"], rates["remote"], strict=True)]
    print(
        f"\nremote / local: {medians['remote'] / medians['local']:.2f}× (medians), "
        f"{statistics.median(pairs):.2f}× (median of the runs' ratios: "
        f"{', '.join(f'{q:.2f}' for q in pairs)})"
    )
    return rates


if __name__ == "__main__":
    main()
