"""Heads on the decoder besides the LM head: a score head and a value head.

    ScoreModel        decoder → linear `score` at each row's last token → scores (B, num_labels)
                      a reward model (1 label) or a judge; LlamaForSequenceClassification in HF
    PolicyWithValue   decoder → LM head → logits (B, T, V)       PPO's policy
                              ↘ linear `value_head` → values (B, T)   and its critic, one trunk

The decoder is `model.Transformer`; these modules only add a head, so parallelism and compilation
wrap them from outside as they wrap it. checkpoint.py saves and loads both.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from charter.config import SEQUENCE_CLASSIFICATION, ModelConfig
from charter.model import Transformer


def seeded_normal_(weight: Tensor, std: float, seed: int) -> Tensor:
    """Fill `weight` in place with N(0, std²) draws from a generator of its own, seeded `seed`,
    so a new head is the same whatever the global RNG has been used for."""
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randn(weight.shape, generator=generator) * std
    with torch.no_grad():
        return weight.copy_(draws)


def last_token_positions(
    input_ids: Tensor, pad_token_id: int | None, attention_mask: Tensor | None = None
) -> Tensor:
    """Index (B,) of the token each row of `input_ids` (B, T) is scored at, as transformers'
    LlamaForSequenceClassification picks it: the rightmost token that is not `pad_token_id`
    (so left and right padding both work); without a pad token, the last one, for a single row.

    transformers ignores the attention mask here, so it reads the score elsewhere when a row's
    last real token is the pad token (pad = EOS, a reply ending in EOS): given `attention_mask`,
    such a row is refused rather than scored at a different token than the mask says.
    """
    B, T = input_ids.shape
    if pad_token_id is None:
        if B != 1:
            raise ValueError(
                f"pad_token_id is None, so the last token of each of {B} rows is unknown; "
                "set the config's pad_token_id"
            )
        return torch.full((1,), T - 1, device=input_ids.device)
    index = torch.arange(T, device=input_ids.device)  # (T,)
    last = (index * (input_ids != pad_token_id)).argmax(-1)  # (B,)
    if attention_mask is not None:
        last_real = (index * attention_mask.bool()).argmax(-1)  # (B,)
        wrong = (last != last_real).nonzero()
        if len(wrong):
            row = int(wrong[0, 0])
            raise ValueError(
                f"row {row}: transformers would score it at {int(last[row])}, its last token "
                f"that is not pad_token_id {pad_token_id}, but its attention mask ends at "
                f"{int(last_real[row])}; pad with a token that real text never ends with "
                "(not EOS, if rows end with EOS)"
            )
    return last


class ScoreModel(nn.Module):
    """The decoder and a linear `score` head (num_labels outputs, no bias) read at each row's last
    token (`last_token_positions`): transformers' LlamaForSequenceClassification. The attribute
    names are that class's, so the state dict's names are its tensor names (`model.…`,
    `score.weight`) and a checkpoint needs no renaming.

    Pass an `attention_mask` with left-padded batches, as with transformers: without it the real
    tokens attend to the padding before them.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.architecture != SEQUENCE_CLASSIFICATION:
            raise ValueError(
                f"a ScoreModel's config has architecture {SEQUENCE_CLASSIFICATION!r}, "
                f"not {config.architecture!r}"
            )
        self.config = config
        self.model = Transformer(config)
        del self.model.lm_head  # a classifier has none (a tied one would alias embed_tokens)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        nn.init.normal_(self.score.weight, mean=0.0, std=config.initializer_range)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Scores (B, num_labels) of `input_ids` (B, T)."""
        hidden = self.model.hidden_states(input_ids, attention_mask=attention_mask)  # (B, T, d)
        last = last_token_positions(input_ids, self.config.pad_token_id, attention_mask)  # (B,)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        return self.score(hidden[rows, last])  # (B, num_labels)


class PolicyWithValue(nn.Module):
    """A policy and a value head on its trunk: one forward pass gives PPO the logits and the
    values. The value of position t estimates the return after token t, read off the same
    final-norm hidden state as its next-token logits.

    `policy` is used as it is (its parameters are shared, not copied), so `self.policy` is what
    rollouts sample from. A new value head is drawn with `seed` (weight N(0, initializer_range²),
    bias 0); `checkpoint.save_policy_with_value` saves it beside the policy's files.
    """

    def __init__(self, policy: Transformer, seed: int = 0) -> None:
        super().__init__()
        self.policy = policy
        like = policy.embed_tokens.weight
        config = policy.config
        self.value_head = nn.Linear(config.hidden_size, 1, device=like.device, dtype=like.dtype)
        seeded_normal_(self.value_head.weight, config.initializer_range, seed)
        nn.init.zeros_(self.value_head.bias)

    @property
    def config(self) -> ModelConfig:
        return self.policy.config

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Logits (B, T, V) and values (B, T) of `input_ids` (B, T)."""
        hidden = self.policy.hidden_states(input_ids, attention_mask=attention_mask)  # (B, T, d)
        return self.policy.logits(hidden), self.value_head(hidden).squeeze(-1)
