"""Preference pairs as token ids, and batches of them: what the reward model and DPO share.

Each pair becomes two sequences in the model's chat format (`ChatFormat.scored`): the
conversation, then the chosen (or rejected) reply as the assistant's turn, its end-of-turn token
included. A batch of B pairs is one right-padded (2B, T) tensor, the chosen sequences in rows
0…B-1 and the rejected ones in rows B…2B-1, so one forward pass scores both sides.

A pair longer than `max_seq_len` tokens is left out and counted, not cut: a cut reply no longer
says what the preference was about (its end may be what made it worse).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from charter import chat
from charter.chat.format import ChatFormat
from charter.data.preferences import Preference


@dataclass
class PairExample:
    chosen: list[int]  # the conversation and the chosen reply
    rejected: list[int]  # the conversation and the rejected reply
    chosen_start: int  # chosen[chosen_start:] is the reply, its end-of-turn token included
    rejected_start: int
    p_chosen: float
    source: str

    @property
    def length(self) -> int:
        return max(len(self.chosen), len(self.rejected))


def render_pairs(
    pairs: Sequence[Preference], format: ChatFormat, max_seq_len: int
) -> tuple[list[PairExample], int]:
    """The pairs as ids in `format`, and how many were left out as longer than `max_seq_len`."""
    examples, too_long = [], 0
    for pair in pairs:
        try:
            chosen, rejected = (
                format.scored(pair.context, [chat.TextBlock(reply)], thinking=False)
                for reply in (pair.chosen, pair.rejected)
            )
        except ValueError as e:
            raise ValueError(f"{pair.where}: {e}") from e
        if max(len(chosen.ids), len(rejected.ids)) > max_seq_len:
            too_long += 1
            continue
        examples.append(
            PairExample(
                chosen.ids,
                rejected.ids,
                chosen.reply_start,
                rejected.reply_start,
                pair.p_chosen,
                pair.source,
            )
        )
    return examples, too_long


@dataclass
class PairBatch:
    input_ids: Tensor  # (2B, T) right-padded: B chosen sequences, then their B rejected ones
    attention_mask: Tensor  # (2B, T) 1 on real tokens
    reply_mask: Tensor  # (2B, T) True on the reply's tokens (targets of its log-probability)
    p_chosen: Tensor  # (B,) the soft label of each pair
    rows: Tensor | None = None  # (B,) indices of the pairs in their list (held-out metrics)

    @property
    def num_targets(self) -> int:
        return self.p_chosen.shape[0]  # pairs

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.reply_mask.to(device),
            self.p_chosen.to(device),
            self.rows,  # stays on the CPU: only the metrics read it
        )


def collate_pairs(
    examples: Sequence[PairExample], pad_id: int, rows: Sequence[int] | None = None
) -> PairBatch:
    """One batch of `examples`, padded with `pad_id` (a token no sequence ends with, where a
    score is read at the last real token: `heads.last_token_positions`)."""
    sequences = [(e.chosen, e.chosen_start) for e in examples]
    sequences += [(e.rejected, e.rejected_start) for e in examples]
    length = max(len(ids) for ids, _ in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    reply_mask = torch.zeros((len(sequences), length), dtype=torch.bool)
    for row, (ids, start) in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        reply_mask[row, start : len(ids)] = True
    p_chosen = torch.tensor([e.p_chosen for e in examples], dtype=torch.float32)
    held = None if rows is None else torch.tensor(list(rows))
    return PairBatch(input_ids, attention_mask, reply_mask, p_chosen, held)


def reply_logprobs(logits: Tensor, batch: PairBatch) -> Tensor:
    """The summed log-probability of each sequence's reply tokens: (2B,) from `logits` (2B, T, V)
    of `batch.input_ids`. The logits at t predict the token at t + 1."""
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (2B, T-1, V)
    targets = batch.input_ids[:, 1:]  # (2B, T-1)
    picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (2B, T-1)
    return (picked * batch.reply_mask[:, 1:]).sum(-1)  # (2B,)


def preference_accuracy(pairs: Sequence[tuple[float, float]]) -> float | None:
    """The share of (r_chosen − r_rejected, p_chosen) pairs, those with p ≠ 0.5, where the
    difference's sign agrees with p > 0.5 (a zero difference counts half); None without any."""
    scores = [
        0.5 if delta == 0 else float((delta > 0) == (p > 0.5)) for delta, p in pairs if p != 0.5
    ]
    return float(np.mean(scores)) if scores else None
