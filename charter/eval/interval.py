"""Metrics with their 95 % intervals, as `eval.json` holds them.

A rate (refusals of n prompts) gets the Wilson score interval, which stays inside [0, 1] and is
honest at 0 of n and at small n, where the normal approximation's is not. A ratio of sums over
documents (bits per byte) gets a percentile bootstrap over the documents, with a fixed seed, so
the same rows always give the same interval.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Z95 = 1.959964  # the standard normal's 97.5th percentile
BOOTSTRAP_SAMPLES = 1000


@dataclass(frozen=True)
class Metric:
    value: float | None  # None when nothing was measured (n = 0)
    n: int  # the items it is measured on
    low: float | None
    high: float | None
    measured_by: str  # the detector, judge or check that decided each item
    count: int | None = None  # for a rate: the items that counted

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"value": self.value, "n": self.n}
        if self.count is not None:
            data["count"] = self.count
        data["ci95"] = [self.low, self.high]
        data["measured_by"] = self.measured_by
        return data


def wilson(count: int, n: int) -> tuple[float, float]:
    """The Wilson score interval of `count` successes in `n` trials, at 95 %."""
    if n == 0:
        raise ValueError("an interval needs at least one trial")
    p = count / n
    denominator = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denominator
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(flags: Sequence[bool], measured_by: str) -> Metric:
    """The share of `flags` that are true, with its Wilson interval (None of 0 items)."""
    return proportion(sum(map(bool, flags)), len(flags), measured_by)


def proportion(count: int, n: int, measured_by: str) -> Metric:
    """`count` of `n` as a rate, with its Wilson interval (None of 0 items)."""
    if not 0 <= count <= n:
        raise ValueError(f"a proportion needs 0 ≤ count ≤ n, got {count} of {n}")
    if n == 0:
        return Metric(None, 0, None, None, measured_by, 0)
    low, high = wilson(count, n)
    return Metric(count / n, n, low, high, measured_by, count)


def ratio(numerators: Sequence[float], denominators: Sequence[float], measured_by: str) -> Metric:
    """sum(numerators) / sum(denominators) over items, with a percentile bootstrap interval over
    the items (seed 0)."""
    if len(numerators) != len(denominators):
        raise ValueError("numerators and denominators differ in length")
    n = len(numerators)
    if n == 0 or sum(denominators) <= 0:
        return Metric(None, n, None, None, measured_by)
    rng = random.Random(0)
    estimates = []
    for _ in range(BOOTSTRAP_SAMPLES):
        drawn = [rng.randrange(n) for _ in range(n)]
        estimates.append(sum(numerators[i] for i in drawn) / sum(denominators[i] for i in drawn))
    estimates.sort()
    low = estimates[int(0.025 * BOOTSTRAP_SAMPLES)]
    high = estimates[int(0.975 * BOOTSTRAP_SAMPLES) - 1]
    return Metric(sum(numerators) / sum(denominators), n, low, high, measured_by)
