"""PPO: the formulas on hand numbers, rollouts scored under the distribution they were sampled
from (KL exactly 0 against an identical reference), a micro policy learning a synthetic reward
with the KL held near its target, exact resume, and the command."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from charter.chat.format import chat_format
from charter.checkpoint import load_policy_with_value, load_score_model, save_checkpoint
from charter.commands import main
from charter.heads import PolicyWithValue
from charter.metrics import read_metrics
from charter.model import Transformer
from charter.train.distributed import Distributed
from charter.train.judge import judge_pad_token_id
from charter.train.loop import Trainer
from charter.train.models import TrainedModel
from charter.train.ppo import (
    POLICY,
    REFERENCE,
    REWARD,
    PolicyValueFormat,
    PPOSettings,
    PPOTask,
    ppo_train_config,
    read_prompts,
    run_ppo,
)
from charter.train.ppo_losses import adapt_kl_coef, gae, policy_loss, value_loss
from tests.helpers import micro

PROMPTS = [f"Tell me about item {i}." for i in range(16)]


# ---- the formulas ----


def test_gae_with_lambda_one_is_the_return_less_the_value():
    rewards = torch.tensor([[0.0, 1.0, 2.0, 3.0, 0.0]])
    values = torch.tensor([[9.0, 0.5, 1.0, 2.0, 9.0]])
    mask = torch.tensor([[False, True, True, True, False]])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert advantages.tolist() == [[0.0, 6.0 - 0.5, 5.0 - 1.0, 3.0 - 2.0, 0.0]]
    assert returns.tolist() == [[0.0, 6.0, 5.0, 3.0, 0.0]]
    # λ = 0: one-step TD errors; γ discounts the next value
    advantages, _ = gae(rewards, values, mask, gamma=0.5, lam=0.0)
    assert advantages.tolist() == [[0.0, 1 + 0.5 * 1.0 - 0.5, 2 + 0.5 * 2.0 - 1.0, 3 - 2.0, 0.0]]


def test_policy_loss_clips_the_ratio_on_the_side_the_advantage_pushes():
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.5, 1.1]]))  # ratios
    advantages = torch.tensor([[1.0, -1.0, -1.0, 2.0]])
    mask = torch.tensor([[True, True, True, True]])
    loss, clipped = policy_loss(new, old, advantages, mask, clip_range=0.2)
    # ratio 1.5, A>0 → clipped at 1.2; ratio 0.5, A<0 → clipped at 0.8; ratio 1.5, A<0 → not
    # clipped (the pessimistic term is the unclipped one); ratio 1.1 is inside the range
    expected = -1.2 + 0.8 + 1.5 - 2 * 1.1
    assert loss.item() == pytest.approx(expected) and clipped.item() == 2
    loss, _ = policy_loss(new, old, advantages, torch.tensor([[False, False, True, True]]), 0.2)
    assert loss.item() == pytest.approx(1.5 - 2 * 1.1)


def test_value_loss_takes_the_worse_of_clipped_and_unclipped():
    old, returns = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, -1.0]])
    values = torch.tensor([[2.0, -0.5]])
    mask = torch.tensor([[True, True]])
    # row 0: clipped to 0.2 → (0.2 - 1)² = 0.64 > (2 - 1)² = 1? no: max(1, 0.64) = 1
    # row 1: clipped to -0.2 → (−0.2 + 1)² = 0.64 > (−0.5 + 1)² = 0.25: 0.64
    assert value_loss(values, old, returns, mask, 0.2).item() == pytest.approx(0.5 * (1 + 0.64))


def test_the_kl_controller_moves_beta_towards_the_target_by_at_most_a_fifth():
    assert adapt_kl_coef(0.1, kl=12.0, target=6.0, samples=1000, horizon=1000) == pytest.approx(
        0.12
    )
    assert adapt_kl_coef(0.1, kl=0.0, target=6.0, samples=1000, horizon=1000) == pytest.approx(0.08)
    assert adapt_kl_coef(0.1, kl=6.6, target=6.0, samples=100, horizon=1000) == pytest.approx(
        0.1 * (1 + 0.1 * 0.1)
    )


def test_settings_are_checked():
    with pytest.raises(ValueError, match=r"\[ppo\] temperature must be > 0"):
        PPOSettings(temperature=0)
    with pytest.raises(ValueError, match=r"\[train\] steps: PPO counts \[ppo\] iterations"):
        ppo_train_config({"steps": 3}, PPOSettings(), 1)
    with pytest.raises(ValueError, match="rollout_prompts 16 must be a multiple of"):
        ppo_train_config({"batch_size": 6}, PPOSettings(), 1)
    config = ppo_train_config({"batch_size": 4}, PPOSettings(iterations=3, epochs=2), 1)
    assert config.steps == 3 * 2 * 4


def test_the_shipped_config_is_valid():
    from charter import configs
    from charter.train.settings import fill, load_settings

    settings = load_settings(Path(configs.__file__).parent / "smollm2-ppo.toml", [])
    assert set(settings) == {"train", "ppo"}
    ppo = fill(PPOSettings, settings["ppo"], "ppo")
    config = ppo_train_config(settings["train"], ppo, 1)
    assert config.dtype == "bf16" and config.steps == ppo.iterations * ppo.epochs * 4


# ---- rollouts and the run ----


class TargetTokens(nn.Module):
    """A synthetic reward: how many of a sequence's tokens are among `targets`."""

    def __init__(self, targets: range) -> None:
        super().__init__()
        self.register_buffer("targets", torch.tensor(list(targets)))

    def forward(self, input_ids, attention_mask):
        hits = torch.isin(input_ids, self.targets) & attention_mask.bool()
        return hits.sum(-1).float()[:, None]  # (B, 1)


