"""Direct Preference Optimization (Rafailov et al., 2023): the policy learns from preference pairs
directly, with no reward model and no sampling.

    charter dpo --base runs/sft/final --data prefs.jsonl --heldout heldout.jsonl --out runs/dpo

For a pair (chosen c, rejected r) with soft label p = `p_chosen`, the policy π being trained and
the frozen starting policy π_ref, with log π(·) a reply's summed token log-probabilities
(`pairs.reply_logprobs`):

    h    = β · [(log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))]
    loss = −[p · log σ(h) + (1 − p) · log σ(−h)]

p = 1 (a person's choice) is the original DPO loss. A soft label (an AI feedback model's
probability) pulls h towards log(p / (1 − p)) rather than ever upwards: the loss's slope in h is
σ(h) − p, so a p = 0.5 pair pushes nowhere at h = 0. β · (log π − log π_ref) is a reply's
implicit reward, and h the margin between the two rewards. The loss is summed over pairs; the
loop divides by the global batch's pairs.

The reference never changes, so its log-probabilities are computed once, before training, by the
starting policy, and cached in <out>/reference_logprobs.pt under a fingerprint of what they
depend on (the base checkpoint's files, the data files' contents, max_seq_len, the held-out
count, the precision): a resumed run reads them back, a changed input recomputes them. No
reference model stays in memory; each batch carries its pairs' reference log-probabilities.

A global batch is `batch_size` pairs drawn as SFT draws its demonstrations (seeded, reshuffled
every epoch, sorted by length: a pure function of (seed, step)), each rank taking its share; a
micro-batch of `micro_batch_size` pairs is one forward pass over twice as many sequences.

Held-out metrics, each pair scored once per evaluation and gathered from every rank:

    heldout/accuracy         the share of pairs with a preference (p ≠ 0.5) whose h has the sign
                             of p − 0.5 (h = 0 counts half)
    heldout/margin           mean h = chosen_reward − rejected_reward (nats, β included)
    heldout/chosen_reward    mean β · (log π(c) − log π_ref(c))
    heldout/rejected_reward  mean β · (log π(r) − log π_ref(r))

The checkpoint is the policy as an ordinary LlamaForCausalLM directory, as SFT writes it, so
`charter serve`, `charter eval` and GGUF export read it.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from charter.chat.format import chat_format
from charter.checkpoint import load_checkpoint, load_tokenizer
from charter.data.preferences import read_preferences
from charter.files import file_sha256, resolve_directory
from charter.train.batching import freeze_lower_layers, length_bucketed_batch
from charter.train.distributed import Distributed, gather_dicts, init_distributed
from charter.train.judge import spread
from charter.train.lm import LanguageModelTask
from charter.train.loop import (
    MODEL,
    Models,
    TrainConfig,
    autocast,
    autocast_dtype,
    train_and_report,
)
from charter.train.pairs import (
    PairBatch,
    PairExample,
    collate_pairs,
    preference_accuracy,
    render_pairs,
    reply_logprobs,
)
from charter.train.settings import fill

REFERENCE_FILE = "reference_logprobs.pt"


@dataclass
class DPOSettings:
    # The strength of the pull back to the reference: a small β lets the policy move far from it.
    beta: float = 0.1
    max_seq_len: int = 1024  # longer pairs are left out (and counted), not cut
    heldout_examples: int = 512  # held-out pairs in the validation loss and metrics
    # Train only the blocks above the first `freeze_layers` (and not the embeddings), as SFT.
    freeze_layers: int = 0

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError(f"[dpo] beta must be > 0, got {self.beta}")


# ---- the loss ----


def implicit_rewards(policy: Tensor, reference: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    """β · (log π − log π_ref) of each pair's chosen and of its rejected reply, two (B,) tensors,
    from (2B,) reply log-probabilities ordered as a `PairBatch`'s rows (chosen, then rejected)."""
    chosen, rejected = (beta * (policy.float() - reference.float())).chunk(2)
    return chosen, rejected


