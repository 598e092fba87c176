"""PPO's formulas, each a named function on tensors: token log-probabilities and entropies at a
temperature, generalised advantage estimation, the clipped policy and value losses, and the
adaptive KL controller's update (`charter.train.ppo` uses them; the tests check them on hand
numbers)."""

from __future__ import annotations

import torch
from torch import Tensor


def token_logprobs(logits: Tensor, targets: Tensor, temperature: float) -> Tensor:
    """log p(target) under softmax(logits / temperature): (B, T) from logits (B, T, V)."""
    logprobs = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def entropy(logits: Tensor, temperature: float) -> Tensor:
    """The entropy of softmax(logits / temperature) at each position: (B, T)."""
    logprobs = torch.log_softmax(logits.float() / temperature, dim=-1)
    return -(logprobs.exp() * logprobs).sum(-1)


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Advantages and returns (B, T) by generalised advantage estimation over the positions
    where `mask` (B, T) is on (one contiguous run per row: the reply); zero elsewhere. The value
    after a reply's last token is 0 (the episode ends)."""
    mask = mask.float()
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantages[:, t] = (delta + gamma * lam * next_advantage) * mask[:, t]
        next_value = values[:, t] * mask[:, t]
        next_advantage = advantages[:, t]
    return advantages, (advantages + values) * mask


def policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip_range: float
) -> tuple[Tensor, Tensor]:
    """PPO's clipped surrogate summed over `mask`, and the number of tokens where it clipped."""
    ratio = torch.exp(logprobs - old_logprobs)
    clipped = torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    losses = torch.maximum(-advantages * ratio, -advantages * clipped)
    was_clipped = (-advantages * clipped > -advantages * ratio) & mask
    return (losses * mask).sum(), was_clipped.sum()


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip_range: float
) -> Tensor:
    """½·max((V − R)², (V_clipped − R)²) summed over `mask`, V_clipped within ±clip_range of the
    rollout's values."""
    clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    losses = 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)
    return (losses * mask).sum()


def adapt_kl_coef(coef: float, kl: float, target: float, samples: int, horizon: int) -> float:
    """The adaptive KL controller's next β after a batch of `samples` replies whose mean KL was
    `kl`."""
    error = min(max(kl / target - 1, -0.2), 0.2)
    return coef * (1 + error * samples / horizon)
