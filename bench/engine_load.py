"""The serving benchmarks' workload on the bare engine, without HTTP: where a server's time goes.

--prompts chat prompts (serve_load's, with serve_vs_llamacpp's system prompt) go through one
engine of --rows rows, greedy, --max-tokens each, admitted whenever a row frees up, as the
server's worker does. Prints output tokens/s, the time spent prefilling admitted prompts and in
decode steps, and per quarter of the run the mean decode step and the mean number of rows in it
(a step that slows at an unchanged number of rows is the engine's, not the load's).

    python bench/engine_load.py --model runs/smollm2 [--backend llamacpp] [--rows 16]
        [--prompts 64] [--max-tokens 64] [--context 1024]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from serve_load import PROMPTS
from serve_vs_llamacpp import SYSTEM
from tqdm import tqdm

from charter.checkpoint import load_tokenizer
from charter.infer.backends import load_engine
from charter.infer.engine import GenerationRequest
from charter.infer.sampling import SamplingParams


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a checkpoint directory")
    parser.add_argument("--backend", default="llamacpp", choices=["torch", "llamacpp"])
    parser.add_argument("--rows", type=int, default=16, help="the engine's max batch size")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--context", type=int, default=1024, help="tokens per sequence")
    args = parser.parse_args(argv)

    tokenizer = load_tokenizer(args.model)
    engine = load_engine(args.model, args.backend, max_batch_size=args.rows, max_len=args.context)
    params = SamplingParams(temperature=0, max_new_tokens=args.max_tokens)
    requests = []
    for i in range(args.prompts):
        chat = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": PROMPTS[i % len(PROMPTS)]},
        ]
        prompt = tokenizer.encode(tokenizer.apply_chat_template(chat, add_generation_prompt=True))
        requests.append(GenerationRequest(prompt, params))

    waiting = requests[::-1]
    prefill_seconds, steps = 0.0, []  # steps: (rows, seconds) of each decode step
    start = time.perf_counter()
    with tqdm(total=len(requests), unit="completion") as bar:
        while waiting or engine.active_requests:
            admitted = time.perf_counter()
            while waiting and engine.free_rows:
                engine.add(waiting.pop())
            stepped = time.perf_counter()
            rows = len(engine.active_requests)
            bar.update(len(engine.step()))
            prefill_seconds += stepped - admitted
            steps.append((rows, time.perf_counter() - stepped))
    seconds = time.perf_counter() - start

    tokens = sum(len(r.generated) for r in requests)
    decode_seconds = sum(s for _, s in steps)
    print(f"{tokens} output tokens in {seconds:.1f} s: {tokens / seconds:.1f} tokens/s")
    print(
        f"prefills: {prefill_seconds:.1f} s ({prefill_seconds / len(requests) * 1e3:.0f} ms each)"
    )
    print(f"decode steps: {decode_seconds:.1f} s ({decode_seconds / len(steps) * 1e3:.1f} ms each)")
    for quarter in range(4):
        part = steps[quarter * len(steps) // 4 : (quarter + 1) * len(steps) // 4]
        mean_ms = sum(s for _, s in part) / len(part) * 1e3
        mean_rows = sum(r for r, _ in part) / len(part)
        print(f"quarter {quarter + 1}: mean step {mean_ms:.1f} ms over {mean_rows:.1f} rows")
    return {"tokens": tokens, "tokens_per_second": tokens / seconds, "steps": steps}


if __name__ == "__main__":
    main()
