"""Bits per byte of held-out text under a local checkpoint: how well a (base) model predicts
text it never trained on, in a unit that does not depend on its tokenizer.

Each document is tokenized alone and read in windows of at most `window` tokens; every token
but a document's first is predicted from the tokens before it in its window (a window after the
first starts without the previous one's context, a slight overestimate of the loss that long
documents pay). A document's bits are the sum of −log₂ p over its predicted tokens, its bytes
the UTF-8 bytes of its text (its first token's bytes count and its bits do not: a slight
underestimate, for short documents most); the figure is total bits over total bytes, and its
interval a bootstrap over the documents (`interval.ratio`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from charter.eval.interval import Metric, ratio
from charter.model import Transformer
from charter.tokenizer import Tokenizer


@torch.no_grad()
def document_bits(model: Transformer, ids: list[int], window: int) -> float:
    """−log₂ p of every token of `ids` after the first, read in windows of `window` tokens."""
    bits = 0.0
    for start in range(0, len(ids) - 1, window - 1):
        chunk = torch.tensor([ids[start : start + window]])  # (1, T)
        if chunk.shape[1] < 2:
            break
        logits = model(chunk[:, :-1]).float()  # (1, T-1, V)
        nll = F.cross_entropy(logits[0], chunk[0, 1:], reduction="sum")
        bits += float(nll) / math.log(2)
    return bits


def bits_per_byte(
    model: Transformer,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    window: int = 512,
    measured_by: str = "the model's own log-probabilities",
) -> Metric:
    """Bits per byte of `texts` (documents with at least two tokens) under `model`."""
    if window < 2:
        raise ValueError(f"window must be ≥ 2 tokens, got {window}")
    window = min(window, model.config.max_position_embeddings)
    bits, sizes = [], []
    for text in texts:
        ids = tokenizer.encode(text, special_tokens=False)
        if len(ids) >= 2:
            bits.append(document_bits(model, ids, window))
            sizes.append(len(text.encode("utf-8")))
    return ratio(bits, sizes, measured_by)