def dpo_loss(margin: Tensor, p_chosen: Tensor) -> Tensor:
    """−[p · log σ(h) + (1 − p) · log σ(−h)] summed over pairs, for margins h (B,) and soft
    labels p (B,)."""
    return -(p_chosen * F.logsigmoid(margin) + (1 - p_chosen) * F.logsigmoid(-margin)).sum()


@dataclass
class DPOBatch:
    pairs: PairBatch
    reference: Tensor  # (2B,) the reference's reply log-probabilities, rows as pairs.input_ids

    @property
    def num_targets(self) -> int:
        return self.pairs.num_targets

    def to(self, device: torch.device) -> DPOBatch:
        return DPOBatch(self.pairs.to(device), self.reference.to(device))


# ---- the reference's log-probabilities, computed once ----


def score_pairs(
    model: nn.Module,
    examples: Sequence[PairExample],
    pad_id: int,
    batch_size: int,
    device: torch.device,
    cast: torch.dtype | None,
    show_progress: bool,
    what: str,
) -> Tensor:
    """(N, 2): the summed reply log-probabilities of each pair's chosen and rejected reply under
    `model`, scored `batch_size` pairs at a time, shortest first (little padding), in the
    precision training uses, so that h starts at 0."""
    scores = torch.zeros(len(examples), 2)
    order = sorted(range(len(examples)), key=lambda i: examples[i].length)
    chunks = [order[j : j + batch_size] for j in range(0, len(order), batch_size)]
    model.eval()
    with torch.inference_mode():
        for rows in tqdm(chunks, desc=f"reference {what}", unit="batch", disable=not show_progress):
            batch = collate_pairs([examples[i] for i in rows], pad_id).to(device)
            with autocast(device, cast):
                logprobs = reply_logprobs(model(batch.input_ids), batch)  # (2B,)
            scores[rows] = logprobs.view(2, -1).T.float().cpu()
    return scores


def reference_fingerprint(
    base: Path,
    data: Sequence[Path],
    heldout: Sequence[Path],
    settings: DPOSettings,
    cast: torch.dtype | None,
) -> dict[str, Any]:
    """What the reference's log-probabilities depend on: the base checkpoint (its path, and each
    file's size and modification time), the data files' contents, the rendering's length limit,
    the held-out count and the precision they are computed in."""
    base = resolve_directory(base)
    files = sorted(f for f in base.iterdir() if f.is_file())
    return {
        "base": str(base.resolve()),
        "base_files": {f.name: [f.stat().st_size, f.stat().st_mtime_ns] for f in files},
        "data": [file_sha256(Path(p)) for p in data],
        "heldout": [file_sha256(Path(p)) for p in heldout],
        "max_seq_len": settings.max_seq_len,
        "heldout_examples": settings.heldout_examples,
        "dtype": str(cast or torch.float32),
    }


def reference_logprobs(
    model: nn.Module,
    examples: Sequence[PairExample],
    heldout: Sequence[PairExample],
    path: Path,
    fingerprint: dict[str, Any],
    ctx: Distributed,
    pad_id: int,
    batch_size: int,
    cast: torch.dtype | None,
) -> tuple[Tensor, Tensor]:
    """The (N, 2) and (M, 2) reference log-probabilities of the training and held-out pairs:
    read from `path` if it was written for `fingerprint`, else scored by `model` (each rank its
    share) and written there. Says on stderr which."""
    cached = torch.load(path, weights_only=True) if path.exists() else None
    if cached is not None and cached["fingerprint"] == json.dumps(fingerprint, sort_keys=True):
        if ctx.is_main:
            print(f"reference log-probabilities: reusing {path}", file=sys.stderr)
        return cached["train"], cached["heldout"]
    if ctx.is_main:
        if cached is None:
            print(f"reference log-probabilities: computing them into {path}", file=sys.stderr)
        else:
            before = json.loads(cached["fingerprint"])
            changed = sorted(k for k in fingerprint if before.get(k) != fingerprint[k])
            print(
                f"reference log-probabilities: {path} was computed for other inputs "
                f"({', '.join(changed)} changed); recomputing",
                file=sys.stderr,
            )
    model.to(ctx.device)
    scored = []
    for what, items in (("train", examples), ("heldout", heldout)):
        share = items[ctx.rank :: ctx.world_size]
        mine = score_pairs(model, share, pad_id, batch_size, ctx.device, cast, ctx.is_main, what)
        full = torch.zeros(len(items), 2)
        for rank, share in enumerate(ctx.all_gather_object(mine)):
            full[rank :: ctx.world_size] = share
        scored.append(full)
    if ctx.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fingerprint_text = json.dumps(fingerprint, sort_keys=True)
        torch.save({"fingerprint": fingerprint_text, "train": scored[0], "heldout": scored[1]}, tmp)
        os.replace(tmp, path)
    ctx.barrier()
    return scored[0], scored[1]