def micro_run(tokenizer, settings: PPOSettings, train: dict, out: Path) -> tuple[PPOTask, Trainer]:
    """A PPO task and trainer: a micro policy, an identical reference, the synthetic reward."""
    ctx = Distributed()
    config = ppo_train_config(train, settings, ctx.world_size)
    prompts, texts, _ = read_prompts(PROMPTS, chat_format(tokenizer), settings.max_prompt_tokens)
    torch.manual_seed(0)
    policy = Transformer(micro())
    reference = Transformer(micro())
    reference.load_state_dict(policy.state_dict())
    pad_id = judge_pad_token_id(tokenizer)
    task = PPOTask(tokenizer, prompts, texts, settings, config, ctx, pad_id)
    model = PolicyWithValue(policy, seed=0)
    trainer = Trainer(
        task,
        config,
        out,
        ctx,
        trained={POLICY: TrainedModel(model, PolicyValueFormat(model.config, tokenizer))},
        frozen={REFERENCE: reference, REWARD: TargetTokens(range(100, 164))},
    )
    return task, trainer


def test_rollouts_are_scored_under_the_distribution_they_were_sampled_from(tokenizer, tmp_path):
    settings = PPOSettings(rollout_prompts=8, max_new_tokens=10, temperature=0.7)
    task, trainer = micro_run(tokenizer, settings, {"batch_size": 4}, tmp_path)
    rollout = task.rollout(0, trainer.models)
    # the engine's log-probabilities of what it sampled (KV cache, one token at a time) are the
    # ones recomputed in one forward pass at the same temperature
    assert rollout.stats["mismatch_max"] < 1e-5
    assert rollout.stats["tokens"] > 8
    # an identical reference: the KL is exactly zero, so the rewards are the score alone
    assert rollout.stats["kl"] == 0.0
    batch = rollout.batch
    assert batch.mask.sum() == rollout.stats["tokens"]
    off = ~batch.mask
    assert (batch.old_logprobs[off] == 0).all() and (batch.advantages[off] == 0).all()
    whitened = batch.advantages[batch.mask]
    assert abs(whitened.mean()) < 1e-5
    assert whitened.std(unbiased=False) == pytest.approx(1, abs=1e-3)


def test_the_reward_model_can_read_the_rollouts_rendered_its_own_way(tokenizer, tmp_path):
    settings = PPOSettings(rollout_prompts=8, max_new_tokens=10)
    task, trainer = micro_run(tokenizer, settings, {"batch_size": 4}, tmp_path)
    seen = []

    def reply_alone(prompt: str, reply: str) -> list[int]:  # a format without the prompt
        seen.append(prompt)
        return tokenizer.encode(reply, special_tokens=False) or [0]

    task.reward_renderer = reply_alone
    rollout = task.rollout(0, trainer.models)
    targets = set(range(100, 164))
    for sample in rollout.samples:
        ids = tokenizer.encode(sample["reply"], special_tokens=False) or [0]
        assert sample["score"] == sum(i in targets for i in ids)
    assert sorted(seen) == sorted(s["prompt"] for s in rollout.samples)


def test_ppo_raises_a_synthetic_reward_with_the_kl_near_its_target(tokenizer, tmp_path):
    settings = PPOSettings(
        iterations=12,
        rollout_prompts=16,
        max_new_tokens=12,
        epochs=4,
        kl_coef=0.05,
        kl_target=4.0,
        kl_horizon=200,
        save_every=100,
    )
    train = {"batch_size": 8, "micro_batch_size": 8, "lr": 3e-3}
    task, trainer = micro_run(tokenizer, settings, train, tmp_path)
    done, interrupted = run_ppo(task, trainer, tmp_path, settings)
    assert (done, interrupted) == (12, False)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    first = rows[0]["reward"]
    last = sum(r["reward"] for r in rows[-3:]) / 3
    assert last > first + 1.0
    assert rows[0]["kl"] == 0.0 and all(r["kl_alarm"] == 0 for r in rows)
    assert max(r["kl"] for r in rows) < 3 * settings.kl_target
    # the controller raises β after an iteration over the target and lowers it after one under
    for before, after in zip(rows, rows[1:]):
        assert (after["kl_coef"] > before["kl_coef"]) == (before["kl"] > settings.kl_target)
    assert any(r["kl"] > settings.kl_target for r in rows)
    for name in ("entropy", "clip_fraction", "value_loss", "response_length", "rollout_s"):
        assert all(math.isfinite(r[name]) for r in rows), name
    assert (tmp_path / "final" / "value_head.safetensors").exists()
    samples = read_metrics(tmp_path / "rollouts.jsonl")
    assert len(samples) == 12 * 16 and {"prompt", "reply", "score", "ended"} <= set(samples[0])


