"""Pieces of the training loop: schedules, parameter groups, settings files."""

from __future__ import annotations

import math

import pytest

from charter.model import Transformer
from charter.train.loop import TrainConfig
from charter.train.optimizer import parameter_groups
from charter.train.schedule import warmup_cosine, warmup_stable_decay
from charter.train.settings import fill, load_settings
from tests.helpers import micro


def test_warmup_cosine_values():
    lr = lambda s: warmup_cosine(s, peak=1.0, warmup=10, total=110, min_ratio=0.1)
    assert lr(0) == pytest.approx(0.1) and lr(9) == pytest.approx(1.0)
    assert lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway down the cosine
    assert lr(110) == pytest.approx(0.1) and lr(500) == pytest.approx(0.1)


def test_warmup_stable_decay_values():
    lr = lambda s: warmup_stable_decay(
        s, peak=2.0, warmup=5, total=100, min_ratio=0.0, decay_fraction=0.2
    )
    assert lr(4) == pytest.approx(2.0) and lr(50) == 2.0 and lr(79) == 2.0
    assert lr(90) == pytest.approx(1.0)  # halfway through the final 20 steps
    assert lr(100) == pytest.approx(0.0)


def test_no_weight_decay_on_norms_and_embeddings():
    for tied in (True, False):
        model = Transformer(micro(tie_word_embeddings=tied))
        decay, no_decay = parameter_groups(model, 0.1)
        names = {id(p): n for n, p in model.named_parameters()}
        decayed = {names[id(p)] for p in decay["params"]}
        undecayed = {names[id(p)] for p in no_decay["params"]}
        assert "embed_tokens.weight" in undecayed and "norm.weight" in undecayed
        assert "layers.0.input_layernorm.weight" in undecayed
        assert "layers.1.mlp.down_proj.weight" in decayed
        assert ("lm_head.weight" in decayed) is (not tied)
        assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
        n_params = len({id(p) for p in model.parameters()})
        assert len(decay["params"]) + len(no_decay["params"]) == n_params


def test_settings_file_and_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[train]\nsteps = 10\nlr = 1e-3\nschedule = "wsd"\n[model]\npreset = "micro"\n')
    settings = load_settings(path, ["train.steps=20", "train.compile=true", "model.preset=mid"])
    config = fill(TrainConfig, settings["train"], "train")
    assert (config.steps, config.lr, config.schedule, config.compile) == (20, 1e-3, "wsd", True)
    assert settings["model"] == {"preset": "mid"}
    assert fill(TrainConfig, {"lr": 1}, "train").lr == 1.0  # an int where a float is expected


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"stpes": 3}, r"\[train\] unknown setting 'stpes'"),
        ({"steps": "many"}, r"\[train\] steps: expected int, got 'many'"),
        ({"compile": 1}, r"\[train\] compile: expected bool, got 1"),
        ({"schedule": "linear"}, "schedule 'linear': choose from cosine, wsd"),
        ({"batch_size": 0}, "batch_size must be ≥ 1"),
    ],
)
def test_bad_settings_are_named(values, message):
    with pytest.raises(ValueError, match=message):
        fill(TrainConfig, values, "train")


def test_malformed_settings_file_and_override(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train]\nsteps = = 3\n")
    with pytest.raises(ValueError, match="bad.toml: .*line 2"):
        load_settings(path, [])
    with pytest.raises(ValueError, match="expected section.key=value"):
        load_settings(None, ["steps=3"])


def test_learning_rate_follows_the_configured_schedule():
    config = TrainConfig(steps=100, warmup_steps=0, lr=1.0, min_lr_ratio=0.0)
    assert config.learning_rate(50) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))
