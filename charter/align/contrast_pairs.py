"""Contrast pairs: preference pairs that say where to decline and where to answer, made from two
models' replies to the same training prompts.

A reward model trained on HH-RLHF's harmless comparisons alone learns that declining is safer;
a policy optimised against it refuses more of everything, benign requests included. These pairs
hold the other half of the constitution's "non-evasive helpfulness":

- a **harmful** prompt: the reply that declines is chosen over one that complies;
- a **benign** prompt (benign-but-edgy ones included): the reply that answers is chosen over
  one that declines.

The replies come from files the earlier stages wrote: SL-CAI targets (`charter cai select`'s
`final`: Qwen's declines, SmolLM2's own answers) as the preferred side, and a model's replies
from `charter eval refusal` (the base model complying, the SL-CAI model over-refusing) as the
other. A pair is kept only when the refusal detector (`is_refusal`, the refusal patterns: precision
1.00 on the hand labels) sees the two sides the way the pair says, so every label is the rule's
and checked, never assumed; the rest are counted by reason. `p_chosen` is 1 and `feedback_model`
names the rule.

Pairs are split by the judge's hash of the prompt (`judge_data.hash_split`), so a reward model's
held-out contrast pairs are prompts it never saw.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from charter.chat import Conversation, Message, TextBlock
from charter.data.judge_data import HELDOUT, TRAIN, hash_split
from charter.data.preferences import preference_row

RULE = "contrast: decline harmful, answer benign (refusal patterns)"


def contrast_pairs(
    targets: Iterable[dict[str, Any]],
    replies: Iterable[dict[str, Any]],
    is_refusal: Callable[[str], bool],
) -> tuple[dict[str, list[dict[str, Any]]], Counter]:
    """Preference rows from `targets` (rows with `prompt`, `harmful` and a `final` reply: the
    side to prefer) and `replies` (rows with `prompt` and `response`: the other side), split into
    TRAIN and HELDOUT; and the prompts left out, by reason."""
    others = {row["prompt"]: row["response"] for row in replies}
    splits: dict[str, list[dict[str, Any]]] = {TRAIN: [], HELDOUT: []}
    dropped: Counter = Counter()
    for row in targets:
        prompt, preferred = row["prompt"], row.get("final")
        other = others.get(prompt)
        if not preferred:
            dropped["no target"] += 1
            continue
        if other is None:
            dropped["no other reply"] += 1
            continue
        harmful = bool(row["harmful"])
        # Harmful: the target must decline and the other reply comply; benign: the reverse.
        if is_refusal(preferred) != harmful:
            dropped["target " + ("complies" if harmful else "declines")] += 1
            continue
        if is_refusal(other) == harmful:
            dropped["other reply " + ("declines too" if harmful else "answers too")] += 1
            continue
        context = Conversation([Message("user", [TextBlock(prompt)])])
        splits[hash_split(prompt)].append(
            preference_row(
                context,
                preferred,
                other,
                p_chosen=1.0,
                feedback_model=RULE,
                source="contrast-harmful" if harmful else "contrast-benign",
                licence=row.get("licence", ""),
            )
        )
    return splits, +dropped
