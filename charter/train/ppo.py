"""PPO with a KL penalty to a frozen reference: RLHF's policy-optimisation step.

    charter ppo --policy runs/sl-cai/final --reward runs/rm/final --prompts prompts.jsonl --out RUN

Models (the Trainer's): `policy`, trained, a `PolicyWithValue` (the policy and a value head on its
trunk, saved together: `checkpoint.write_policy_with_value`); `reference`, frozen, the policy as
it started; `reward`, frozen, a reward model (`ScoreModel`, one output: `charter rm`).

One iteration:

1. Rollouts. Each rank takes its share of `rollout_prompts` prompts (a seeded order, reshuffled
   every pass over the prompt file) and samples one reply to each from the live policy's
   weights, through the engine (batched, KV cache: `TorchBackend(follow_weights=True)`), at
   `temperature` with no top-k or top-p cut, each sample with its own seed from
   (seed, iteration, prompt). The sequence is prompt + reply + the end-of-turn token sampled.
2. Scoring, without gradients, of the very tokens sampled: the policy's log-probabilities and
   values, the reference's log-probabilities, both from logits divided by the same temperature
   (a different temperature, top-k or top-p here than at sampling is how RL runs get a negative
   KL), and the reward model's score at the last real token of the prompt and reply rendered in
   its own chat format (`RewardModel.render`: the policy's may differ, e.g. in system prompt or
   think block, and the reward model should read what it was trained on).
3. Per-token rewards: −β·(log π − log π_ref) on every reply token, plus the score (less
   `missing_eos_penalty` for a reply cut off at `max_new_tokens`) on the last one. The KL
   estimate is the sum of log π − log π_ref over a reply, averaged over replies; its expectation
   is ≥ 0, so a mean below −`KL_ALARM` is reported as an alarm (the sampling and scoring
   distributions differ). The engine's own log-probabilities of what it sampled are compared
   with the recomputed ones (`logprob_mismatch`).
4. Advantages by GAE (γ, λ) from the values, whitened over every rank's reply tokens; returns =
   advantages + values.
5. `epochs` passes over the rollouts in seeded minibatches of `[train] batch_size` sequences
   (split into `micro_batch_size`), one optimizer step each: the clipped policy loss
   −min(ρ·A, clip(ρ, 1 ± ε)·A) and `value_coef` × the clipped value loss
   ½·max((V − R)², (V_clip − R)²), both summed over reply tokens (the loop divides by the global
   minibatch's reply tokens).
6. β: fixed, or adapted towards `kl_target` (nats per reply) by the proportional controller of
   Ziegler et al. (2019): β ← β·(1 + clip(KL / target − 1, ±0.2)·n / horizon).

Every `save_every` iterations, and at the end or on Ctrl-C, a checkpoint (the policy with its
value head, optimizer state, β); a rerun resumes from the last one and continues exactly as an
uninterrupted run. Metrics per iteration (reward, KL, β, entropy, clip fraction, value loss,
reply length, rollout and update seconds) go to `metrics.jsonl` and the progress bar; each
iteration's prompts, replies and scores to `rollouts.jsonl`.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from charter import chat
from charter.chat.format import chat_format
from charter.checkpoint import (
    load_checkpoint,
    load_policy_with_value,
    load_tokenizer,
    write_policy_with_value,
)
from charter.config import ModelConfig
from charter.heads import PolicyWithValue
from charter.infer.engine import Engine
from charter.infer.sampling import SamplingParams
from charter.infer.torch_backend import TorchBackend
from charter.metrics import MetricsLog
from charter.tokenizer import Tokenizer
from charter.train.batching import freeze_lower_layers
from charter.train.distributed import Distributed, init_distributed, shutdown, unwrap
from charter.train.loop import (
    Models,
    StopRequest,
    TrainConfig,
    Trainer,
    autocast,
    autocast_dtype,
)
from charter.train.models import TrainedModel
from charter.train.ppo_losses import (
    adapt_kl_coef,
    entropy,
    gae,
    policy_loss,
    token_logprobs,
    value_loss,
)
from charter.train.reward import RewardModel
from charter.train.settings import fill

POLICY, REFERENCE, REWARD = "policy", "reference", "reward"
KL_ALARM = 0.01  # nats per reply: a mean KL estimate below −KL_ALARM means a sampling mismatch


@dataclass
class PPOSettings:
    iterations: int = 20
    rollout_prompts: int = 16  # prompts (one reply each) per iteration, over all ranks
    max_new_tokens: int = 64
    max_prompt_tokens: int = 256  # longer prompts are left out (and counted)
    temperature: float = 1.0
    engine_batch_size: int = 16  # rows the rollout engine decodes together
    epochs: int = 2  # optimisation passes over each iteration's rollouts
    gamma: float = 1.0
    lam: float = 0.95
    clip_range: float = 0.2
    value_clip_range: float = 0.2
    value_coef: float = 0.1
    kl_coef: float = 0.05  # β: the start of the adaptive controller, or fixed
    kl_target: float | None = 6.0  # nats per reply; None: β stays kl_coef
    kl_horizon: int = 10000
    whiten_advantages: bool = True
    missing_eos_penalty: float = 0.0
    freeze_layers: int = 0
    value_head_seed: int = 0
    save_every: int = 5  # iterations
    stop_after: int | None = None  # end this run early (saving); a later run resumes

    def __post_init__(self) -> None:
        for name in ("iterations", "rollout_prompts", "max_new_tokens", "epochs", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"[ppo] {name} must be ≥ 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"[ppo] temperature must be > 0 (PPO samples), got {self.temperature}")
        if self.kl_target is not None and self.kl_target <= 0:
            raise ValueError(f"[ppo] kl_target must be > 0, got {self.kl_target}")


# ---- rollouts ----


class SampledLogprobs:
    """A logits processor that records log p of each token the engine samples, under the
    distribution it samples from (softmax(logits / temperature), no top-k or top-p): at each call
    it learns the token sampled after the previous one; `finish` adds the end-of-turn token."""

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature
        self.values: list[float] = []
        self._last: Tensor | None = None

    def __call__(self, generated: list[int], logits: Tensor) -> Tensor:
        if self._last is not None:
            self.values.append(float(self._last[generated[-1]]))
        self._last = torch.log_softmax(logits.float() / self.temperature, dim=-1)
        return logits

    def finish(self, end_token_id: int | None) -> list[float]:
        if end_token_id is not None and self._last is not None:
            self.values.append(float(self._last[end_token_id]))
        return self.values


@dataclass
class PPOBatch:
    """Sequences and what PPO's losses need, aligned with the targets: position t holds the
    token at t + 1 of `input_ids` and what was computed for it from the logits at t."""

    input_ids: Tensor  # (B, T) right-padded
    mask: Tensor  # (B, T-1) True where the target is a reply token
    old_logprobs: Tensor  # (B, T-1)
    old_values: Tensor  # (B, T-1)
    advantages: Tensor  # (B, T-1)
    returns: Tensor  # (B, T-1)

    @property
    def num_targets(self) -> int:
        return int(self.mask.sum())

    def to(self, device: torch.device) -> PPOBatch:
        return PPOBatch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))

    def rows(self, index: list[int]) -> PPOBatch:
        """These rows, trimmed to their longest sequence."""
        lengths = self.mask[index].any(0).nonzero()
        end = int(lengths.max()) + 2 if len(lengths) else 1
        return PPOBatch(
            self.input_ids[index, :end],
            *(getattr(self, f)[index, : end - 1] for f in list(self.__dataclass_fields__)[1:]),
        )


@dataclass
class Rollout:
    batch: PPOBatch  # this rank's replies, scored
    stats: dict[str, float]  # sums over this rank's replies (see `PPOTask.rollout`)
    samples: list[dict[str, Any]]  # prompt, reply, score per reply


class PPOTask:
    """The Trainer's task: rollouts from the live policy, their advantages, PPO's losses."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        prompts: list[list[int]],
        prompt_texts: list[str],
        settings: PPOSettings,
        train_config: TrainConfig,
        ctx: Distributed,
        pad_id: int,
        reward_renderer: Callable[[str, str], list[int]] | None = None,
    ) -> None:
        """`pad_id` pads the reward model's inputs: a token no reply ends with. The reward model
        reads the policy's own ids, or, given `reward_renderer` ((prompt, reply text) → ids),
        the rollouts re-rendered in its own chat format (another system prompt, no think block,
        another tokenizer)."""
        self.tokenizer, self.settings, self.ctx = tokenizer, settings, ctx
        self.prompts, self.prompt_texts = prompts, prompt_texts
        self.seed, self.train_config = train_config.seed, train_config
        self.pad_id, self.reward_renderer = pad_id, reward_renderer
        self.kl_coef = settings.kl_coef
        self.cast = autocast_dtype(train_config, ctx.device)
        self.engine: Engine | None = None
        self._loss_stats: dict[str, float] = {}

    # ---- the Trainer's hooks ----

    def train_batches(self, step, rank, world_size, batch_size, micro_batch_size, models):
        raise RuntimeError("PPO's batches come from its rollouts: run it with `run_ppo`")

    def eval_batches(self, rank, world_size, micro_batch_size):
        return []

    def eval_metrics(self, mean_loss: float) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"kl_coef": self.kl_coef}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kl_coef = state["kl_coef"]

    def loss(self, models: Models, batch: PPOBatch) -> Tensor:
        settings = self.settings
        logits, values = models[POLICY](batch.input_ids)  # (B, T, V), (B, T)
        logprobs = token_logprobs(logits[:, :-1], batch.input_ids[:, 1:], settings.temperature)
        values = values[:, :-1].float()
        pg, clipped = policy_loss(
            logprobs, batch.old_logprobs, batch.advantages, batch.mask, settings.clip_range
        )
        vf = value_loss(
            values, batch.old_values, batch.returns, batch.mask, settings.value_clip_range
        )
        with torch.no_grad():
            approx_kl = ((batch.old_logprobs - logprobs) * batch.mask).sum()
        for name, value in (
            ("policy_loss", pg),
            ("value_loss", vf),
            ("clipped", clipped),
            ("approx_kl", approx_kl),
        ):
            self._loss_stats[name] = self._loss_stats.get(name, 0.0) + float(value.detach())
        return pg + settings.value_coef * vf

    # ---- rollouts ----

    def prompt_indices(self, iteration: int) -> list[int]:
        """This rank's prompts of `iteration`: a slice of a seeded order of the prompts,
        reshuffled every pass over them."""
        n, per_iteration = len(self.prompts), self.settings.rollout_prompts
        first = iteration * per_iteration
        chosen = []
        for position in range(first, first + per_iteration):
            epoch, index = divmod(position, n)
            chosen.append(int(np.random.default_rng([self.seed, epoch]).permutation(n)[index]))
        per_rank = per_iteration // self.ctx.world_size
        return chosen[self.ctx.rank * per_rank : (self.ctx.rank + 1) * per_rank]

    def sample_seed(self, iteration: int, prompt: int) -> int:
        return int(np.random.default_rng([self.seed, iteration, prompt]).integers(2**31))

    def rollout(self, iteration: int, models: Models) -> Rollout:
        """Sample, score and compute the advantages of this rank's replies of `iteration`."""
        settings = self.settings
        policy: PolicyWithValue = unwrap(models[POLICY])
        if self.engine is None:  # built once: it follows the weights from step to step
            backend = TorchBackend(
                policy.policy,
                max_batch_size=settings.engine_batch_size,
                max_len=settings.max_prompt_tokens + settings.max_new_tokens + 1,
                follow_weights=True,
            )
            self.engine = Engine(backend, self.tokenizer)
            if self.pad_id in self.engine.eos_token_ids:
                raise ValueError(
                    f"pad token {self.pad_id} ends a turn, so a reply can end with it and "
                    "its score would be read elsewhere: pad with another token"
                )
        indices = self.prompt_indices(iteration)
        recorders = [SampledLogprobs(settings.temperature) for _ in indices]
        params = [
            SamplingParams(
                settings.max_new_tokens, settings.temperature, seed=self.sample_seed(iteration, i)
            )
            for i in indices
        ]
        completions = self.engine.generate(
            [self.prompts[i] for i in indices], params, logits_processors=[[r] for r in recorders]
        )
        replies = []
        for completion in completions:
            end = [] if completion.end_token_id is None else [completion.end_token_id]
            replies.append(completion.token_ids + end)
        sampled = [r.finish(c.end_token_id) for r, c in zip(recorders, completions)]
        ended = torch.tensor([c.end_token_id is not None for c in completions])

        sequences = [self.prompts[i] + reply for i, reply in zip(indices, replies)]
        input_ids, attention_mask = _right_padded(sequences, self.pad_id)
        mask = torch.zeros((len(sequences), input_ids.shape[1] - 1), dtype=torch.bool)
        for row, (i, sequence) in enumerate(zip(indices, sequences)):
            mask[row, len(self.prompts[i]) - 1 : len(sequence) - 1] = True
        device = self.ctx.device
        input_ids, attention_mask, mask = (t.to(device) for t in (input_ids, attention_mask, mask))

        texts = [self.tokenizer.decode(c.token_ids) for c in completions]
        if self.reward_renderer is None:
            reward_inputs = (input_ids, attention_mask)
        else:
            rendered = [
                self.reward_renderer(self.prompt_texts[i], t) for i, t in zip(indices, texts)
            ]
            reward_inputs = tuple(t.to(device) for t in _right_padded(rendered, self.pad_id))
        logprobs, ref_logprobs, values, token_entropy, scores = self._score(
            policy, models, input_ids, reward_inputs
        )
        values, logprobs, ref_logprobs = values * mask, logprobs * mask, ref_logprobs * mask

        kl = logprobs - ref_logprobs  # (N, T-1): zero off the reply
        rewards = -self.kl_coef * kl
        last = mask.long().cumsum(-1).argmax(-1)  # (N,) each reply's last target position
        rows = torch.arange(len(sequences), device=device)
        penalty = settings.missing_eos_penalty * (~ended).float().to(device)
        rewards[rows, last] += scores - penalty
        advantages, returns = gae(rewards, values, mask, settings.gamma, settings.lam)
        if settings.whiten_advantages:
            advantages = self._whiten(advantages, mask)

        mismatch = [
            abs(a - b)
            for recorded, computed, m in zip(sampled, logprobs, mask)
            for a, b in zip(recorded, computed[m].tolist())
        ]
        stats = dict(
            replies=len(sequences),
            tokens=float(mask.sum()),
            score=float(scores.sum()),
            score_sq=float((scores**2).sum()),
            kl=float(kl.sum()),
            entropy=float((token_entropy * mask).sum()),
            ended=float(ended.sum()),
            mismatch=float(sum(mismatch)),
            mismatch_max=max(mismatch, default=0.0),
        )
        samples = [
            dict(
                prompt=self.prompt_texts[i],
                reply=text,
                score=float(score),
                ended=completion.end_token_id is not None,
            )
            for i, text, completion, score in zip(indices, texts, completions, scores)
        ]
        batch = PPOBatch(input_ids, mask, logprobs, values, advantages, returns)
        return Rollout(batch.to(torch.device("cpu")), stats, samples)

    @torch.no_grad()
    def _score(
        self,
        policy: PolicyWithValue,
        models: Models,
        input_ids: Tensor,
        reward_inputs: tuple[Tensor, Tensor],
    ) -> tuple[Tensor, ...]:
        """The policy's log-probabilities, values and entropies and the reference's
        log-probabilities (each (N, T-1), aligned with the targets) of `input_ids` (N, T), and
        the reward model's scores (N,) of `reward_inputs` (its ids and attention mask),
        `engine_batch_size` rows a pass: a pass holds (rows, T, vocabulary) logits."""
        temperature, rows = self.settings.temperature, self.settings.engine_batch_size
        parts = []
        for start in range(0, input_ids.shape[0], rows):
            ids = input_ids[start : start + rows]
            reward_ids, attention = (t[start : start + rows] for t in reward_inputs)
            targets = ids[:, 1:]
            with autocast(ids.device, self.cast):
                logits, values = policy(ids)  # (n, T, V), (n, T)
                reference = models[REFERENCE](ids)  # (n, T, V)
                scores = models[REWARD](reward_ids, attention_mask=attention)[:, 0]  # (n,)
            parts.append(
                (
                    token_logprobs(logits[:, :-1], targets, temperature),
                    token_logprobs(reference[:, :-1], targets, temperature),
                    values[:, :-1].float(),
                    entropy(logits[:, :-1], temperature),
                    scores.float(),
                )
            )
        return tuple(torch.cat(column) for column in zip(*parts))

    def _whiten(self, advantages: Tensor, mask: Tensor) -> Tensor:
        """Advantages shifted and scaled to mean 0, variance 1 over every rank's reply tokens."""
        ctx = self.ctx
        count = ctx.all_reduce(float(mask.sum()))
        mean = ctx.all_reduce(float(advantages[mask].sum())) / count
        var = ctx.all_reduce(float(((advantages - mean)[mask] ** 2).sum())) / count
        return (advantages - mean) * torch.rsqrt(torch.tensor(var + 1e-8)) * mask

    def minibatches(self, rollout: Rollout, iteration: int, epoch: int) -> list[list[PPOBatch]]:
        """This rank's micro-batches of each optimizer step of one pass over `rollout`."""
        config = self.train_config
        rows = rollout.batch.input_ids.shape[0]
        order = np.random.default_rng([self.seed, iteration, epoch, self.ctx.rank]).permutation(
            rows
        )
        per_step = config.batch_size // self.ctx.world_size
        steps = []
        for start in range(0, rows, per_step):
            mine = order[start : start + per_step].tolist()
            steps.append(
                [
                    rollout.batch.rows(mine[j : j + config.micro_batch_size])
                    for j in range(0, per_step, config.micro_batch_size)
                ]
            )
        return steps

    def take_loss_stats(self) -> dict[str, float]:
        stats, self._loss_stats = self._loss_stats, {}
        return stats


