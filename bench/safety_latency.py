"""What the safety guard costs (charter/safety): the input classifier's milliseconds per request,
one request at a time, at a few prompt lengths; and the output monitor's cost in a stream: one
greedy turn streamed through the bare generator and through a guard whose monitor reads the
reply every k tokens (input classifier off, a threshold nothing reaches), interleaved round by
round so all see the same minutes of this machine. Prints the medians: ms per request, tokens/s
and the ms each token gains.

    python bench/safety_latency.py --model runs/smollm2 --judge runs/judge-v2/best
        [--backend auto] [--device cpu] [--judge-device cpu] [--judge-dtype fp32]
        [--lengths 16,128,512] [--every 16,32] [--max-tokens 256] [--rounds 3] [--repeats 10]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

from charter.align.judge import PRECISIONS, Judge
from charter.infer.generator import Generator, Turn, user_turn
from charter.infer.spec import load_generator
from charter.safety.config import InputSettings, OutputSettings, SafetyConfig
from charter.safety.guard import Guard
from charter.safety.input_classifier import InputClassifier

FILLER = (
    "I am planning a week of meals for a family of four and would like some ideas that use "
    "seasonal vegetables, keep the cost down and can mostly be cooked ahead on a Sunday."
)
STORY = "Write a long, detailed story about a lighthouse keeper and the winter storm of 1899."


def words(n: int) -> str:
    """A benign prompt of `n` words (FILLER, repeated)."""
    filler = FILLER.split()
    return " ".join(filler[i % len(filler)] for i in range(n))


def input_latency(judge: Judge, config: SafetyConfig, lengths: list[int], repeats: int) -> dict:
    """Median ms of one input check, per prompt length in words."""
    classifier = InputClassifier(judge, config)
    results = {}
    for length in lengths:
        conversation = user_turn(words(length)).conversation
        classifier.check(conversation)  # warm up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            classifier.check(conversation)
            times.append((time.perf_counter() - start) * 1000)
        results[length] = statistics.median(times)
        print(f"input classifier, {length} words: {results[length]:.2f} ms/request", flush=True)
    return results


async def _stream(generator: Generator, max_tokens: int) -> tuple[Turn, float]:
    stream = await generator.open(user_turn(STORY, max_tokens=max_tokens, temperature=0))
    start = time.perf_counter()
    async for _ in stream.events():
        pass
    return stream.turn, time.perf_counter() - start


def stream_rates(generator: Generator, guards: dict[str, Guard], args) -> dict[str, float]:
    """Median output tokens/s of one streamed turn, bare and through each guard."""
    variants: dict[str, Generator] = {"bare": generator, **guards}
    asyncio.run(_stream(generator, 8))  # warm up (threads, caches)
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, variant in variants.items():
            turn, seconds = asyncio.run(_stream(variant, args.max_tokens))
            if turn.stop_reason == "refusal":
                print(f"note: the monitor stopped the {name} turn ({turn.output_tokens} tokens)")
            rates[name].append(turn.output_tokens / seconds)
    return {name: statistics.median(values) for name, values in rates.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model spec (a checkpoint directory)")
    parser.add_argument("--judge", required=True, type=Path, help="a judge checkpoint")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--device", default="cpu", help="the model's")
    parser.add_argument("--judge-device", default="cpu")
    parser.add_argument("--judge-dtype", default="fp32", choices=PRECISIONS)
    parser.add_argument("--lengths", default="16,128,512", help="prompt lengths, in words")
    parser.add_argument("--every", default="16,32", help="the monitor's k values")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10, help="input checks per length")
    args = parser.parse_args(argv)

    judge = Judge.load_as(args.judge, args.judge_dtype, args.judge_device)
    base = SafetyConfig(args.judge, "(blocked)", input=InputSettings(enabled=False))
    lengths = [int(n) for n in args.lengths.split(",")]
    input_ms = input_latency(judge, base, lengths, args.repeats)

    generator = load_generator(
        args.model, backend=args.backend, max_batch_size=1, device=args.device
    )
    with generator:
        guards = {
            f"k={k}": Guard(generator, judge, _monitoring(base, int(k)))
            for k in args.every.split(",")
        }
        rates = stream_rates(generator, guards, args)
    added = {name: 1000 / rates[name] - 1000 / rates["bare"] for name in guards}
    print(f"stream ({args.max_tokens} tokens max, median of {args.rounds}):")
    print(f"  bare: {rates['bare']:.1f} tokens/s")
    for name in guards:
        print(f"  monitor {name}: {rates[name]:.1f} tokens/s, {added[name]:+.2f} ms/token")
    return {"input_ms": input_ms, "tokens_per_s": rates, "added_ms_per_token": added}


def _monitoring(base: SafetyConfig, every: int) -> SafetyConfig:
    """`base` with the monitor reading every `every` tokens, at a threshold of 1 (a probability
    reaches it only by rounding), so that the turns run to their end."""
    output = OutputSettings(enabled=True, threshold=1.0, every_tokens=every)
    return dataclasses.replace(base, output=output)


if __name__ == "__main__":
    main()
