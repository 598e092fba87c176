"""The `Trainer`: batches sampled from the live model with exact resume, several trained models
beside frozen ones, and the parts (step, evaluate, save, resume) driven one by one."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from charter.checkpoint import load_checkpoint
from charter.infer.engine import Engine
from charter.infer.sampling import SamplingParams
from charter.infer.torch_backend import TorchBackend
from charter.metrics import read_metrics
from charter.model import Transformer
from charter.train.distributed import Distributed, unwrap
from charter.train.lm import IGNORE, LanguageModelTask, LMBatch
from charter.train.loop import MODEL, TrainConfig, Trainer, train
from charter.train.models import TrainedModel
from charter.train.optimizer import OptimizerSettings
from tests.helpers import micro

SAMPLED_TOKENS = 8  # generated per sequence


class SelfSampledTask(LanguageModelTask):
    """A toy of RL's rollouts: each step's sequences are sampled from the model being trained,
    by an engine that follows it, from first tokens and seeds drawn from a generator that is
    part of the checkpoint. The loss is the language-model loss on those samples."""

    def __init__(self, tokenizer, seed: int = 0) -> None:
        super().__init__(micro(), tokenizer)
        self.generator = torch.Generator().manual_seed(seed)
        self.engine: Engine | None = None

    def train_batches(self, step, rank, world_size, batch_size, micro_batch_size, models):
        if self.engine is None:  # built once: it follows the weights from step to step
            model = unwrap(models[MODEL])
            self.engine = Engine(
                TorchBackend(model, max_batch_size=batch_size, follow_weights=True),
                self.tokenizer,
                eos_token_ids=[],
            )
        n = batch_size // world_size
        firsts = torch.randint(self.config.vocab_size, (n,), generator=self.generator).tolist()
        seeds = torch.randint(2**31, (n,), generator=self.generator).tolist()
        params = [SamplingParams(SAMPLED_TOKENS, temperature=1.0, seed=s) for s in seeds]
        completions = self.engine.generate([[first] for first in firsts], params)
        tokens = torch.tensor([[f, *c.token_ids] for f, c in zip(firsts, completions)])  # (n, T+1)
        return [
            LMBatch(tokens[i : i + micro_batch_size, :-1], tokens[i : i + micro_batch_size, 1:])
            for i in range(0, n, micro_batch_size)
        ]

    def eval_batches(self, rank, world_size, micro_batch_size):
        return []

    def eval_metrics(self, mean_loss):
        return {}

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class StatelessSampledTask(SelfSampledTask):
    """The same task without its generator in the checkpoint: what exact resume needs it for."""

    state_dict = None
    load_state_dict = None


SAMPLED_SETTINGS = dict(
    steps=6,
    batch_size=4,
    micro_batch_size=2,
    lr=1e-2,
    warmup_steps=1,
    eval_every=100,
    save_every=100,
)


def sampled_run(task_class, tokenizer, out, **settings) -> list[float]:
    torch.manual_seed(0)
    config = TrainConfig(**SAMPLED_SETTINGS, **settings)
    train(Transformer(micro()), task_class(tokenizer), config, out, Distributed())
    return losses(out)


def losses(out) -> list[float]:
    return [row["loss"] for row in read_metrics(out / "metrics.jsonl")]


def test_batches_sampled_from_the_live_model_resume_bitwise(tokenizer, tmp_path):
    straight = sampled_run(SelfSampledTask, tokenizer, tmp_path / "straight")
    assert len(straight) == 6 and len(set(straight)) == 6
    resumed = tmp_path / "resumed"
    assert len(sampled_run(SelfSampledTask, tokenizer, resumed, stop_after=3)) == 3
    assert (resumed / "checkpoints" / "step-000003" / "training_state" / "task.pt").exists()
    assert sampled_run(SelfSampledTask, tokenizer, resumed) == straight  # bit for bit

    stateless = tmp_path / "stateless"
    sampled_run(StatelessSampledTask, tokenizer, stateless, stop_after=3)
    resumed_without_state = sampled_run(StatelessSampledTask, tokenizer, stateless)
    assert resumed_without_state[:3] == straight[:3]
    assert resumed_without_state[3:] != straight[3:]  # the sampler restarted from its seed


def test_a_checkpoint_without_the_tasks_state_is_refused(tokenizer, tmp_path):
    sampled_run(StatelessSampledTask, tokenizer, tmp_path, stop_after=2)
    with pytest.raises(ValueError, match=r"step-000002: the checkpoint has no task state"):
        sampled_run(SelfSampledTask, tokenizer, tmp_path)


TORCHRUN_SCRIPT = """
import sys
import torch
from charter.model import Transformer
from charter.tokenizer import Tokenizer
from charter.train.distributed import init_distributed, shutdown
from charter.train.loop import TrainConfig, train
from tests.helpers import micro
from tests.test_trainer import SAMPLED_SETTINGS, SelfSampledTask

