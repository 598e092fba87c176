"""Learning-rate schedules as plain functions of the step, so a resumed run needs no state."""

from __future__ import annotations

import math


def warmup_cosine(step: int, *, peak: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to `peak`, then a cosine down to `min_ratio · peak` at `total` steps."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def warmup_stable_decay(
    step: int, *, peak: float, warmup: int, total: int, min_ratio: float, decay_fraction: float
) -> float:
    """WSD: linear warmup, a long constant phase, then a linear decay over the last
    `decay_fraction` of training. Its constant phase makes any stable checkpoint a good place to
    branch a longer run from."""
    if step < warmup:
        return peak * (step + 1) / warmup
    decay_start = total - int(decay_fraction * total)
    if step < decay_start:
        return peak
    progress = min(1.0, (step - decay_start) / max(1, total - decay_start))
    return peak * (1 - (1 - min_ratio) * progress)


SCHEDULES = {"cosine": warmup_cosine, "wsd": warmup_stable_decay}
