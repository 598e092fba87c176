"""RL-CAI preference labels: the policy answers each prompt twice, and a feedback model says
under the constitution which of the two answers it prefers, as a probability.

This is the data step of reinforcement learning from AI feedback. Instead of people choosing
between two replies, a feedback model is asked a multiple-choice question per principle (see
`feedback.compare`), and the answer is kept as a *soft* label: `p_chosen`, the probability that
the chosen reply is the better one, not a hard 1. A reward model trained on these pairs learns
how sure the feedback was, not only which way it went.

For each prompt:

- the policy samples two replies (`temperature`, `max_tokens`), each with its own seed drawn
  from `settings.seed` and the prompt's text, so the same prompt gets the same two samples on
  every run, whatever else is in the batch;
- a pair is kept only if both replies ended their turn, neither is empty, and they differ; the
  rest are counted by reason ("cut off", "empty", "identical", and "too long for the context"
  for prompts longer than the policy's context: `generation_stage.unusable`);
- `principles_per_pair` distinct principles are drawn for it (again from `settings.seed` and
  the prompt's text) and the feedback model's probabilities under them are averaged: an
  ensemble, so no single wording of a principle decides the label. Each question is asked in
  both orders, which cancels the model's bias for a position;
- the reply with P ≥ 0.5 becomes `chosen` (on exactly 0.5, the first sample), and `p_chosen`
  is that probability; `per_principle` keeps each principle's share, from the chosen side.

The probability comes from the options' log-probabilities where the feedback model can score
(a local PyTorch model), and from the shares of sampled votes where it cannot (a remote
endpoint, llama.cpp): `method="auto"` picks. With `reasoning_tokens` the feedback model reasons
before it answers (chain of thought); reasoning makes its answers overconfident, so the label
is then clamped to [0.4, 0.6] unless `clamp` says otherwise (`(0.0, 1.0)` turns it off). The
reasoning texts are not stored; a row records `reasoning_tokens` and the `clamp` used.

Rows go to a JSONL file a batch at a time (`batch_size` prompts: one `generate` call for all
their samples, one `compare` call for the kept pairs, then one durable append), so a kill loses
at most the batch in flight. A rerun with the same `out` skips the prompts already in it and
labels the rest. Dropped prompts are not recorded, so a rerun tries them again; their samples
are seeded, so they drop again, at the cost of sampling them once more. Logprob labels do not
depend on the batch; vote seeds follow a pair's place in its `compare` call, so on a generator
that honours seeds a resumed run's votes may differ from an uninterrupted run's.

`charter.data.preferences.read_preferences` reads such a file back for the reward model and
DPO, human pairs (`charter data hh-preferences`) included.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from charter.align.feedback import Comparison, ComparisonResult, Principle, compare
from charter.align.generation_stage import at_least, pending, unusable
from charter.files import ResumableJsonl
from charter.infer.generator import Generator, InvalidRequest, Turn, user_turn

COT_CLAMP = (0.4, 0.6)  # RL-CAI's bounds for chain-of-thought labels
_SEEDS = 2**31  # sample seeds below this fit every backend's seed type


@dataclass(frozen=True)
class CompareSettings:
    """How pairs are sampled and judged (see the module docstring)."""

    principles_per_pair: int = 4  # k, ensembled
    temperature: float = 1.0  # the policy's two samples
    max_tokens: int = 128
    method: Literal["auto", "logprobs", "votes"] = "auto"
    votes: int = 8  # votes per question, where the feedback model cannot score
    vote_temperature: float = 1.0
    reasoning_tokens: int | None = None  # chain of thought, in up to this many tokens
    clamp: tuple[float, float] | None = None  # bounds on the label; see `label_clamp`
    seed: int = 0
    batch_size: int = 32  # prompts per step written to disk

    def __post_init__(self) -> None:
        at_least(self, principles_per_pair=1, max_tokens=1, votes=1, batch_size=1)
        # Greedy samples would be identical, and every pair dropped.
        if not self.temperature > 0:
            raise ValueError(
                f"temperature: must be > 0 to sample two replies, got {self.temperature}"
            )
        if self.method not in ("auto", "logprobs", "votes"):
            raise ValueError(f"method: must be auto, logprobs or votes, got {self.method!r}")
        if not self.vote_temperature >= 0:
            raise ValueError(f"vote_temperature: must be ≥ 0, got {self.vote_temperature}")
        if self.reasoning_tokens is not None:
            at_least(self, reasoning_tokens=1)
        if self.clamp is not None:
            # Which sample is "A" is arbitrary, so a clamp must treat both sides alike.
            low, high = self.clamp
            if not (0 <= low <= 0.5 <= high <= 1 and math.isclose(low + high, 1)):
                raise ValueError(
                    f"clamp: must be (low, 1 - low) with 0 ≤ low ≤ 0.5, got {self.clamp}"
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed: must be an integer, got {self.seed!r}")

    @property
    def label_clamp(self) -> tuple[float, float] | None:
        """`clamp`, or with chain of thought and no clamp given, RL-CAI's [0.4, 0.6]."""
        if self.clamp is None and self.reasoning_tokens is not None:
            return COT_CLAMP
        return self.clamp


