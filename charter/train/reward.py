"""The reward model: a `ScoreModel` with one output, trained on preference pairs with the
Bradley–Terry loss, and scoring with it.

    charter rm train --base SmolLM2 --data hh-train.jsonl --data rl-cai.jsonl:2 \
        --heldout hh-heldout.jsonl --out runs/rm
    charter rm score --rm runs/rm/best rows.jsonl --out scored.jsonl

The model reads a conversation and a reply in the base model's chat format (`pairs.render_pairs`)
and gives one number, the reward r, at the reply's last token (its end-of-turn token). It pads
with `judge_pad_token_id`, a token no rendering ends with (SmolLM2 pads with its end-of-turn
token), and passes the attention mask, so left and right padding read the same token.

Loss, per pair with soft label p = p_chosen and Δ = r_chosen − r_rejected − m·(2p − 1):

    −[p·log σ(Δ) + (1 − p)·log σ(−Δ)]

the cross-entropy between p and the model's probability σ(Δ) that the chosen reply is better; its
gradient in Δ is σ(Δ) − p, so p = 1 pushes Δ up, p = 0.5 pushes it to 0. The optional margin m
(`[rm] margin`) asks a sure pair to be won by m, not just won: it is scaled by how sure the label
is (2p − 1: m at p = 1, 0 at p = 0.5, −m at p = 0), so swapping a pair's replies and p ↦ 1 − p
gives the same loss. The loss is summed over pairs; the loop divides by the global batch's pairs.

Data: several preference files (`charter.data.preferences`) mixed by weight. Each of the
`batch_size` pairs of global batch k is an independent draw: a file with probability
weight / (sum of weights), then one of its pairs uniformly, from a generator seeded (seed, k);
the batch is sorted by length (its micro-batches hold similar lengths). So batch k is a pure
function of (seed, k), resume is exact, ranks need not talk, and a file's share of the training
is its weight's whatever its size (a pair may repeat; a weight-0 file is never drawn).

Held out: each `--heldout` file (at most `heldout_examples` pairs of it, spread over the file)
gives the validation loss together, and apart `heldout/<stem>/accuracy` (the share of its pairs
with p ≠ 0.5 whose reward difference r_chosen − r_rejected has the label's sign, a tie counting
half) and `heldout/<stem>/margin` (the mean difference).

The checkpoint is a LlamaForSequenceClassification directory, `num_labels` 1 and `id2label`
{"0": "reward"}, that `checkpoint.load_score_model` and transformers load. `RewardModel` scores
with it: conversations (`score`) or ids already in its chat format (`rewards`, for PPO's
rollouts when the policy shares the reward model's tokenizer).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from charter import chat
from charter.chat.format import ChatFormat, chat_format
from charter.checkpoint import (
    CheckpointError,
    load_config,
    load_score_model,
    load_tokenizer,
    read_tensors,
    write_checkpoint,
)
from charter.config import SEQUENCE_CLASSIFICATION, ModelConfig
from charter.data.preferences import read_preferences
from charter.data.sft import jsonl_lines
from charter.files import batches, read_json, resolve_directory, write_json, write_scored_jsonl
from charter.heads import ScoreModel
from charter.tokenizer import Tokenizer
from charter.train.batching import freeze_lower_layers
from charter.train.distributed import gather_dicts, init_distributed
from charter.train.judge import judge_pad_token_id, read_input, spread
from charter.train.loop import MODEL, Models, TrainConfig, train_and_report
from charter.train.pairs import (
    PairBatch,
    PairExample,
    collate_pairs,
    preference_accuracy,
    render_pairs,
)
from charter.train.settings import fill

LABEL = "reward"  # config.json's id2label of the one output


@dataclass
class RewardSettings:
    max_seq_len: int = 1024  # a pair with a longer side is left out (and counted), not cut
    margin: float = 0.0  # m in the loss: a sure pair must be won by m·(2p − 1)
    heldout_examples: int = 512  # pairs of each held-out file in the validation loss and metrics
    # Train only the blocks above the first `freeze_layers` (and not the embeddings), as SFT.
    freeze_layers: int = 0


@dataclass
class PairFile:
    """The rendered pairs of one preference file and its weight in the mixture."""

    path: Path
    examples: list[PairExample]
    weight: float = 1.0
    too_long: int = 0  # pairs left out as longer than max_seq_len


def read_pair_file(
    path: Path, format: ChatFormat, max_seq_len: int, weight: float = 1.0
) -> PairFile:
    examples, too_long = render_pairs(read_preferences(path), format, max_seq_len)
    return PairFile(Path(path), examples, weight, too_long)


# ---- the loss ----


def bradley_terry_loss(
    chosen: Tensor, rejected: Tensor, p_chosen: Tensor, margin: float = 0.0
) -> Tensor:
    """The soft-label Bradley–Terry loss (module docstring) summed over the pairs: rewards (B,)
    of the chosen and the rejected replies, labels p_chosen (B,)."""
    p = p_chosen.float()
    delta = chosen.float() - rejected.float() - margin * (2 * p - 1)
    return -(p * F.logsigmoid(delta) + (1 - p) * F.logsigmoid(-delta)).sum()


def sequence_rewards(model: ScoreModel, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """The reward (B,) of each row of `input_ids` (B, T), read at its last real token. Padding
    (where `attention_mask` is 0, left or right) is rewritten as the model's pad token first, so
    the caller may have padded with any token, an end-of-turn one included."""
    pad_id = model.config.pad_token_id
    input_ids = input_ids.masked_fill(attention_mask == 0, pad_id)
    return model(input_ids, attention_mask).squeeze(-1)


def pair_rewards(model: ScoreModel, batch: PairBatch) -> tuple[Tensor, Tensor]:
    """The rewards (B,) of a batch's chosen sequences and (B,) of its rejected ones."""
    rewards = model(batch.input_ids, batch.attention_mask).squeeze(-1)  # (2B,)
    pairs = batch.num_targets
    return rewards[:pairs], rewards[pairs:]


