"""Architecture ablation: does the seed's Llama recipe beat GPT-2's at this scale?

Llama-style (RMSNorm, SwiGLU, RoPE, grouped-query attention) against GPT-2-style (LayerNorm
with biases, GELU MLP, learned absolute positions, multi-head attention), at equal parameter
count (the SwiGLU width is chosen to match GPT-2's total), trained on the same shards, in the same
order, for the same tokens, with the same optimizer and schedule, by Charter's own training loop.
Prints validation loss and bits per byte of both, side by side, at every evaluation.

    python bench/ablation.py --data runs/demo/data --out runs/ablation [--steps 300]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from charter.config import ModelConfig, num_parameters
from charter.data.shards import TokenShards
from charter.metrics import read_metrics
from charter.model import Transformer
from charter.tokenizer import Tokenizer
from charter.train.distributed import Distributed
from charter.train.loop import TrainConfig, train
from charter.train.pretrain import DataSettings, PretrainTask


class GPT2Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.fc, self.fc_out = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(C, dim=-1)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
        x = x + self.proj(attended.transpose(1, 2).reshape(B, T, C))
        return x + self.fc_out(F.gelu(self.fc(self.ln_2(x))))


class GPT2Style(nn.Module):
    def __init__(self, vocab: int, width: int, layers: int, heads: int, context: int) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(GPT2Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.wte(input_ids) + self.wpe(positions)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T  # tied LM head


class AblationTask(PretrainTask):
    """Pretraining, with checkpoints as plain safetensors (GPT-2-style is no Llama)."""

    def write_checkpoint(self, directory: Path, state_dict: dict) -> None:
        copies = {k: v.clone() for k, v in state_dict.items()}  # tied weights share memory
        save_file(copies, directory / "model.safetensors")

    def read_checkpoint(self, directory: Path) -> dict:
        return load_file(directory / "model.safetensors")


def llama_config_matching(
    gpt2_params: int, vocab: int, width: int, layers: int, context: int
) -> ModelConfig:
    """The Llama-style config of this shape whose SwiGLU width brings it closest to GPT-2's
    parameter count (GQA saves attention parameters; the MLP spends them)."""
    best = None
    for hidden in range(64, 8 * width, 16):
        config = ModelConfig(
            vocab_size=vocab,
            hidden_size=width,
            intermediate_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=width // 64,
            num_key_value_heads=max(1, width // 256),
            max_position_embeddings=context,
        )
        gap = abs(num_parameters(config) - gpt2_params)
        if best is None or gap < best[0]:
            best = (gap, config)
    return best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seq-len", type=int, default=256)
    args = parser.parse_args()

    tokenizer = Tokenizer.load(TokenShards(args.data, "train").tokenizer_directory())
    vocab = tokenizer.vocab_size
    gpt2 = lambda: GPT2Style(vocab, args.width, args.layers, args.width // 64, args.seq_len)  # noqa: E731
    gpt2_params = sum(p.numel() for p in gpt2().parameters())
    llama_config = llama_config_matching(gpt2_params, vocab, args.width, args.layers, args.seq_len)
    settings = TrainConfig(
        steps=args.steps,
        batch_size=16,
        micro_batch_size=16,
        lr=3e-3,
        warmup_steps=20,
        eval_every=max(1, args.steps // 6),
        save_every=args.steps,
        dtype="bf16",
        compile=True,
    )
    data = DataSettings(seq_len=args.seq_len, eval_windows=64)
    models = {"llama-style": lambda: Transformer(llama_config), "gpt2-style": gpt2}
    parameters = {}
    for name, build in models.items():
        torch.manual_seed(0)
        model = build()
        parameters[name] = sum(p.numel() for p in model.parameters())
        task = AblationTask(args.data, llama_config, tokenizer, data, seed=0)
        train(model, task, settings, args.out / name, Distributed())

    curves = {
        name: [r for r in read_metrics(args.out / name / "metrics.jsonl") if "val_loss" in r]
        for name in models
    }
    print(
        f"\nparameters: llama-style {parameters['llama-style']:,} "
        f"(SwiGLU width {llama_config.intermediate_size}, {llama_config.num_key_value_heads} "
        f"KV heads), gpt2-style {parameters['gpt2-style']:,}; "
        f"{args.steps} steps × 16 × {args.seq_len} tokens each, bf16 autocast + compile\n"
    )
    print(
        f"{'tokens':>10s} {'llama loss':>11s} {'gpt2 loss':>10s} {'llama bpb':>10s} "
        f"{'gpt2 bpb':>9s}"
    )
    for a, b in zip(*curves.values()):
        print(
            f"{a['tokens']:10,d} {a['val_loss']:11.4f} {b['val_loss']:10.4f} "
            f"{a['val_bpb']:10.4f} {b['val_bpb']:9.4f}"
        )
    final = {name: rows[-1] for name, rows in curves.items()}
    gap = final["gpt2-style"]["val_bpb"] - final["llama-style"]["val_bpb"]
    print(
        f"\nfinal: llama-style is {gap:+.4f} bits per byte better "
        f"({100 * gap / final['gpt2-style']['val_bpb']:+.1f}%)"
    )
    (args.out / "summary.json").write_text(
        json.dumps({"parameters": parameters, "final": final, "bpb_gap": gap}, indent=2)
    )


if __name__ == "__main__":
    main()
