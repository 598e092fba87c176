"""PPO's rollout sampling against the bare engine: the same prompts, seeds and batch size through
`Engine.generate` alone, and with the per-token log-probability recorders PPO adds
(`charter.train.ppo.SampledLogprobs`), on a policy in fp32 as PPO trains it. Rounds alternate so
both see the same machine load. Prints sampled tokens/s of each and their ratio.

    python bench/ppo_rollout.py --policy runs/cai/sl-cai-balanced-model/final \\
        --prompts runs/rl/ppo-prompts.jsonl [--rows 16] [--batch 32] [--max-tokens 96] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from charter.chat.format import chat_format
from charter.checkpoint import load_policy_with_value, load_tokenizer
from charter.data.prompt_sets import read_prompt_file
from charter.infer.engine import Engine
from charter.infer.sampling import SamplingParams
from charter.infer.torch_backend import TorchBackend
from charter.train.ppo import SampledLogprobs, read_prompts


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True)
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--rows", type=int, default=16, help="the engine's batch size")
    parser.add_argument("--batch", type=int, default=32, help="prompts per round")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    tokenizer = load_tokenizer(args.policy)
    format = chat_format(tokenizer)
    model = load_policy_with_value(args.policy, value_head_seed=0)
    texts = [p.text for p in read_prompt_file(args.prompts)[: args.batch]]
    prompts, _, _ = read_prompts(texts, format, max_tokens=model.config.max_position_embeddings)
    engine = Engine(
        TorchBackend(model.policy, max_batch_size=args.rows, follow_weights=True), tokenizer
    )
    params = [SamplingParams(args.max_tokens, 1.0, seed=i) for i in range(len(prompts))]

    def run(recorded: bool) -> float:
        processors = [[SampledLogprobs(1.0)] for _ in prompts] if recorded else None
        started = time.perf_counter()
        completions = engine.generate(prompts, params, logits_processors=processors)
        tokens = sum(len(c.token_ids) + (c.end_token_id is not None) for c in completions)
        return tokens / (time.perf_counter() - started)

    run(False)  # warm-up
    bare, ppo = [], []
    for _ in range(args.rounds):
        bare.append(run(False))
        ppo.append(run(True))
    result = {
        "bare_tokens_per_s": statistics.median(bare),
        "ppo_tokens_per_s": statistics.median(ppo),
    }
    result["ratio"] = result["ppo_tokens_per_s"] / result["bare_tokens_per_s"]
    print(
        f"{len(prompts)} prompts, {args.rows} rows, ≤ {args.max_tokens} tokens, median of "
        f"{args.rounds} rounds: bare engine {result['bare_tokens_per_s']:.1f} tokens/s, PPO's "
        f"rollouts {result['ppo_tokens_per_s']:.1f} tokens/s ({result['ratio']:.2f}×)"
    )
    return result


if __name__ == "__main__":
    main()