# ---- the held-out metrics ----


def heldout_metrics(scored: Sequence[tuple[float, float, float]]) -> dict[str, float]:
    """The held-out metrics (module docstring) from each pair's (chosen reward, rejected reward,
    p_chosen)."""
    chosen, rejected, p = (np.array(column) for column in zip(*scored))
    margin = chosen - rejected
    metrics = {
        "margin": float(margin.mean()),
        "chosen_reward": float(chosen.mean()),
        "rejected_reward": float(rejected.mean()),
    }
    accuracy = preference_accuracy(list(zip(margin.tolist(), p.tolist())))
    if accuracy is not None:
        metrics["accuracy"] = accuracy
    return metrics


# ---- the task ----


class DPOTask(LanguageModelTask):
    """The Trainer's task for one policy (named `MODEL`) trained with the DPO loss; it writes
    the policy's checkpoints as SFT does."""

    def __init__(
        self,
        config,
        tokenizer,
        examples: list[PairExample],
        reference: Tensor,
        heldout: list[PairExample],
        heldout_reference: Tensor,
        settings: DPOSettings,
        seed: int,
    ) -> None:
        super().__init__(config, tokenizer)
        self.examples, self.reference = examples, reference
        self.heldout, self.heldout_reference = heldout, heldout_reference
        self.settings, self.seed = settings, seed
        self.pad_id = tokenizer.pad_token_id
        # Filled by the eval batches' losses: each held-out pair's rewards and label.
        self._heldout_scored: dict[int, tuple[float, float, float]] = {}

    def global_batch(self, step: int, batch_size: int) -> list[int]:
        """Indices of the pairs of batch `step`, shortest first."""
        lengths = [e.length for e in self.examples]
        return length_bucketed_batch(lengths, self.seed, step, batch_size, "pairs")

    def _batch(
        self, examples: list[PairExample], reference: Tensor, rows: list[int], held: bool
    ) -> DPOBatch:
        pairs = collate_pairs([examples[i] for i in rows], self.pad_id, rows if held else None)
        return DPOBatch(pairs, reference[rows].T.reshape(-1))  # chosen rows, then rejected

    def train_batches(self, step, rank, world_size, batch_size, micro_batch_size, models=None):
        per_rank = batch_size // world_size
        mine = self.global_batch(step, batch_size)[rank * per_rank : (rank + 1) * per_rank]
        return [
            self._batch(self.examples, self.reference, mine[j : j + micro_batch_size], False)
            for j in range(0, per_rank, micro_batch_size)
        ]

    def eval_batches(self, rank, world_size, micro_batch_size):
        self._heldout_scored = {}
        rows = sorted(
            range(rank, len(self.heldout), world_size), key=lambda i: self.heldout[i].length
        )
        return [
            self._batch(self.heldout, self.heldout_reference, rows[j : j + micro_batch_size], True)
            for j in range(0, len(rows), micro_batch_size)
        ]

    def loss(self, models: Models, batch: DPOBatch) -> Tensor:
        pairs = batch.pairs
        policy = reply_logprobs(models[MODEL](pairs.input_ids), pairs)  # (2B,)
        chosen, rejected = implicit_rewards(policy, batch.reference, self.settings.beta)
        if pairs.rows is not None:
            scored = zip(chosen.tolist(), rejected.tolist(), pairs.p_chosen.tolist())
            self._heldout_scored.update(zip(pairs.rows.tolist(), scored))
        return dpo_loss(chosen - rejected, pairs.p_chosen)

    def eval_metrics(self, mean_loss: float) -> dict[str, float]:
        (scored,) = gather_dicts(self._heldout_scored)  # every rank scored its share
        if not scored:
            return {}
        metrics = heldout_metrics([scored[i] for i in sorted(scored)])
        return {f"heldout/{name}": value for name, value in metrics.items()}


