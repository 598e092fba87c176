"""Load benchmark of `charter serve`: N concurrent streaming clients, each sending requests one
after another to POST /v1/messages, for N in --clients (default 1, 4, 16).

Per level it reports aggregate output tokens/s (all clients' output tokens over the level's wall
time), p50/p95 time to first token (request sent → first content delta), and the responses by
outcome: 529 (overloaded, documented) is counted apart from errors; any other non-200 status or
an `event: error` in a stream is an error. Continuous batching shows as aggregate tokens/s that
grows with the number of clients.

The server runs as its own `charter serve` process (so the load generator does not share its
interpreter), or pass --url to measure one already running.

    python bench/serve_load.py --model DIR [--backend auto|torch|llamacpp] [--clients 1 4 16]
        [--requests 4] [--max-tokens 64] [--out results.jsonl]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from tqdm import tqdm

PROMPTS = [
    "Explain what a hash table is in two sentences.",
    "Write a haiku about autumn rain.",
    "What are three tips for writing clear documentation?",
    "Summarise the causes of the French Revolution briefly.",
    "How do I reverse a list in Python?",
    "Give me a short recipe for pancakes.",
    "Why is the sky blue?",
    "Name four planets and one fact about each.",
]
API_KEY = "bench-key"


@dataclass
class Outcome:
    status: int  # HTTP status; 200 with `error` set for a failure reported in the stream
    time_to_first_token: float | None
    output_tokens: int
    error: str | None = None


@dataclass
class LevelResult:
    clients: int
    requests: int
    ok: int
    overloaded: int  # 529s
    errors: int
    seconds: float
    output_tokens: int
    tokens_per_second: float
    ttft_p50: float | None
    ttft_p95: float | None


async def one_request(http: httpx.AsyncClient, model: str, prompt: str, max_tokens: int) -> Outcome:
    body = {
        "model": model,
        "max_tokens": max_tokens,
        "stream": True,
        "messages": [{"role": "user", "content": prompt}],
    }
    start = time.perf_counter()
    first = None
    output_tokens = 0
    async with http.stream("POST", "/v1/messages", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            return Outcome(response.status_code, None, 0, response.text[:200])
        event = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: ") :])
                if event == "content_block_delta" and first is None:
                    first = time.perf_counter() - start
                elif event == "message_delta":
                    output_tokens = data["usage"]["output_tokens"]
                elif event == "error":
                    return Outcome(200, first, output_tokens, data["error"]["message"])
    return Outcome(200, first, output_tokens)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


async def run_level(
    base_url: str,
    api_key: str,
    model: str,
    clients: int,
    requests: int,
    max_tokens: int,
    send: Callable[[httpx.AsyncClient, str, str, int], Awaitable[Outcome]] = one_request,
) -> LevelResult:
    """`send` makes one streaming request (default: the Messages API's)."""
    outcomes: list[Outcome] = []
    progress = tqdm(
        total=clients * requests, desc=f"{clients} clients", unit="req", file=sys.stderr
    )

    async def client(index: int, http: httpx.AsyncClient) -> None:
        for i in range(requests):
            prompt = PROMPTS[(index + i * clients) % len(PROMPTS)]
            outcomes.append(await send(http, model, prompt, max_tokens))
            progress.update()

    limits = httpx.Limits(max_connections=clients)
    headers = {"x-api-key": api_key, "anthropic-version": "2023-06-01"}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=600, limits=limits
    ) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(clients)))
        seconds = time.perf_counter() - start
    progress.close()
    ok = [o for o in outcomes if o.status == 200 and o.error is None]
    ttfts = sorted(o.time_to_first_token for o in ok if o.time_to_first_token is not None)
    tokens = sum(o.output_tokens for o in ok)
    for o in outcomes:
        if o.error is not None and o.status != 529:
            print(f"error ({o.status}): {o.error}", file=sys.stderr)
    return LevelResult(
        clients=clients,
        requests=len(outcomes),
        ok=len(ok),
        overloaded=sum(o.status == 529 for o in outcomes),
        errors=sum(o.error is not None and o.status != 529 for o in outcomes),
        seconds=seconds,
        output_tokens=tokens,
        tokens_per_second=tokens / seconds,
        ttft_p50=percentile(ttfts, 50),
        ttft_p95=percentile(ttfts, 95),
    )


def start_server(
    model_dir: str,
    port: int,
    api_key: str,
    max_batch_size: int,
    context: int,
    backend: str = "auto",
) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "charter.cli",
        "serve",
        "--allow-ungated",  # a speed benchmark: the model's release gate is not its business
        "--model",
        f"bench={model_dir}",
        "--port",
        str(port),
        "--api-key",
        api_key,
        "--max-batch-size",
        str(max_batch_size),
        "--context",
        str(context),
        "--log-level",
        "warning",
        "--backend",
        backend,
    ]
    environment = {k: v for k, v in os.environ.items() if k != "CHARTER_API_KEYS"}
    return subprocess.Popen(command, env=environment)


def wait_until_up(
    base_url: str, server: subprocess.Popen | None, timeout: float = 300, path: str = "/health"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            if httpx.get(f"{base_url}{path}", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"no server answered at {base_url}{path} within {timeout:.0f} s")


def markdown_table(results: list[LevelResult]) -> str:
    def ms(seconds: float | None) -> str:
        return "–" if seconds is None else f"{seconds * 1000:.0f}"

    base = results[0].tokens_per_second if results else 0
    lines = [
        "| clients | requests | output tok/s | × 1st level | TTFT p50 (ms) | TTFT p95 (ms) "
        "| 529s | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        speedup = r.tokens_per_second / base if base else float("nan")
        lines.append(
            f"| {r.clients} | {r.requests} | {r.tokens_per_second:.1f} | {speedup:.2f} "
            f"| {ms(r.ttft_p50)} | {ms(r.ttft_p95)} | {r.overloaded} | {r.errors} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[LevelResult]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", help="a checkpoint directory to start `charter serve` on")
    target.add_argument("--url", help="an already running server")
    parser.add_argument("--model-id", default="bench", help="the model id, with --url")
    parser.add_argument("--api-key", default=API_KEY)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--context", type=int, default=1024, help="tokens per sequence (sizes the KV cache)"
    )
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "torch", "llamacpp"], help="with --model"
    )
    parser.add_argument("--out", type=Path, help="append one JSON line per level")
    args = parser.parse_args(argv)

    server = None
    if args.model:
        base_url = f"http://127.0.0.1:{args.port}"
        server = start_server(
            args.model, args.port, args.api_key, max(args.clients), args.context, args.backend
        )
    else:
        base_url = args.url.rstrip("/")
    try:
        wait_until_up(base_url, server)
        model = "bench" if args.model else args.model_id
        results = [
            asyncio.run(run_level(base_url, args.api_key, model, n, args.requests, args.max_tokens))
            for n in args.clients
        ]
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
    if args.out:
        with args.out.open("a") as f:
            for r in results:
                f.write(json.dumps(asdict(r)) + "\n")
    print(markdown_table(results))
    return results


if __name__ == "__main__":
    main()
