"""What the fine-tuning tasks (SFT, the judge) share: seeded, length-bucketed global batches, and
freezing a decoder's lower layers.

Batch `k` is a pure function of (seed, k): the examples are visited in a seeded order that is
reshuffled every epoch, and each global batch is sorted by length, so its micro-batches hold
similar lengths and little padding. Resume is exact, and ranks need not talk to pick their
share.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from charter.model import Transformer


@lru_cache(maxsize=4)
def _epoch_order(seed: int, n: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def length_bucketed_batch(
    lengths: Sequence[int], seed: int, step: int, batch_size: int, what: str = "examples"
) -> list[int]:
    """Indices of global batch `step` among items of these `lengths`, shortest first."""
    per_epoch = len(lengths) // batch_size
    if per_epoch == 0:
        raise ValueError(f"batch_size {batch_size} exceeds the {len(lengths)} {what}")
    epoch, index = divmod(step, per_epoch)
    chosen = _epoch_order(seed, len(lengths), epoch)[index * batch_size : (index + 1) * batch_size]
    return sorted(chosen.tolist(), key=lambda i: (lengths[i], i))


def freeze_lower_layers(decoder: Transformer, n: int, section: str) -> None:
    """Train only the blocks above the first `n` (and not the embeddings): the backward pass
    then stops early, and what lower layers know stays put. `section` names the settings
    section in the error."""
    if not 0 <= n <= len(decoder.layers):
        raise ValueError(
            f"[{section}] freeze_layers {n}: the model has {len(decoder.layers)} layers"
        )
    if n:
        for module in (decoder.embed_tokens, *decoder.layers[:n]):
            module.requires_grad_(False)