def train_dpo(base: Path, data: list[Path], heldout: list[Path], out: Path, settings: dict) -> None:
    """Train the policy checkpoint `base` with DPO on the preference JSONL files `data` into run
    directory `out`, with `settings` sections [train] and [dpo]; `heldout` files give the
    validation loss and the held-out reward metrics."""
    unknown = set(settings) - {"train", "dpo"}
    if unknown:
        raise ValueError(f"unknown settings section(s): {', '.join(sorted(unknown))}")
    train_config = fill(TrainConfig, {**DPO_DEFAULTS, **settings.get("train", {})}, "train")
    dpo_settings = fill(DPOSettings, settings.get("dpo", {}), "dpo")

    tokenizer = load_tokenizer(base)
    format = chat_format(tokenizer)  # the policy keeps the format it already answers in
    pairs = [pair for path in data for pair in read_preferences(path)]
    if not pairs:
        raise ValueError("no preference pairs in the data files")
    examples, too_long = render_pairs(pairs, format, dpo_settings.max_seq_len)
    if not examples:
        raise ValueError(f"every pair is longer than max_seq_len {dpo_settings.max_seq_len}")
    heldout_pairs = [pair for path in heldout for pair in read_preferences(path)]
    heldout_examples, heldout_too_long = render_pairs(
        heldout_pairs, format, dpo_settings.max_seq_len
    )
    heldout_examples = spread(heldout_examples, dpo_settings.heldout_examples)

    ctx = init_distributed()
    torch.manual_seed(train_config.seed)
    model = load_checkpoint(base)
    cast = autocast_dtype(train_config, ctx.device)
    fingerprint = reference_fingerprint(base, data, heldout, dpo_settings, cast)
    reference, heldout_reference = reference_logprobs(
        model,
        examples,
        heldout_examples,
        Path(out) / REFERENCE_FILE,
        fingerprint,
        ctx,
        tokenizer.pad_token_id,
        train_config.micro_batch_size,
        cast,
    )
    freeze_lower_layers(model, dpo_settings.freeze_layers, "dpo")
    task = DPOTask(
        model.config,
        tokenizer,
        examples,
        reference,
        heldout_examples,
        heldout_reference,
        dpo_settings,
        train_config.seed,
    )
    if ctx.is_main:
        print(
            f"{len(examples)} pairs ({too_long} left out as longer than "
            f"{dpo_settings.max_seq_len} tokens), {len(heldout_examples)} held out "
            f"({heldout_too_long} too long); {format.name} chat format; β {dpo_settings.beta}; "
            f"{train_config.steps * train_config.batch_size / len(examples):.2f} epochs; "
            f"settings {json.dumps(asdict(train_config))}",
            file=sys.stderr,
        )
    train_and_report(model, task, train_config, out, ctx)


# A policy that already answers well wants small, short-warmup steps; `[train] lr` in a config
# is where a model size's own rate goes (charter/configs/smollm2-dpo.toml).
DPO_DEFAULTS = {
    "lr": 1e-5,
    "warmup_steps": 10,
    "min_lr_ratio": 0.0,
    "weight_decay": 0.0,
    "batch_size": 16,
    "micro_batch_size": 2,
    "eval_every": 50,
    "save_every": 50,
}
