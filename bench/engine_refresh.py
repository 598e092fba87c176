"""Sampling from a model being trained: one engine that follows the weights against a new engine
after every optimizer step.

An RL loop generates from its policy between optimizer steps. `refresh`: one engine on
`TorchBackend(model, follow_weights=True)`, built once, whose next generation after a step reads
the new weights from the model it shares them with. `rebuild`: a new engine on the model after
every step (its KV cache allocated again, and with --compile its decode step compiled again). Each
round is one AdamW step on a random batch, then --prompts prompts of --prompt-len tokens generate
--new-tokens tokens each, greedily. The two modes train identical copies of the model on the same
batches, so their generations must match; they alternate which goes first in a round. Prints,
per mode, the time from the optimizer step to the end of the generation (construction included
for `rebuild`): the first round, and the median and the fastest of the others (the fastest is
the least disturbed by other work on the machine); then what a rebuild adds, an engine's
construction alone (its KV cache; a compiled step is compiled at its first call, not here).

    python bench/engine_refresh.py --preset demo [--rounds 6] [--compile]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters

from charter.config import preset
from charter.data.documents import python_docstrings
from charter.infer.engine import Engine
from charter.infer.sampling import SamplingParams
from charter.infer.torch_backend import TorchBackend
from charter.model import Transformer
from charter.tokenizer import Tokenizer
from charter.train.optimizer import make_adamw


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo", help="model size (micro, demo, …)")
    parser.add_argument("--rounds", type=int, default=6, help="optimizer steps, each generating")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=512, help="the engine's context")
    parser.add_argument("--compile", action="store_true", help="compiled decode steps")
    args = parser.parse_args(argv)

    tokenizer = Tokenizer.train([d.text for d in python_docstrings()], vocab_size=512)
    torch.manual_seed(0)
    config = preset(args.preset, vocab_size=tokenizer.vocab_size)
    models = {"refresh": Transformer(config)}  # in training mode, as a trainer holds it
    models["rebuild"] = copy.deepcopy(models["refresh"])
    optimizers = {
        mode: make_adamw(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
        for mode, model in models.items()
    }
    prompts = torch.randint(config.vocab_size, (args.prompts, args.prompt_len)).tolist()
    greedy = SamplingParams(max_new_tokens=args.new_tokens, temperature=0)
    build = lambda model: Engine(  # noqa: E731
        TorchBackend(
            model,
            max_batch_size=args.prompts,
            max_len=args.max_len,
            compile=args.compile,
            follow_weights=True,
        ),
        tokenizer,
        eos_token_ids=[],
    )
    following = build(models["refresh"])
    seconds: dict[str, list[float]] = {mode: [] for mode in models}
    for round_ in range(args.rounds):
        batch = torch.randint(
            config.vocab_size, (4, 65), generator=torch.Generator().manual_seed(round_)
        )
        outputs = {}
        order = list(models) if round_ % 2 == 0 else list(models)[::-1]  # neither always first
        for mode in order:
            model = models[mode]
            logits = model(batch[:, :-1])  # (B, T, V)
            F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()).backward()
            optimizers[mode].step()
            optimizers[mode].zero_grad(set_to_none=True)
            start = time.perf_counter()
            engine = following if mode == "refresh" else build(model)
            outputs[mode] = [c.token_ids for c in engine.generate(prompts, greedy)]
            seconds[mode].append(time.perf_counter() - start)
        if outputs["refresh"] != outputs["rebuild"]:
            raise SystemExit(f"round {round_}: the two engines generated different tokens")
        print(
            f"round {round_}: refresh {seconds['refresh'][-1] * 1e3:8.1f} ms, "
            f"rebuild {seconds['rebuild'][-1] * 1e3:8.1f} ms"
        )

    print(
        f"\n{args.preset}, {sum(p.numel() for p in models['refresh'].parameters()):,} parameters, "
        f"{'compiled' if args.compile else 'eager'}; {args.prompts} prompts × {args.prompt_len} "
        f"tokens → {args.new_tokens} new tokens each, context {args.max_len}; same tokens: yes"
        + (f"; graphs compiled: {counters['stats']['unique_graphs']}" if args.compile else "")
    )
    print("| engine | first round (ms) | median of the others (ms) | fastest of the others (ms) |")
    print("|---|---:|---:|---:|")
    for mode, times in seconds.items():
        rest = [t * 1e3 for t in times[1:]] or [float("nan")]
        print(
            f"| {mode} | {times[0] * 1e3:.1f} | {statistics.median(rest):.1f} | {min(rest):.1f} |"
        )
    builds = []
    for _ in range(20):
        start = time.perf_counter()
        build(models["rebuild"])
        builds.append((time.perf_counter() - start) * 1e3)
    print(
        f"\nconstructing an engine: median {statistics.median(builds):.2f} ms, "
        f"fastest {min(builds):.2f} ms (20 times)"
    )
    return seconds


if __name__ == "__main__":
    main()