tokenizer_dir, out, stop_after = sys.argv[1:]
ctx = init_distributed()
torch.manual_seed(0)
task = SelfSampledTask(Tokenizer.load(tokenizer_dir), seed=ctx.rank)  # each rank its own samples
config = TrainConfig(**SAMPLED_SETTINGS, stop_after=int(stop_after) or None)
try:
    train(Transformer(micro()), task, config, out, ctx)
finally:
    shutdown(ctx)
"""


@pytest.mark.slow
def test_each_ranks_sampler_resumes_under_torchrun(tokenizer_dir, tmp_path):
    script = tmp_path / "sampled_run.py"
    script.write_text(TORCHRUN_SCRIPT)
    root = Path(__file__).parent.parent
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}

    def torchrun(out, stop_after: int) -> None:
        port = str(29700 + os.getpid() % 1000)
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
        command += ["--master_port", port, str(script), str(tokenizer_dir), str(out)]
        result = subprocess.run(
            [*command, str(stop_after)], capture_output=True, text=True, env=env, timeout=600
        )
        assert result.returncode == 0, result.stderr[-3000:]

    torchrun(tmp_path / "straight", 0)
    torchrun(tmp_path / "resumed", 3)
    saved = tmp_path / "resumed" / "checkpoints" / "step-000003" / "training_state" / "task.pt"
    states = torch.load(saved, weights_only=True)
    assert len(states) == 2 and not torch.equal(states[0]["generator"], states[1]["generator"])
    torchrun(tmp_path / "resumed", 0)
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")


# ---- several models ----


class ValueModel(nn.Module):
    """A scalar per token (a toy value model)."""

    def __init__(self, vocab_size: int = 512, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width)
        self.head = nn.Linear(width, 1)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(input_ids))[..., 0]  # (B, T)


class SafetensorsFormat:
    def write_checkpoint(self, directory, state_dict):
        save_file(dict(state_dict), directory / "model.safetensors")

    def read_checkpoint(self, directory):
        return load_file(directory / "model.safetensors")


class PolicyValueTask:
    """PPO's models with toy losses: the policy's language-model loss plus its KL to the frozen
    reference, and the value model regressing on the next token's parity."""

    def train_batches(self, step, rank, world_size, batch_size, micro_batch_size, models):
        tokens = torch.randint(512, (batch_size, 9), generator=torch.Generator().manual_seed(step))
        return [LMBatch(tokens[i : i + 2, :-1], tokens[i : i + 2, 1:]) for i in (0, 2)]

    def eval_batches(self, rank, world_size, micro_batch_size):
        return []

    def eval_metrics(self, mean_loss):
        return {}

    def loss(self, models, batch):
        logits = models["policy"](batch.input_ids)  # (B, T, V)
        reference = models["reference"](batch.input_ids)  # (B, T, V), no graph
        log_p, log_ref = logits.log_softmax(-1), reference.log_softmax(-1)
        kl = (log_p.exp() * (log_p - log_ref)).sum()
        lm = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), reduction="sum")
        values = models["value"](batch.input_ids)  # (B, T)
        value_loss = ((values - (batch.targets % 2).float()) ** 2).sum()
        return lm + 0.1 * kl + value_loss


VALUE_SETTINGS = OptimizerSettings(lr=5e-2, warmup_steps=0, schedule="wsd", decay_fraction=0.5)


def policy_value_trainer(tokenizer, out, **settings):
    torch.manual_seed(0)
    policy = Transformer(micro())
    reference = copy.deepcopy(policy)
    config = TrainConfig(
        steps=4, batch_size=4, micro_batch_size=2, lr=1e-2, warmup_steps=1, save_every=2, **settings
    )
    trained = {
        "policy": TrainedModel(policy, LanguageModelTask(micro(), tokenizer)),
        "value": TrainedModel(ValueModel(), SafetensorsFormat(), VALUE_SETTINGS),
    }
    trainer = Trainer(
        PolicyValueTask(), config, out, Distributed(), trained, frozen={"reference": reference}
    )
    return trainer, policy, reference


def test_trained_models_with_their_optimizers_beside_a_frozen_one(tokenizer, tmp_path):
    trainer, policy, reference = policy_value_trainer(tokenizer, tmp_path / "run")
    assert list(trainer.models) == ["policy", "value", "reference"]
    assert trainer.models["reference"] is reference  # never wrapped
    before = copy.deepcopy(reference.state_dict())
    value_before = copy.deepcopy(trainer.models["value"].state_dict())
    trainer.fit()

    assert not reference.training and not any(p.requires_grad for p in reference.parameters())
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert not torch.equal(
        policy.layers[0].mlp.up_proj.weight, reference.layers[0].mlp.up_proj.weight
    )
    value_after = trainer.models["value"].state_dict()
    assert not torch.equal(value_after["head.weight"], value_before["head.weight"])

    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    config = trainer.config
    for row in rows:  # each trained model follows its own schedule
        assert row["lr"] == config.learning_rate(row["step"] - 1)
        assert row["lr/value"] == VALUE_SETTINGS.learning_rate(row["step"] - 1, config.steps)
        assert row["grad_norm/value"] > 0
    assert rows[0]["lr/value"] == 5e-2 and rows[-1]["lr/value"] < 5e-2

    checkpoint = tmp_path / "run" / "checkpoints" / "step-000004"
    assert sorted(p.name for p in checkpoint.iterdir() if p.is_dir()) == ["training_state", "value"]
    saved_policy = load_checkpoint(checkpoint)  # the main model is the checkpoint itself
    assert torch.equal(saved_policy.norm.weight, policy.norm.weight)
    assert torch.equal(
        load_file(checkpoint / "value" / "model.safetensors")["head.weight"],
        value_after["head.weight"],
    )
    optimizers = torch.load(checkpoint / "training_state" / "optimizer.pt", weights_only=True)
    assert sorted(optimizers) == ["policy", "value"]  # the frozen model has none
    assert (tmp_path / "run" / "final" / "value" / "model.safetensors").exists()


