"""Supervised fine-tuning: the shared loop with a loss on the assistant's tokens only.

Each demonstration is rendered once (`charter.data.sft.to_training_example`: ids plus the
assistant-only loss mask). A global batch is `batch_size` demonstrations drawn in a seeded order
that is reshuffled every epoch; inside it they are sorted by length, so each micro-batch holds
similar lengths and little padding (length bucketing). Batch `k` is a pure function of
(seed, k): resume is exact and ranks need not talk to pick their share.

    charter sft --base runs/pretrain/best --data sft.jsonl --heldout heldout.jsonl --out runs/sft
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from charter.chat.template import CHAT_TEMPLATE
from charter.checkpoint import load_checkpoint, load_tokenizer
from charter.data.sft import SFTRecord, read_sft, to_training_example
from charter.tokenizer import Tokenizer
from charter.train.batching import freeze_lower_layers, length_bucketed_batch
from charter.train.distributed import init_distributed, unwrap
from charter.train.lm import IGNORE, LanguageModelTask, LMBatch
from charter.train.loop import TrainConfig, train_and_report
from charter.train.settings import fill


@dataclass
class SFTSettings:
    max_seq_len: int = 1024  # longer demonstrations are truncated (and counted)
    heldout_loss_examples: int = 64  # held-out demonstrations in the validation loss
    generation_eval_examples: int = 0  # held-out task prompts answered at each evaluation
    generation_max_new_tokens: int = 256
    # Train only the blocks above the first `freeze_layers` (and not the embeddings): the
    # backward pass then stops early (faster), and what lower layers know stays put.
    freeze_layers: int = 0


@dataclass
class Example:
    ids: list[int]
    loss_mask: list[bool]


def render_examples(
    records: list[SFTRecord], tokenizer, max_seq_len: int
) -> tuple[list[Example], int]:
    """Rendered examples, and how many had to be truncated to `max_seq_len` + 1 tokens."""
    examples, truncated = [], 0
    for record in records:
        rendered = to_training_example(record, tokenizer)
        ids, mask = rendered.ids, rendered.loss_mask
        if len(ids) > max_seq_len + 1:
            ids, mask = ids[: max_seq_len + 1], mask[: max_seq_len + 1]
            truncated += 1
        examples.append(Example(ids, mask))
    return examples, truncated


def collate(examples: list[Example], pad_id: int) -> LMBatch:
    """Right-padded inputs and next-token targets, IGNORE where the loss mask is off."""
    length = max(len(e.ids) for e in examples) - 1
    inputs = torch.full((len(examples), length), pad_id, dtype=torch.long)
    targets = torch.full((len(examples), length), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.ids) - 1
        inputs[row, :n] = torch.tensor(e.ids[:-1])
        trained = torch.tensor(e.loss_mask[1:])
        targets[row, :n] = torch.where(trained, torch.tensor(e.ids[1:]), IGNORE)
    return LMBatch(inputs, targets)


# (model, tokenizer, held-out records, max new tokens) → a report of metrics (nested dicts).
GenerationEval = Callable[[torch.nn.Module, Tokenizer, list[SFTRecord], int], dict]


class SFTTask(LanguageModelTask):
    def __init__(
        self,
        model_config,
        tokenizer,
        examples: list[Example],
        heldout: list[Example],
        heldout_records: list[SFTRecord],
        settings: SFTSettings,
        seed: int,
        generation_eval: GenerationEval | None = None,
    ) -> None:
        super().__init__(model_config, tokenizer)
        self.examples, self.heldout, self.heldout_records = examples, heldout, heldout_records
        self.settings, self.seed = settings, seed
        self.generation_eval = generation_eval
        self.pad_id = tokenizer.pad_token_id

    def global_batch(self, step: int, batch_size: int) -> list[int]:
        """Indices of the demonstrations of batch `step`, shortest first."""
        lengths = [len(e.ids) for e in self.examples]
        return length_bucketed_batch(lengths, self.seed, step, batch_size, "demonstrations")

    def train_batches(self, step, rank, world_size, batch_size, micro_batch_size, models=None):
        per_rank = batch_size // world_size
        mine = self.global_batch(step, batch_size)[rank * per_rank : (rank + 1) * per_rank]
        return [
            collate([self.examples[i] for i in mine[j : j + micro_batch_size]], self.pad_id)
            for j in range(0, per_rank, micro_batch_size)
        ]

    def eval_batches(self, rank, world_size, micro_batch_size):
        heldout = self.heldout[: self.settings.heldout_loss_examples][rank::world_size]
        heldout = sorted(heldout, key=lambda e: len(e.ids))
        return [
            collate(heldout[j : j + micro_batch_size], self.pad_id)
            for j in range(0, len(heldout), micro_batch_size)
        ]

    def eval_metrics(self, mean_loss: float) -> dict[str, float]:
        return {}

    def evaluate_generation(self, model: torch.nn.Module) -> dict[str, float]:
        """Held-out task accuracy (thinking off and on), tool-call validity: the numbers SFT is
        for, measured by generating answers, not by the loss (`generation_eval`, given by the
        caller: the evaluation lives above training)."""
        records = self.heldout_records[: self.settings.generation_eval_examples]
        if not records or self.generation_eval is None:
            return {}
        report = self.generation_eval(
            unwrap(model), self.tokenizer, records, self.settings.generation_max_new_tokens
        )
        return flatten_report(report)


def flatten_report(report: dict, prefix: str = "eval") -> dict[str, float]:
    """{"thinking_off": {"accuracy": 0.5}} → {"eval/thinking_off/accuracy": 0.5} (numbers only)."""
    flat: dict[str, float] = {}
    for key, value in report.items():
        name = f"{prefix}/{key}"
        if isinstance(value, dict):
            flat.update(flatten_report(value, name))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = value
    return flat


def fine_tune(
    base: Path,
    data: Sequence[str | Path],
    heldout: Sequence[str | Path],
    out: Path,
    settings: dict,
    generation_eval: GenerationEval | None = None,
) -> None:
    """Fine-tune checkpoint `base` on the SFT JSONL files `data` into run directory `out`, with
    `settings` sections [train] and [sft]; `heldout` files give the validation loss and, with
    `generation_eval` and `sft.generation_eval_examples`, task metrics from generated answers."""
    unknown = set(settings) - {"train", "sft"}
    if unknown:
        raise ValueError(f"unknown settings section(s): {', '.join(sorted(unknown))}")
    train_config = fill(TrainConfig, {**SFT_DEFAULTS, **settings.get("train", {})}, "train")
    sft_settings = fill(SFTSettings, settings.get("sft", {}), "sft")

    tokenizer = load_tokenizer(base)
    tokenizer.config["chat_template"] = CHAT_TEMPLATE  # the format the model is now taught
    records = list(read_sft(data))
    heldout_records = list(read_sft(heldout)) if heldout else []
    if not records:
        raise ValueError("no demonstrations in the data files")
    examples, truncated = render_examples(records, tokenizer, sft_settings.max_seq_len)
    heldout_examples, _ = render_examples(heldout_records, tokenizer, sft_settings.max_seq_len)
    ctx = init_distributed()
    torch.manual_seed(train_config.seed)
    model = load_checkpoint(base)
    freeze_lower_layers(model, sft_settings.freeze_layers, "sft")
    config = model.config
    config.eos_token_id = tokenizer.eos_token_ids
    task = SFTTask(
        config,
        tokenizer,
        examples,
        heldout_examples,
        heldout_records,
        sft_settings,
        train_config.seed,
        generation_eval,
    )
    if ctx.is_main:
        trained = sum(sum(e.loss_mask) for e in examples)
        print(
            f"{len(examples)} demonstrations ({trained:,} trained tokens; {truncated} truncated "
            f"to {sft_settings.max_seq_len} tokens), {len(heldout_examples)} held out; "
            f"{train_config.steps * train_config.batch_size / len(examples):.2f} epochs; "
            f"settings {json.dumps(asdict(train_config))}",
            file=sys.stderr,
        )
    train_and_report(model, task, train_config, out, ctx)


# Fine-tuning a trained model wants a small learning rate and a short warmup.
SFT_DEFAULTS = {
    "lr": 1e-4,
    "warmup_steps": 10,
    "min_lr_ratio": 0.0,
    "weight_decay": 0.0,
    "batch_size": 16,
    "micro_batch_size": 4,
    "eval_every": 50,
    "save_every": 50,
}
