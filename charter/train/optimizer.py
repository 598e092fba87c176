"""AdamW with weight decay only on the matrices of linear layers, and the settings of one.

Norm gains and embeddings are left undecayed: decaying a gain pulls it towards 0 rather than
towards "no change" (1), and decaying embeddings penalises rare tokens, whose rows get few
gradient updates, more than frequent ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from charter.train.schedule import SCHEDULES


@dataclass
class OptimizerSettings:
    """AdamW, its learning-rate schedule and gradient clipping, for one trained model. A run's
    `[train]` settings are these for its main model; a further trained model (a value model
    beside a policy) may be given its own."""

    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    schedule: str = "cosine"  # cosine | wsd
    decay_fraction: float = 0.2  # wsd: the final share of steps spent decaying
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r}: choose from {', '.join(SCHEDULES)}")

    def learning_rate(self, step: int, total_steps: int) -> float:
        kwargs = dict(
            peak=self.lr, warmup=self.warmup_steps, total=total_steps, min_ratio=self.min_lr_ratio
        )
        if self.schedule == "wsd":
            kwargs["decay_fraction"] = self.decay_fraction
        return SCHEDULES[self.schedule](step, **kwargs)

    def make_optimizer(self, model: nn.Module) -> torch.optim.AdamW:
        return make_adamw(model, self.lr, self.weight_decay, (self.beta1, self.beta2))


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for param in model.parameters():
        if not param.requires_grad or id(param) in seen:  # tied weights appear once
            continue
        seen.add(id(param))
        (decay if param.ndim >= 2 and id(param) not in embeddings else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_adamw(
    model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], eps: float = 1e-8
) -> torch.optim.AdamW:
    # The fused kernel exists for CPU and CUDA and is faster; it is deterministic on CPU.
    return torch.optim.AdamW(
        parameter_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, fused=True
    )
