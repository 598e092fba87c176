"""What the Generator costs over the bare engine: the same prompts, greedy, at one batch size,
through `Engine.generate` (token ids in, completions out) and through `LocalGenerator.generate`
(conversations in, rendered, run on the worker thread, parsed into turns), interleaved so both
see the same minutes of this machine. Prints output tokens/s of each per round and the ratio of
the medians.

    python bench/generator_overhead.py --model runs/smollm2 [--backend llamacpp|torch]
        [--batch-size 8] [--prompts 32] [--max-tokens 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from serve_load import PROMPTS

from charter.infer.backends import load_engine
from charter.infer.generator import user_turn
from charter.infer.local import LocalGenerator
from charter.infer.sampling import SamplingParams


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a checkpoint directory")
    parser.add_argument("--backend", default="llamacpp", choices=["torch", "llamacpp"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--context", type=int, default=1024, help="tokens per sequence")
    args = parser.parse_args(argv)

    engine = load_engine(
        args.model, args.backend, max_batch_size=args.batch_size, max_len=args.context
    )
    requests = [
        user_turn(PROMPTS[i % len(PROMPTS)], max_tokens=args.max_tokens, temperature=0)
        for i in range(args.prompts)
    ]
    params = SamplingParams(max_new_tokens=args.max_tokens, temperature=0)
    rates: dict[str, list[float]] = {"engine": [], "generator": []}
    with LocalGenerator(engine, "bench") as generator:
        prompts = [generator.prompt_ids(r) for r in requests]  # the same ids on both paths
        generator.generate(requests[: args.batch_size])  # warm up (threads, caches)
        for round_number in range(args.rounds):
            start = time.perf_counter()
            completions = engine.generate(prompts, params)
            engine_seconds = time.perf_counter() - start
            start = time.perf_counter()
            turns = generator.generate(requests)
            generator_seconds = time.perf_counter() - start
            engine_tokens = sum(len(c.token_ids) for c in completions)
            generated = [t.output_tokens - (t.stop_reason == "end_turn") for t in turns]
            assert generated == [len(c.token_ids) for c in completions], "different outputs"
            rates["engine"].append(engine_tokens / engine_seconds)
            rates["generator"].append(sum(generated) / generator_seconds)
            print(
                f"round {round_number + 1}: engine {rates['engine'][-1]:.1f} tokens/s, "
                f"generator {rates['generator'][-1]:.1f} tokens/s "
                f"({rates['generator'][-1] / rates['engine'][-1]:.3f}x)",
                flush=True,
            )
    engine_median = statistics.median(rates["engine"])
    generator_median = statistics.median(rates["generator"])
    print(
        f"median over {args.rounds} rounds ({args.prompts} prompts, batch {args.batch_size}, "
        f"{args.max_tokens} tokens, {args.backend}): engine {engine_median:.1f} tokens/s, "
        f"generator {generator_median:.1f} tokens/s, ratio {generator_median / engine_median:.3f}"
    )
    return {"rates": rates, "ratio": generator_median / engine_median}


if __name__ == "__main__":
    main()
