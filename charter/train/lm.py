"""What pretraining and SFT share: next-token batches, the summed cross-entropy, and checkpoints
in the Hugging Face layout."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from charter.checkpoint import load_checkpoint, write_checkpoint
from charter.config import ModelConfig
from charter.tokenizer import Tokenizer
from charter.train.loop import MODEL, Models

IGNORE = -100  # target id that contributes no loss (prompt tokens, padding)


@dataclass
class LMBatch:
    input_ids: Tensor  # (B, T)
    targets: Tensor  # (B, T): the next token, or IGNORE

    @property
    def num_targets(self) -> int:
        return int((self.targets != IGNORE).sum())

    def to(self, device: torch.device) -> LMBatch:
        return LMBatch(self.input_ids.to(device), self.targets.to(device))


class LanguageModelTask:
    """Base of the language-modelling tasks of one trained model (named `MODEL`): subclasses
    supply the batches."""

    def __init__(self, config: ModelConfig, tokenizer: Tokenizer) -> None:
        self.config = config
        self.tokenizer = tokenizer

    def loss(self, models: Models, batch: LMBatch) -> Tensor:
        logits = models[MODEL](batch.input_ids)  # (B, T, V)
        return F.cross_entropy(
            logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE, reduction="sum"
        )

    def write_checkpoint(self, directory: Path, state_dict: dict[str, Tensor]) -> None:
        write_checkpoint(directory, self.config, state_dict, self.tokenizer)

    def read_checkpoint(self, directory: Path) -> dict[str, Tensor]:
        return load_checkpoint(directory).state_dict()