def draws(
    prompt: str, principles: Sequence[Principle], settings: CompareSettings
) -> tuple[tuple[int, int], list[Principle]]:
    """The two sample seeds and the distinct principles for `prompt`: fixed by `settings.seed`
    and the prompt's text alone, so a rerun or a resumed run draws the same."""
    rng = random.Random(f"{settings.seed}\n{prompt}")  # a str seeds the same in every process
    seeds = (rng.randrange(_SEEDS), rng.randrange(_SEEDS))
    return seeds, rng.sample(list(principles), settings.principles_per_pair)


def label_pairs(
    prompts: Sequence[str],
    policy: Generator,
    feedback: Generator,
    principles: Sequence[Principle],
    out: str | Path,
    settings: CompareSettings = CompareSettings(),
    *,
    source: str = "cai-compare",
) -> Counter:
    """Label a pair of the policy's replies to each prompt not yet in `out` and append the rows
    there; returns the count of prompts per outcome: "labelled", "already in the file",
    "duplicate prompt" (a repeat of an earlier one), and the reasons pairs were dropped."""
    _check_principles(principles, settings.principles_per_pair)
    for number, prompt in enumerate(prompts, 1):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"prompts: prompt {number} is not a non-empty string: {prompt!r}")
    written = ResumableJsonl(out)
    todo, outcomes = pending(prompts, lambda prompt: prompt, written.keys("prompt"))
    # What every row says about how it was made.
    stamp: dict[str, Any] = {
        "feedback_model": feedback.name,
        "policy_model": policy.name,
        "source": source,
    }
    if settings.reasoning_tokens is not None:
        stamp["reasoning_tokens"] = settings.reasoning_tokens
    if settings.label_clamp is not None:
        stamp["clamp"] = list(settings.label_clamp)
    batches = range(0, len(todo), settings.batch_size)
    for number, start in enumerate(batches, 1):
        step = f"{number}/{len(batches)}"
        batch = todo[start : start + settings.batch_size]
        rows = _label_batch(batch, policy, feedback, principles, settings, outcomes, step)
        written.append([row | stamp for row in rows])
    return +outcomes  # without the zero counts


def _check_principles(principles: Sequence[Principle], k: int) -> None:
    names = [p.name for p in principles]
    if len(set(names)) != len(names):
        raise ValueError(f"principles: names must be distinct, got {names}")
    if k > len(principles):
        raise ValueError(
            f"principles_per_pair: {k} distinct principles per pair, but only "
            f"{len(principles)} given"
        )


def _label_batch(
    batch: list[str],
    policy: Generator,
    feedback: Generator,
    principles: Sequence[Principle],
    settings: CompareSettings,
    outcomes: Counter,
    step: str,
) -> list[dict[str, Any]]:
    """The label rows of one batch's kept pairs (without the stamp); counts every outcome."""
    drawn = [draws(prompt, principles, settings) for prompt in batch]
    requests = [
        user_turn(prompt, max_tokens=settings.max_tokens, temperature=settings.temperature, seed=s)
        for prompt, (seeds, _) in zip(batch, drawn, strict=True)
        for s in seeds
    ]
    turns = policy.generate(requests, progress=f"rl-cai samples {step}", errors="return")
    kept: list[tuple[Comparison, list[Principle]]] = []
    for i, (prompt, (_, chosen)) in enumerate(zip(batch, drawn, strict=True)):
        pair = (turns[2 * i], turns[2 * i + 1])
        dropped = _drop_reason(pair)
        if dropped:
            outcomes[dropped] += 1
        else:
            kept.append((Comparison(prompt, *(t.text.strip() for t in pair)), chosen))
    if not kept:
        return []
    results = compare(
        feedback,
        [comparison for comparison, _ in kept],
        [chosen for _, chosen in kept],
        method=settings.method,
        votes=settings.votes,
        temperature=settings.vote_temperature,
        seed=settings.seed,
        reasoning_tokens=settings.reasoning_tokens,
        clamp=settings.label_clamp,
        progress=f"rl-cai compare {step}",
    )
    outcomes["labelled"] += len(results)
    return [_row(c, result) for (c, _), result in zip(kept, results, strict=True)]


def _drop_reason(pair: tuple[Turn | InvalidRequest, Turn | InvalidRequest]) -> str | None:
    """Why a pair of samples cannot be labelled, or None where it can: a sample is unusable
    (a cut-off reply would be judged for being cut), or the two are the same."""
    for sample in pair:
        if reason := unusable(sample):
            return reason
    first, second = (sample.text.strip() for sample in pair)
    return "identical" if first == second else None


def _row(comparison: Comparison, result: ComparisonResult) -> dict[str, Any]:
    a_wins = result.p_a >= 0.5  # a tie keeps the sample order
    chosen, rejected = comparison.response_a, comparison.response_b
    if not a_wins:
        chosen, rejected = rejected, chosen
    side = (lambda p: p) if a_wins else (lambda p: 1 - p)
    per_principle = result.per_principle
    return {
        "prompt": comparison.prompt,
        "chosen": chosen,
        "rejected": rejected,
        "p_chosen": side(result.p_a),
        "principles": list(per_principle),
        "per_principle": {name: side(p) for name, p in per_principle.items()},
        "method": result.method,
        "unparsed_votes": result.unparsed_votes,
    }