# ---- the mixture ----


def mixture_draw(
    sizes: Sequence[int], weights: Sequence[float], seed: int, step: int, batch_size: int
) -> list[tuple[int, int]]:
    """(file, pair) of each of the `batch_size` draws of global batch `step`: a file by weight,
    then one of its `sizes[file]` pairs uniformly, from a generator seeded (seed, step)."""
    share = np.asarray(weights, dtype=float) / sum(weights)
    rng = np.random.default_rng([seed, step])
    files = rng.choice(len(sizes), size=batch_size, p=share)
    pairs = rng.integers(0, np.asarray(sizes)[files])
    return list(zip(files.tolist(), pairs.tolist()))


# ---- the task ----


class RewardTask:
    """The Trainer's task for one `ScoreModel` (named `MODEL`) with one output, the reward."""

    def __init__(
        self,
        config: ModelConfig,
        tokenizer: Tokenizer,
        files: list[PairFile],
        heldout: list[PairFile],
        settings: RewardSettings,
        seed: int,
    ) -> None:
        for file in files:
            if file.weight > 0 and not file.examples:
                raise ValueError(
                    f"{file.path}: no pairs to draw ({file.too_long} longer than max_seq_len "
                    f"{settings.max_seq_len} tokens)"
                )
        self.files = [file for file in files if file.weight > 0]
        if not self.files:
            raise ValueError("every training file has weight 0")
        names = [file.path.stem for file in heldout]
        if len(set(names)) < len(names):
            raise ValueError(f"held-out files need distinct names (stems), got {names}")
        self.config, self.tokenizer, self.settings, self.seed = config, tokenizer, settings, seed
        self.pad_id = config.pad_token_id
        self.heldout_names = names
        self.heldout: list[PairExample] = []
        self.heldout_file: list[int] = []  # which held-out file each held-out pair is from
        for f, file in enumerate(heldout):
            kept = spread(file.examples, settings.heldout_examples)
            self.heldout += kept
            self.heldout_file += [f] * len(kept)
        self._differences: dict[int, float] = {}  # held-out pair → r_chosen − r_rejected

    def global_batch(self, step: int, batch_size: int) -> list[PairExample]:
        """The pairs of global batch `step`, shortest first."""
        sizes = [len(file.examples) for file in self.files]
        weights = [file.weight for file in self.files]
        drawn = sorted(
            mixture_draw(sizes, weights, self.seed, step, batch_size),
            key=lambda d: (self.files[d[0]].examples[d[1]].length, d),
        )
        return [self.files[f].examples[i] for f, i in drawn]

    def train_batches(self, step, rank, world_size, batch_size, micro_batch_size, models=None):
        per_rank = batch_size // world_size
        mine = self.global_batch(step, batch_size)[rank * per_rank : (rank + 1) * per_rank]
        return [
            collate_pairs(mine[j : j + micro_batch_size], self.pad_id)
            for j in range(0, per_rank, micro_batch_size)
        ]

    def eval_batches(self, rank, world_size, micro_batch_size):
        self._differences = {}
        rows = sorted(
            range(rank, len(self.heldout), world_size), key=lambda i: self.heldout[i].length
        )
        chunks = (rows[j : j + micro_batch_size] for j in range(0, len(rows), micro_batch_size))
        return [
            collate_pairs([self.heldout[i] for i in chunk], self.pad_id, chunk) for chunk in chunks
        ]

    def loss(self, models: Models, batch: PairBatch) -> Tensor:
        chosen, rejected = pair_rewards(models[MODEL], batch)
        if batch.rows is not None:
            differences = (chosen - rejected).detach().float().cpu().tolist()
            self._differences.update(zip(batch.rows.tolist(), differences))
        return bradley_terry_loss(chosen, rejected, batch.p_chosen, self.settings.margin)

    def eval_metrics(self, mean_loss: float) -> dict[str, float]:
        (differences,) = gather_dicts(self._differences)  # every rank scored its share
        metrics = {}
        for f, name in enumerate(self.heldout_names):
            rows = [i for i in differences if self.heldout_file[i] == f]
            if not rows:
                continue
            metrics[f"heldout/{name}/margin"] = float(np.mean([differences[i] for i in rows]))
            labels = [(differences[i], self.heldout[i].p_chosen) for i in rows]
            accuracy = preference_accuracy(labels)
            if accuracy is not None:
                metrics[f"heldout/{name}/accuracy"] = accuracy
        return metrics

    def write_checkpoint(self, directory: Path, state_dict: dict[str, Tensor]) -> None:
        write_checkpoint(directory, self.config, state_dict, self.tokenizer)
        path = directory / "config.json"
        config = read_json(path)
        config["id2label"], config["label2id"] = {"0": LABEL}, {LABEL: 0}
        config["reward_max_seq_len"] = self.settings.max_seq_len  # the length it was trained on
        write_json(path, config)

    def read_checkpoint(self, directory: Path) -> dict[str, Tensor]:
        return read_tensors(directory)


