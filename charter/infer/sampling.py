"""Choosing the next token: greedy, or sampled with temperature, top-k and top-p."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 1.0  # 0 → greedy
    top_k: int = 0  # 0 → no top-k cut
    top_p: float = 1.0  # 1 → no nucleus cut
    stop: list[str] = field(default_factory=list)  # matched on decoded text
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be ≥ 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be ≥ 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be ≥ 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if any(not s for s in self.stop):
            raise ValueError("stop sequences must be non-empty strings")

    def make_generator(self, device: torch.device | str = "cpu") -> torch.Generator | None:
        if self.temperature == 0:
            return None
        generator = torch.Generator(device=device)
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        return generator


def filter_logits(logits: Tensor, top_k: int, top_p: float) -> Tensor:
    """`logits` (V,) with tokens outside the top-k and outside the top-p nucleus set to -inf."""
    if top_k and top_k < logits.shape[-1]:
        kth_best = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = sorted_logits.softmax(-1)
        # Drop a token if the tokens ranked above it already hold ≥ top_p of the mass; the best
        # token is always kept.
        mass_before = probs.cumsum(-1) - probs
        drop_sorted = mass_before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def best_token(logits: Tensor) -> int:
    """The id of the highest of `logits` (V,) (the first, on a tie)."""
    if not logits.is_cpu:
        return int(logits.argmax())
    # On the CPU numpy's argmax reads the tensor's memory without torch's dispatch, which costs
    # more than the argmax itself when run once per token of a small model (and torch's argmax
    # over bf16 is slower than a conversion and numpy's).
    if logits.dtype != torch.float32:
        logits = logits.float()
    return int(logits.numpy().argmax())


def sample_next_token(
    logits: Tensor, params: SamplingParams, generator: torch.Generator | None
) -> int:
    """One token id from `logits` (V,)."""
    if params.temperature == 0:
        return best_token(logits)
    scores = filter_logits(logits.float() / params.temperature, params.top_k, params.top_p)
    return int(torch.multinomial(scores.softmax(-1), 1, generator=generator))