def test_several_trained_models_resume_bitwise(tokenizer, tmp_path):
    straight, _, _ = policy_value_trainer(tokenizer, tmp_path / "straight")
    straight.fit()
    first, _, _ = policy_value_trainer(tokenizer, tmp_path / "resumed", stop_after=2)
    first.fit()
    resumed, _, _ = policy_value_trainer(tokenizer, tmp_path / "resumed")
    assert resumed.resume() == tmp_path / "resumed" / "checkpoints" / "step-000002"
    assert resumed.steps_done == 2
    resumed.fit()
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    for name in ("policy", "value"):
        a, b = resumed.models[name].state_dict(), straight.models[name].state_dict()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)


def test_a_driver_steps_evaluates_and_saves_by_itself(tokenizer, tmp_path):
    """An RL controller's loop: it makes the batches and calls the parts."""
    task = SelfSampledTask(tokenizer)
    torch.manual_seed(0)
    model = Transformer(micro())
    config = TrainConfig(steps=3, batch_size=2, micro_batch_size=2, warmup_steps=1)
    trainer = Trainer(task, config, tmp_path, Distributed(), {MODEL: TrainedModel(model, task)})
    assert trainer.resume() is None  # nothing to resume from
    batches = task.train_batches(0, 0, 1, 2, 2, trainer.models)
    row = trainer.step(batches)
    assert list(row) == ["step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s"]
    assert row["step"] == trainer.steps_done == 1 and row["tokens"] == 2 * SAMPLED_TOKENS
    with torch.no_grad():  # the same batch after the step: a lower loss than the step's
        after = F.cross_entropy(
            model(batches[0].input_ids).flatten(0, 1), batches[0].targets.flatten()
        )
    assert float(after) < row["loss"]
    assert model.training  # the engine's sampling left the trainer's mode alone
    assert trainer.evaluate() == {}  # no held-out batches
    saved = trainer.save()
    assert saved == tmp_path / "checkpoints" / "step-000001"
    again = Trainer(
        SelfSampledTask(tokenizer),
        config,
        tmp_path,
        Distributed(),
        {MODEL: TrainedModel(Transformer(micro()), task)},
    )
    assert again.resume() == saved and again.steps_done == 1 and again.tokens_seen == 16
    assert torch.equal(again.models[MODEL].norm.weight, model.norm.weight)


def test_models_that_share_parameters_or_bad_names_are_refused(tokenizer):
    task = LanguageModelTask(micro(), tokenizer)
    model = Transformer(micro())
    config = TrainConfig(batch_size=2, micro_batch_size=2)
    make = lambda trained, frozen: Trainer(task, config, "unused", Distributed(), trained, frozen)  # noqa: E731
    with pytest.raises(
        ValueError, match="frozen model 'reference' shares parameters with trained model 'policy'"
    ):
        make({"policy": TrainedModel(model, task)}, {"reference": model})
    with pytest.raises(ValueError, match="trained models 'policy' and 'value' share parameters"):
        make(
            {"policy": TrainedModel(model, task), "value": TrainedModel(model.layers[0], task)}, {}
        )
    with pytest.raises(ValueError, match="model name 'Value Head'"):
        make(
            {"policy": TrainedModel(model, task), "Value Head": TrainedModel(ValueModel(), task)},
            {},
        )
    with pytest.raises(ValueError, match="'training_state'"):
        make(
            {
                "policy": TrainedModel(model, task),
                "training_state": TrainedModel(ValueModel(), task),
            },
            {},
        )
    with pytest.raises(ValueError, match="at least one trained model"):
        make({}, {"reference": model})
    assert model.layers[0].mlp.up_proj.weight.requires_grad  # no refused run froze anything


def test_a_step_without_targets_is_refused(tokenizer):
    """A global batch of nothing but IGNORE is an error, not a division by zero."""
    task = LanguageModelTask(micro(), tokenizer)
    trainer = Trainer(
        task,
        TrainConfig(batch_size=2, micro_batch_size=2),
        "unused",
        Distributed(),
        {MODEL: TrainedModel(Transformer(micro()), task)},
    )
    ids = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="global batch 0 has no targets"):
        trainer.step([LMBatch(ids, torch.full_like(ids, IGNORE))])
