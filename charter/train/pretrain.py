"""Pretraining: next-token prediction on packed windows of the token shards.

The training split is one long stream of documents separated by <|endoftext|>. It is cut into
windows of `seq_len + 1` tokens (inputs and shifted targets), visited in a seeded random order
that is reshuffled every epoch. Window `k` of the run is a pure function of (seed, k), which makes
resume exact and lets every rank pick its share of a global batch without talking to the others.

    charter pretrain --config configs/demo.toml --data runs/data --out runs/pretrain
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from charter.config import ModelConfig, preset
from charter.data.shards import TokenShards
from charter.model import Transformer
from charter.tokenizer import Tokenizer
from charter.train.distributed import init_distributed
from charter.train.lm import LanguageModelTask, LMBatch
from charter.train.loop import TrainConfig, train_and_report
from charter.train.settings import fill


@dataclass
class DataSettings:
    seq_len: int = 256
    eval_windows: int = 64  # validation windows evaluated each time


@dataclass
class ModelSettings:
    preset: str = "demo"
    context: int | None = None  # max_position_embeddings; default: the preset's


class PretrainTask(LanguageModelTask):
    def __init__(
        self,
        data_dir: Path,
        config: ModelConfig,
        tokenizer: Tokenizer,
        data: DataSettings,
        seed: int,
    ) -> None:
        super().__init__(config, tokenizer)
        self.train_tokens = TokenShards(data_dir, "train")
        self.val_tokens = TokenShards(data_dir, "val")
        self.seq_len, self.seed = data.seq_len, seed
        self.n_windows = (len(self.train_tokens) - 1) // self.seq_len
        if self.n_windows < 1:
            raise ValueError(
                f"{data_dir}: the train split has {len(self.train_tokens)} tokens, "
                f"fewer than one window of {self.seq_len + 1}"
            )
        n_val = (len(self.val_tokens) - 1) // self.seq_len
        self.val_windows = [i * self.seq_len for i in range(min(data.eval_windows, n_val))]
        if not self.val_windows:
            raise ValueError(f"{data_dir}: the val split is shorter than one window")

    @lru_cache(maxsize=2)  # noqa: B019 (the task lives as long as the run)
    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)

    def _window(self, position: int) -> np.ndarray:
        epoch, index = divmod(position, self.n_windows)
        start = int(self._epoch_order(epoch)[index]) * self.seq_len
        return self.train_tokens.read(start, self.seq_len + 1)

    def train_batches(self, step, rank, world_size, batch_size, micro_batch_size, models=None):
        per_rank = batch_size // world_size
        first = step * batch_size + rank * per_rank
        windows = [self._window(first + i) for i in range(per_rank)]
        return [
            _batch(windows[i : i + micro_batch_size]) for i in range(0, per_rank, micro_batch_size)
        ]

    def eval_batches(self, rank, world_size, micro_batch_size):
        mine = [
            self.val_tokens.read(s, self.seq_len + 1) for s in self.val_windows[rank::world_size]
        ]
        return [
            _batch(mine[i : i + micro_batch_size]) for i in range(0, len(mine), micro_batch_size)
        ]

    def eval_metrics(self, mean_loss: float) -> dict[str, float]:
        return {"val_bpb": mean_loss / math.log(2) / self.val_tokens.bytes_per_token}


def _batch(windows: list[np.ndarray]) -> LMBatch:
    tokens = torch.from_numpy(np.stack(windows).astype(np.int64))  # (B, T + 1)
    return LMBatch(tokens[:, :-1], tokens[:, 1:])


def model_config(settings: ModelSettings, tokenizer: Tokenizer) -> ModelConfig:
    config = preset(settings.preset, vocab_size=tokenizer.vocab_size)
    if settings.context:
        config.max_position_embeddings = settings.context
    config.eos_token_id = tokenizer.eos_token_ids
    config.pad_token_id = tokenizer.pad_token_id
    return config


def pretrain(data: Path, out: Path, settings: dict) -> None:
    """Pretrain a new model on the token shards in `data` into run directory `out`, with
    `settings` sections [model], [train] and [data] (`charter.train.settings`)."""
    unknown = set(settings) - {"model", "train", "data"}
    if unknown:
        raise ValueError(f"unknown settings section(s): {', '.join(sorted(unknown))}")
    model_settings = fill(ModelSettings, settings.get("model", {}), "model")
    train_config = fill(TrainConfig, settings.get("train", {}), "train")
    data_settings = fill(DataSettings, settings.get("data", {}), "data")

    shards = TokenShards(data, "train")
    tokenizer = Tokenizer.load(shards.tokenizer_directory())
    config = model_config(model_settings, tokenizer)
    if data_settings.seq_len > config.max_position_embeddings:
        raise ValueError(
            f"[data] seq_len {data_settings.seq_len} exceeds the model's context "
            f"{config.max_position_embeddings}"
        )
    ctx = init_distributed()
    torch.manual_seed(train_config.seed)
    model = Transformer(config)
    task = PretrainTask(Path(data), config, tokenizer, data_settings, train_config.seed)
    if ctx.is_main:
        print(
            f"model: {model_settings.preset}, {sum(p.numel() for p in model.parameters()):,} "
            f"parameters; {task.n_windows:,} training windows of {data_settings.seq_len} "
            f"tokens; settings {asdict(train_config)}",
            file=sys.stderr,
        )
    train_and_report(model, task, train_config, out, ctx)