# ---- a run ----


# A new head on a trained trunk, as the judge's: a moderate learning rate, a short warmup.
REWARD_DEFAULTS = {
    "lr": 5e-5,
    "warmup_steps": 10,
    "min_lr_ratio": 0.1,
    "weight_decay": 0.0,
    "batch_size": 16,  # pairs
    "micro_batch_size": 4,  # pairs: 8 sequences per forward pass
    "eval_every": 100,
    "save_every": 100,
}


def train_reward_model(
    base: Path, data: list[tuple[Path, float]], heldout: list[Path], out: Path, settings: dict
) -> None:
    """Train a reward model from checkpoint `base` (a causal LM gets a new seeded head; a reward
    model trains on) on the preference files `data` mixed by their weights, into run directory
    `out`, with `settings` sections [train] and [rm]; the `heldout` files give the validation
    loss and each file's accuracy and mean margin."""
    unknown = set(settings) - {"train", "rm"}
    if unknown:
        raise ValueError(f"unknown settings section(s): {', '.join(sorted(unknown))}")
    train_config = fill(TrainConfig, {**REWARD_DEFAULTS, **settings.get("train", {})}, "train")
    rm_settings = fill(RewardSettings, settings.get("rm", {}), "rm")
    if not data:
        raise ValueError("no training data: give at least one preference file")
    for path, weight in data:
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"{path}: weight {weight}: expected a number ≥ 0")

    tokenizer = load_tokenizer(base)
    pad_id = judge_pad_token_id(tokenizer)
    tokenizer.config["pad_token"] = tokenizer.decode([pad_id])  # as config.json says
    format = chat_format(tokenizer)
    files = [read_pair_file(path, format, rm_settings.max_seq_len, w) for path, w in data]
    held = [read_pair_file(path, format, rm_settings.max_seq_len) for path in heldout]
    ctx = init_distributed()
    torch.manual_seed(train_config.seed)
    model = load_score_model(base, num_labels=1, seed=train_config.seed)
    model.config.pad_token_id = pad_id
    freeze_lower_layers(model.model, rm_settings.freeze_layers, "rm")
    task = RewardTask(model.config, tokenizer, files, held, rm_settings, train_config.seed)
    if ctx.is_main:
        drawn = train_config.steps * train_config.batch_size
        total = sum(w for _, w in data)
        parts = [
            f"{file.path.name}: {len(file.examples)} pairs ({file.too_long} too long), "
            f"weight {file.weight:g}, "
            f"{drawn * file.weight / total / max(len(file.examples), 1):.2f} epochs"
            for file in files
        ]
        print(
            f"{'; '.join(parts)}; {len(task.heldout)} held out; {format.name} chat format; "
            f"max_seq_len {rm_settings.max_seq_len}",
            file=sys.stderr,
        )
    train_and_report(model, task, train_config, out, ctx)