# ---- from checkpoints: resume and the command ----


@pytest.fixture
def checkpoints(tokenizer, tmp_path):
    torch.manual_seed(0)
    policy = save_checkpoint(Transformer(micro()), tmp_path / "policy", tokenizer)
    reward = load_score_model(policy, seed=1)
    reward.config.pad_token_id = judge_pad_token_id(tokenizer)
    save_checkpoint(reward, tmp_path / "reward", tokenizer)
    prompts = tmp_path / "prompts.jsonl"
    from charter.data.prompt_sets import Prompt, write_prompt_file

    write_prompt_file(
        [
            Prompt(text, "test", "none", False, f"test:{i}", "Apache-2.0")
            for i, text in enumerate(PROMPTS)
        ],
        prompts,
    )
    return policy, tmp_path / "reward", prompts


SETTINGS = [
    "ppo.iterations=4",
    "ppo.rollout_prompts=8",
    "ppo.max_new_tokens=8",
    "ppo.save_every=1",
    "train.batch_size=4",
    "train.micro_batch_size=2",
    "train.lr=1e-3",
]


def ppo(policy, reward, prompts, out, *settings):
    main(
        ["ppo", "--policy", str(policy), "--reward", str(reward), "--prompts", str(prompts)]
        + ["--out", str(out), "--set", *SETTINGS, *settings]
    )


def losses(run: Path) -> list[tuple[float, float, float]]:
    return [(r["loss"], r["reward"], r["kl"]) for r in read_metrics(run / "metrics.jsonl")]


def test_ppo_resumes_exactly_and_saves_the_value_head(checkpoints, tmp_path):
    policy, reward, prompts = checkpoints
    ppo(policy, reward, prompts, tmp_path / "straight")
    ppo(policy, reward, prompts, tmp_path / "resumed", "ppo.stop_after=2")
    assert len(read_metrics(tmp_path / "resumed" / "metrics.jsonl")) == 2
    assert not (tmp_path / "resumed" / "final").exists()
    ppo(policy, reward, prompts, tmp_path / "resumed")
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    assert len(read_metrics(tmp_path / "resumed" / "rollouts.jsonl")) == 4 * 8
    final = load_policy_with_value(tmp_path / "straight" / "final")
    again = load_policy_with_value(tmp_path / "resumed" / "final")
    for (name, a), b in zip(final.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.equal(
        final.value_head.weight, PolicyWithValue(Transformer(micro())).value_head.weight
    )


def test_ppo_killed_mid_run_resumes_to_the_same_losses(checkpoints, tmp_path):
    """kill -9 once the second iteration's checkpoint is on disk (the run is then somewhere in
    its third iteration or saving it): the rerun continues from the last whole checkpoint."""
    policy, reward, prompts = checkpoints
    ppo(policy, reward, prompts, tmp_path / "straight")
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "charter.cli", "ppo", "--policy", str(policy)]
    command += ["--reward", str(reward), "--prompts", str(prompts), "--out", str(out)]
    command += ["--set", *SETTINGS]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    second = out / "checkpoints" / "step-000008"  # 4 optimizer steps an iteration
    while not second.exists() and process.poll() is None:
        time.sleep(0.05)
    process.kill()
    process.wait()
    assert second.exists() and not (out / "final").exists()
    ppo(policy, reward, prompts, out)
    assert losses(out) == losses(tmp_path / "straight")


def test_the_command_refuses_a_model_that_is_no_reward_model(checkpoints, tmp_path):
    policy, reward, prompts = checkpoints
    with pytest.raises(SystemExit, match="not a reward model"):
        ppo(policy, policy, prompts, tmp_path / "run")  # a causal LM


@pytest.mark.slow
def test_ppo_runs_and_resumes_exactly_on_two_ranks_under_torchrun(checkpoints, tmp_path):
    policy, reward, prompts = checkpoints
    root = Path(__file__).parent.parent
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}

    def torchrun(out: Path, *settings: str) -> None:
        port = str(29800 + os.getpid() % 100)
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
        command += ["--master_port", port, "-m", "charter.cli", "ppo", "--policy", str(policy)]
        command += ["--reward", str(reward), "--prompts", str(prompts), "--out", str(out)]
        command += ["--set", *SETTINGS, *settings]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]

    torchrun(tmp_path / "straight")
    torchrun(tmp_path / "resumed", "ppo.stop_after=2")
    torchrun(tmp_path / "resumed")
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    # each rank sampled its own half of every iteration's prompts; rank 0 logged them all
    samples = read_metrics(tmp_path / "straight" / "rollouts.jsonl")
    assert len(samples) == 4 * 8 and len({s["prompt"] for s in samples[:8]}) == 8
