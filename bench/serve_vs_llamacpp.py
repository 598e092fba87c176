"""Serving throughput on one GGUF file: `charter serve --backend llamacpp` against
llama-cpp-python's own OpenAI-compatible server (`python -m llama_cpp.server`).

Both servers get the same file (the checkpoint exported once, f32, as the llamacpp backend
exports it), every core, the same context and an f32 KV cache, and the same load: N concurrent
streaming clients (N in --clients, default 1, 4, 16), each sending --requests chat requests one
after another to POST /v1/chat/completions (greedy, --max-tokens). The clients are
`bench/serve_load.py`'s; only the request differs (the OpenAI API, which both servers speak).
Output tokens are counted by tokenising each response's text with the checkpoint's tokenizer,
the same way for both servers (llama-cpp-python's stream reports no usage).

The servers run one after the other, each alone on the machine. Charter decodes the clients'
sequences together in one llama.cpp batch; llama-cpp-python's server answers one request at a
time, so the gap grows with the number of clients (the target: ≥ 2× at 16).

    python bench/serve_vs_llamacpp.py --model runs/smollm2 [--clients 1 4 16] [--requests 4]
        [--max-tokens 64] [--context 1024] [--out results.jsonl]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import httpx
from serve_load import API_KEY, LevelResult, Outcome, run_level, start_server, wait_until_up

from charter.checkpoint import load_tokenizer
from charter.infer.gguf_cache import cached_gguf
from charter.tokenizer import Tokenizer

SYSTEM = "You are a helpful assistant."  # explicit, so neither server adds a default of its own
SERVERS = ["charter serve", "llama-cpp-python server"]


def chat_request(tokenizer: Tokenizer):
    """A `send` for serve_load.run_level: one streamed OpenAI chat completion."""

    async def send(http: httpx.AsyncClient, model: str, prompt: str, max_tokens: int) -> Outcome:
        body = {
            "model": model,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": prompt},
            ],
        }
        start = time.perf_counter()
        first, pieces = None, []
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                return Outcome(response.status_code, None, 0, response.text[:200])
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[len("data: ") :])
                if "error" in data:
                    return Outcome(200, first, 0, str(data["error"])[:200])
                for choice in data["choices"]:
                    if text := choice["delta"].get("content"):
                        first = first if first is not None else time.perf_counter() - start
                        pieces.append(text)
        return Outcome(200, first, len(tokenizer.encode("".join(pieces))))

    return send


def start_llama_cpp_server(gguf: Path, port: int, context: int, threads: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf)]
    command += ["--model_alias", "bench", "--port", str(port), "--n_ctx", str(context)]
    command += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    command += ["--type_k", "0", "--type_v", "0", "--verbose", "false"]  # 0: an f32 KV cache
    # By default a new request interrupts the one being generated; queue them instead.
    command += ["--interrupt_requests", "false"]
    return subprocess.Popen(command, stdout=2)  # its access log goes to stderr, not a result


def run_server(name: str, args: argparse.Namespace, gguf: Path) -> list[LevelResult]:
    port = args.port
    base_url = f"http://127.0.0.1:{port}"
    if name == "charter serve":
        server = start_server(
            str(args.model), port, API_KEY, max(args.clients), args.context, backend="llamacpp"
        )
        ready = "/health"
    else:
        threads = len(os.sched_getaffinity(0))  # as the llamacpp backend's default
        server = start_llama_cpp_server(gguf, port, args.context, threads)
        ready = "/v1/models"
    send = chat_request(load_tokenizer(args.model))
    try:
        wait_until_up(base_url, server, path=ready)
        return [
            asyncio.run(
                run_level(base_url, API_KEY, "bench", n, args.requests, args.max_tokens, send)
            )
            for n in args.clients
        ]
    finally:
        server.terminate()
        server.wait(timeout=60)


def comparison_table(results: dict[str, list[LevelResult]]) -> str:
    def ms(seconds: float | None) -> str:
        return "–" if seconds is None else f"{seconds * 1000:.0f}"

    ours, theirs = results["charter serve"], results["llama-cpp-python server"]
    lines = [
        "| clients | charter serve tok/s | llama-cpp-python server tok/s | × | "
        "TTFT p50 charter (ms) | TTFT p50 llama-cpp-python (ms) | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for a, b in zip(ours, theirs, strict=True):
        ratio = a.tokens_per_second / b.tokens_per_second if b.tokens_per_second else float("nan")
        lines.append(
            f"| {a.clients} | {a.tokens_per_second:.1f} | {b.tokens_per_second:.1f} | "
            f"{ratio:.2f} | {ms(a.ttft_p50)} | {ms(b.ttft_p50)} | {a.errors + b.errors} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, list[LevelResult]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="a checkpoint directory")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--context", type=int, default=1024, help="tokens per sequence")
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--cache", type=Path, help="where the GGUF goes (default: Charter's)")
    parser.add_argument("--out", type=Path, help="append one JSON line per server and level")
    args = parser.parse_args(argv)

    # Exported here, so both servers open the very same file (charter serve finds it cached).
    if args.cache:
        os.environ["CHARTER_CACHE"] = str(args.cache)
    gguf = cached_gguf(args.model, "f32")
    results = {name: run_server(name, args, gguf) for name in SERVERS}
    if args.out:
        with args.out.open("a") as f:
            for name, levels in results.items():
                for level in levels:
                    f.write(json.dumps({"server": name, **asdict(level)}) + "\n")
    print(comparison_table(results))
    return results


if __name__ == "__main__":
    main()
