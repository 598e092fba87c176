"""Decode-time control of the thinking block, for the server and the evaluation alike.

With thinking on, the prompt ends inside an open `<think>` block, and the model must close it
(`\\n</think>\\n`) before it answers. `ThinkingBudget` makes sure the block is closed: after
`budget` tokens, or as soon as the model would rather end its turn than close it. Without the
second rule a model that puts its answer in the think block and stops returns a turn with
thinking and no answer: SmolLM2, fine-tuned with general replies that had no thinking, did so for
35 of the 40 benign questions (docs/sft.md).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from charter.chat.template import THINK_CLOSE, THINK_END
from charter.infer.sampling import best_token
from charter.tokenizer import Tokenizer


def force_token(logits: torch.Tensor, token: int) -> torch.Tensor:
    """Logits (V,) under which `token` is certain, whatever the sampling settings."""
    forced = torch.full_like(logits, float("-inf"))
    forced[token] = 0.0
    return forced


class ThinkingBudget:
    """A logits processor for a turn that starts inside a think block. While the block is open,
    the tokens that end the turn (`end_of_turn_ids`) cannot be sampled; when one of them is the
    most likely token, or after `budget` tokens, the tokens of `\\n</think>\\n` are forced, and
    the model goes on to its answer."""

    def __init__(
        self, tokenizer: Tokenizer, budget: int, end_of_turn_ids: Iterable[int] = ()
    ) -> None:
        self.tokenizer = tokenizer
        self.budget = budget
        self.end_of_turn_set = set(end_of_turn_ids)
        self.end_of_turn_ids = torch.tensor(sorted(self.end_of_turn_set), dtype=torch.long)
        self.close_ids = tokenizer.encode(THINK_END, special_tokens=False)
        self.forcing_from: int | None = None
        self.done = False

    def __call__(self, generated: list[int], logits: torch.Tensor) -> torch.Tensor:
        if self.done:
            return logits
        if self.forcing_from is None:
            # The tag spans at most one token per character: look that far back.
            if THINK_CLOSE in self.tokenizer.decode(generated[-len(THINK_CLOSE) :]):
                self.done = True
                return logits
            would_end_turn = best_token(logits) in self.end_of_turn_set
            if len(generated) < self.budget and not would_end_turn:
                return logits.index_fill(0, self.end_of_turn_ids, float("-inf"))
            self.forcing_from = len(generated)
        forced = len(generated) - self.forcing_from
        if forced == len(self.close_ids):
            self.done = True
            return logits
        return force_token(logits, self.close_ids[forced])