def _right_padded(sequences: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """`sequences` as one right-padded (N, T) tensor, and its attention mask."""
    input_ids = torch.full((len(sequences), max(map(len, sequences))), pad_id, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = torch.tensor(sequence)
        attention_mask[row, : len(sequence)] = 1
    return input_ids, attention_mask


# ---- the run ----


class PolicyValueFormat:
    """Checkpoints of the policy with its value head (the main model of a PPO run)."""

    def __init__(self, config: ModelConfig, tokenizer: Tokenizer) -> None:
        self.config, self.tokenizer = config, tokenizer

    def write_checkpoint(self, directory: Path, state_dict: dict[str, Tensor]) -> None:
        write_policy_with_value(directory, self.config, state_dict, self.tokenizer)

    def read_checkpoint(self, directory: Path) -> dict[str, Tensor]:
        return load_policy_with_value(directory).state_dict()


def iteration_metrics(
    stats: dict[str, float], loss_stats: dict[str, float], epochs: int, ctx: Distributed
) -> dict[str, float]:
    """Means over every rank's replies and tokens of one iteration's sums; the loss sums cover
    `epochs` passes over the rollout's tokens."""
    total = {name: ctx.all_reduce(value) for name, value in stats.items() if name != "mismatch_max"}
    losses = {name: ctx.all_reduce(value) / epochs for name, value in loss_stats.items()}
    replies, tokens = total["replies"], total["tokens"]
    mean_score = total["score"] / replies
    return dict(
        reward=mean_score,
        reward_std=math.sqrt(max(total["score_sq"] / replies - mean_score**2, 0.0)),
        kl=total["kl"] / replies,
        entropy=total["entropy"] / tokens,
        response_length=tokens / replies,
        ended_share=total["ended"] / replies,
        logprob_mismatch=total["mismatch"] / tokens,
        logprob_mismatch_max=ctx.all_reduce(stats["mismatch_max"], op="max"),
        policy_loss=losses["policy_loss"] / tokens,
        value_loss=losses["value_loss"] / tokens,
        clip_fraction=losses["clipped"] / tokens,
        approx_kl=losses["approx_kl"] / tokens,
    )


def run_ppo(
    task: PPOTask,
    trainer: Trainer,
    out: Path,
    settings: PPOSettings,
) -> tuple[int, bool]:
    """Run (or resume) PPO to `settings.iterations` (or `stop_after`); returns the iterations
    done and whether a signal interrupted the run."""
    ctx = task.ctx
    steps_per_iteration = settings.epochs * settings.rollout_prompts // trainer.config.batch_size
    trainer.resume()
    iteration = trainer.steps_done // steps_per_iteration
    resumed = trainer.steps_done if trainer.resumed_from else None
    metrics = MetricsLog(out / "metrics.jsonl", resumed) if ctx.is_main else None
    samples_log = MetricsLog(out / "rollouts.jsonl", resumed) if ctx.is_main else None
    bar = tqdm(
        total=settings.iterations,
        initial=iteration,
        disable=not ctx.is_main,
        unit="iteration",
        dynamic_ncols=True,
    )
    interrupted = False
    with StopRequest() as stop:
        while iteration < settings.iterations:
            started = time.perf_counter()
            rollout = task.rollout(iteration, trainer.models)
            rollout_s = time.perf_counter() - started
            rows = []
            for epoch in range(settings.epochs):
                for micro_batches in task.minibatches(rollout, iteration, epoch):
                    rows.append(trainer.step(micro_batches))
            update_s = time.perf_counter() - started - rollout_s
            row = iteration_metrics(rollout.stats, task.take_loss_stats(), settings.epochs, ctx)
            row.update(
                iteration=iteration + 1,
                step=trainer.steps_done,
                kl_coef=task.kl_coef,
                loss=float(np.mean([r["loss"] for r in rows])),
                lr=rows[-1]["lr"],
                grad_norm=float(np.mean([r["grad_norm"] for r in rows])),
                rollout_s=rollout_s,
                update_s=update_s,
                rollout_tokens_per_s=ctx.all_reduce(rollout.stats["tokens"]) / rollout_s,
            )
            if row["kl"] < -KL_ALARM and ctx.is_main:
                tqdm.write(
                    f"alarm: iteration {iteration + 1}: mean KL estimate {row['kl']:.4f} < 0: "
                    "the replies were not sampled from the distribution they are scored under "
                    "(temperature, top-k/top-p, or a different model)"
                )
            row["kl_alarm"] = int(row["kl"] < -KL_ALARM)
            if settings.kl_target is not None:
                replies = ctx.all_reduce(rollout.stats["replies"])
                task.kl_coef = adapt_kl_coef(
                    task.kl_coef, row["kl"], settings.kl_target, int(replies), settings.kl_horizon
                )
            iteration += 1
            every_sample = ctx.all_gather_object(rollout.samples)
            if metrics and samples_log:
                metrics.write(**row)
                for sample in (s for share in every_sample for s in share):
                    samples_log.write(step=trainer.steps_done, iteration=iteration, **sample)
            bar.set_postfix(
                reward=f"{row['reward']:.3f}",
                kl=f"{row['kl']:.3f}",
                beta=f"{task.kl_coef:.3f}",
                clip=f"{row['clip_fraction']:.2f}",
                len=f"{row['response_length']:.0f}",
                refresh=False,
            )
            bar.update(1)
            interrupted = ctx.all_reduce(stop.requested, op="max") > 0
            stopping = interrupted or iteration == settings.stop_after
            if iteration % settings.save_every == 0 or iteration == settings.iterations or stopping:
                trainer.save()
            if stopping:
                break
    bar.close()
    if iteration == settings.iterations:
        trainer.save_models(out / "final")
    return iteration, interrupted


def ppo_train_config(settings: dict[str, Any], ppo: PPOSettings, world_size: int) -> TrainConfig:
    """The [train] settings of a PPO run: `steps` is the optimizer steps of `ppo.iterations`
    (it is not set by hand), and a minibatch splits the rollouts evenly over the ranks."""
    values = {**PPO_DEFAULTS, **settings}
    if "steps" in settings:
        raise ValueError("[train] steps: PPO counts [ppo] iterations; set ppo.iterations")
    batch_size = values["batch_size"]
    if ppo.rollout_prompts % batch_size or batch_size % world_size:
        raise ValueError(
            f"[ppo] rollout_prompts {ppo.rollout_prompts} must be a multiple of [train] "
            f"batch_size {batch_size}, itself a multiple of the {world_size} rank(s)"
        )
    values["steps"] = ppo.iterations * ppo.epochs * (ppo.rollout_prompts // batch_size)
    return fill(TrainConfig, values, "train")


def read_prompts(
    prompts: list[str], format, max_tokens: int
) -> tuple[list[list[int]], list[str], int]:
    """The prompts rendered as the opening of an assistant turn, the texts kept, and how many
    were left out as longer than `max_tokens`."""
    ids, texts, too_long = [], [], 0
    for text in prompts:
        conversation = chat.Conversation([chat.Message("user", [chat.TextBlock(text)])])
        rendered = format.prompt(conversation, thinking=False)
        if len(rendered) > max_tokens:
            too_long += 1
            continue
        ids.append(rendered)
        texts.append(text)
    return ids, texts, too_long


def train_ppo(
    policy: Path,
    reward: Path,
    prompts: list[str],
    out: Path,
    settings: dict[str, Any],
    reference: Path | None = None,
) -> int:
    """PPO of checkpoint `policy` (and its value head, if it has one) against reward model
    `reward` on `prompts`, with `settings` sections [train] and [ppo], into run directory `out`;
    the KL is to `reference` (default: `policy` as it starts). Returns the iterations done;
    exits with status 130 after a Ctrl-C (its iteration saved), as `train_and_report` does."""
    unknown = set(settings) - {"train", "ppo"}
    if unknown:
        raise ValueError(f"unknown settings section(s): {', '.join(sorted(unknown))}")
    ppo = fill(PPOSettings, settings.get("ppo", {}), "ppo")
    ctx = init_distributed()
    train_config = ppo_train_config(settings.get("train", {}), ppo, ctx.world_size)
    tokenizer = load_tokenizer(policy)
    format = chat_format(tokenizer)
    prompt_ids, texts, too_long = read_prompts(prompts, format, ppo.max_prompt_tokens)
    if len(prompt_ids) < ppo.rollout_prompts:
        raise ValueError(
            f"{len(prompt_ids)} usable prompts ({too_long} longer than max_prompt_tokens "
            f"{ppo.max_prompt_tokens}): fewer than rollout_prompts {ppo.rollout_prompts}"
        )
    torch.manual_seed(train_config.seed)
    model = load_policy_with_value(policy, value_head_seed=ppo.value_head_seed)
    freeze_lower_layers(model.policy, ppo.freeze_layers, "ppo")
    reward_model = RewardModel.load(reward)  # checks its one output and its pad token

    def render_for_reward(prompt: str, reply: str) -> list[int]:
        context = chat.Conversation([chat.Message("user", [chat.TextBlock(prompt)])])
        return reward_model.render(context, reply)

    task = PPOTask(
        tokenizer,
        prompt_ids,
        texts,
        ppo,
        train_config,
        ctx,
        reward_model.model.config.pad_token_id,
        render_for_reward,
    )
    trainer = Trainer(
        task,
        train_config,
        out,
        ctx,
        trained={POLICY: TrainedModel(model, PolicyValueFormat(model.config, tokenizer))},
        frozen={
            REFERENCE: load_checkpoint(reference or policy),
            REWARD: reward_model.model,
        },
    )
    if ctx.is_main:
        print(
            f"{len(prompt_ids)} prompts ({too_long} left out as longer than "
            f"{ppo.max_prompt_tokens} tokens); {train_config.steps} optimizer steps; "
            f"settings {json.dumps({'train': asdict(train_config), 'ppo': asdict(ppo)})}",
            file=sys.stderr,
        )
    try:
        done, interrupted = run_ppo(task, trainer, out, ppo)
    finally:
        shutdown(ctx)
    if ctx.is_main and done == ppo.iterations:
        print(f"final policy: {out / 'final'}")
    if interrupted:
        raise SystemExit(130)
    return done


# A trained policy wants small steps; minibatches of a few replies.
PPO_DEFAULTS = {
    "lr": 1e-5,
    "warmup_steps": 0,
    "min_lr_ratio": 1.0,
    "weight_decay": 0.0,
    "batch_size": 8,
    "micro_batch_size": 4,
    "eval_every": 10**9,  # PPO has no validation loss; it is measured by `charter eval`
    "save_every": 10**9,  # checkpoints follow [ppo] save_every (iterations)
}