# ---- scoring ----


class RewardModel:
    """A trained reward model, frozen, for scoring replies."""

    def __init__(self, model: ScoreModel, tokenizer: Tokenizer) -> None:
        pad_id = model.config.pad_token_id
        if model.config.num_labels != 1:
            raise ValueError(f"a reward model has one output, not {model.config.num_labels}")
        if pad_id is None or pad_id in tokenizer.eos_token_ids:
            raise ValueError(
                f"pad_token_id {pad_id} is not a token that no reply ends with: the reward "
                "would be read at the wrong token"
            )
        self.model = model.eval().requires_grad_(False)
        self.tokenizer, self.format = tokenizer, chat_format(tokenizer)

    @classmethod
    def load(
        cls,
        directory: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> RewardModel:
        directory = resolve_directory(directory)
        if load_config(directory).architecture != SEQUENCE_CLASSIFICATION:
            raise CheckpointError(
                f"{directory}: a {load_config(directory).architecture} checkpoint, not a "
                "reward model (LlamaForSequenceClassification)"
            )
        model = load_score_model(directory, dtype=dtype, device=device, num_labels=1)
        return cls(model, load_tokenizer(directory))

    def render(self, context: chat.Conversation, reply: str) -> list[int]:
        """The ids the reward model reads: `context`, then `reply` as the assistant's turn."""
        return self.format.scored(context, [chat.TextBlock(reply)], thinking=False).ids

    @torch.no_grad()
    def rewards(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Float rewards (B,) of rows (B, T) already in the model's chat format, padded on
        either side (`sequence_rewards`), on the inputs' device."""
        device = self.model.score.weight.device
        rewards = sequence_rewards(self.model, input_ids.to(device), attention_mask.to(device))
        return rewards.float().to(input_ids.device)

    def score_ids(self, rows: Sequence[list[int]]) -> list[float]:
        """The rewards of rendered rows, in one right-padded batch."""
        if not rows:
            return []
        input_ids = torch.zeros((len(rows), max(map(len, rows))), dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for b, ids in enumerate(rows):
            input_ids[b, : len(ids)] = torch.tensor(ids)
            attention_mask[b, : len(ids)] = 1
        return self.rewards(input_ids, attention_mask).tolist()

    def score(
        self, conversations: Sequence[tuple[chat.Conversation, str]], batch_size: int = 8
    ) -> list[float]:
        """The reward of each (context ending with a user turn, reply), `batch_size` a pass."""
        ids = [self.render(context, reply) for context, reply in conversations]
        return [r for batch in batches(ids, batch_size) for r in self.score_ids(batch)]


def read_scored_row(data: Any, where: str) -> tuple[chat.Conversation, str]:
    """A row to score: `{"prompt", "response"}`, or Messages-shaped `{"messages", "system"?}`
    whose last message is the assistant's reply. Errors name `where` (file:line) and the field."""
    item = read_input(data, where)
    if item.response is None:
        raise ValueError(
            f"{where}: response: expected the reply to score (a string, or a final assistant "
            "message)"
        )
    return item.request, item.response


def score_file(model: RewardModel, path: Path, out: Path, batch_size: int = 8) -> int:
    """Each row of JSONL `path` with its `"reward"`, written to `out` batch by batch; returns how
    many. A bad row is an error naming its file, line and field."""
    rows = ((data, read_scored_row(data, where)) for where, data in jsonl_lines(path))
    return write_scored_jsonl(rows, out, "reward", model.score, batch_size)
