"""`charter dpo`: the loss on hand numbers, soft labels, the cached reference log-probabilities,
learning a synthetic preference, exact resume, and the checkpoint it writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from charter.chat.format import chat_format
from charter.checkpoint import load_checkpoint, save_checkpoint
from charter.commands import main
from charter.data.preferences import read_preferences
from charter.metrics import read_metrics
from charter.model import Transformer
from charter.train import dpo
from charter.train.dpo import (
    REFERENCE_FILE,
    DPOBatch,
    DPOSettings,
    DPOTask,
    dpo_loss,
    heldout_metrics,
    implicit_rewards,
)
from charter.train.loop import MODEL
from charter.train.pairs import collate_pairs, render_pairs, reply_logprobs
from tests.helpers import micro


@pytest.fixture(scope="module")
def base(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    return save_checkpoint(Transformer(micro()), tmp_path_factory.mktemp("dpo") / "base", tokenizer)


def say_pairs(n, template):
    """(prompt, chosen, rejected): the prompt asks for "yes" or "no" (alternately), the chosen
    reply says it and the rejected one the other word, so the policy must read the prompt."""
    words = [("yes", "no"), ("no", "yes")]
    return [(template.format(word=words[i % 2][0], i=i), *words[i % 2]) for i in range(n)]


def write_pairs(path, pairs, p_chosen=1.0):
    rows = [
        {"prompt": prompt, "chosen": chosen, "rejected": rejected, "p_chosen": p_chosen}
        | {"feedback_model": "human"}
        for prompt, chosen, rejected in pairs
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def data(tmp_path):
    train = write_pairs(tmp_path / "train.jsonl", say_pairs(16, "Say {word}, please ({i})."))
    held = write_pairs(tmp_path / "held.jsonl", say_pairs(8, "Say {word} now ({i})."))
    return train, held


def run_dpo(base, train, held, out, *settings):
    main(
        ["dpo", "--base", str(base), "--data", str(train), "--heldout", str(held)]
        + ["--out", str(out), "--set", *settings]
    )


SHORT = [
    "train.steps=6",
    "train.batch_size=8",
    "train.micro_batch_size=4",
    "train.lr=1e-3",
    "train.warmup_steps=1",
    "train.eval_every=3",
    "train.save_every=3",
    "dpo.beta=0.5",
]


def test_the_loss_is_the_formula_and_p_1_is_standard_dpo():
    policy = torch.tensor([-3.0, -5.0, -4.0, -2.0])  # chosen of pairs 0 and 1, then rejected
    reference = torch.tensor([-4.0, -5.5, -3.0, -2.5])
    chosen, rejected = implicit_rewards(policy, reference, beta=0.5)
    assert chosen.tolist() == [0.5, 0.25] and rejected.tolist() == [-0.5, 0.25]
    h = chosen - rejected  # 1.0 and 0.0
    p = torch.tensor([0.8, 0.3])

    def log_sigmoid(x):
        return math.log(1 / (1 + math.exp(-x)))

    expected = -(0.8 * log_sigmoid(1.0) + 0.2 * log_sigmoid(-1.0))
    expected += -(0.3 * log_sigmoid(0.0) + 0.7 * log_sigmoid(0.0))
    assert dpo_loss(h, p).item() == pytest.approx(expected, rel=1e-6)
    # p = 1: the original DPO loss, −log σ(h)
    h = torch.tensor([1.0, -2.0, 0.3])
    standard = -torch.nn.functional.logsigmoid(h).sum()
    assert dpo_loss(h, torch.ones(3)).item() == pytest.approx(standard.item(), rel=1e-6)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
def test_at_the_reference_h_is_0_and_the_loss_is_log_2_for_every_p(p):
    logprobs = torch.tensor([-7.0, -1.5, -3.0, -9.0])
    chosen, rejected = implicit_rewards(logprobs, logprobs.clone(), beta=0.1)
    h = chosen - rejected
    assert h.tolist() == [0.0, 0.0]
    assert dpo_loss(h, torch.full((2,), p)).item() == pytest.approx(2 * math.log(2))


def pair_batch(tokenizer, tmp_path, p_chosen):
    path = write_pairs(tmp_path / "pairs.jsonl", say_pairs(2, "Say {word}."), p_chosen)
    examples, _ = render_pairs(read_preferences(path), chat_format(tokenizer), 256)
    return collate_pairs(examples, tokenizer.pad_token_id)


@pytest.mark.parametrize("p_chosen, pushed", [(0.5, False), (1.0, True), (0.2, True)])
def test_pairs_of_p_one_half_give_no_push_at_the_reference(
    micro_model, tokenizer, tmp_path, p_chosen, pushed
):
    pairs = pair_batch(tokenizer, tmp_path, p_chosen)
    with torch.no_grad():
        reference = reply_logprobs(micro_model(pairs.input_ids), pairs)
    task = DPOTask(
        micro(), tokenizer, [], torch.zeros(0, 2), [], torch.zeros(0, 2), DPOSettings(), 0
    )
    micro_model.train()
    task.loss({MODEL: micro_model}, DPOBatch(pairs, reference)).backward()
    largest = max(p.grad.abs().max().item() for p in micro_model.parameters())
    assert (largest > 1e-6) == pushed, largest


def test_heldout_metrics():
    # (chosen reward, rejected reward, p_chosen); the p = 0.5 pair counts in no accuracy
    scored = [(0.4, -0.1, 1.0), (0.0, 0.2, 0.9), (0.1, 0.3, 0.1), (0.2, 0.0, 0.5)]
    metrics = heldout_metrics(scored)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["margin"] == pytest.approx((0.5 - 0.2 - 0.2 + 0.2) / 4)
    assert metrics["chosen_reward"] == pytest.approx(0.7 / 4)
    assert metrics["rejected_reward"] == pytest.approx(0.4 / 4)


def test_reference_log_probs_are_computed_once_and_again_when_the_data_changes(
    base, data, tmp_path, capfd, monkeypatch
):
    scored = []
    score_pairs = dpo.score_pairs

    def counting(model, examples, *args):
        scored.append(len(examples))
        return score_pairs(model, examples, *args)

    monkeypatch.setattr(dpo, "score_pairs", counting)
    train, held = data
    out = tmp_path / "run"
    run_dpo(base, train, held, out, *SHORT, "train.stop_after=3")
    assert scored == [16, 8] and "computing them into" in capfd.readouterr().err
    cache = (out / REFERENCE_FILE).stat()
    run_dpo(base, train, held, out, *SHORT)  # resumes: reads the cache
    assert scored == [16, 8] and f"reusing {out / REFERENCE_FILE}" in capfd.readouterr().err
    assert (out / REFERENCE_FILE).stat().st_mtime_ns == cache.st_mtime_ns
    assert read_metrics(out / "metrics.jsonl")[0]["loss"] == pytest.approx(math.log(2), abs=1e-4)

    write_pairs(train, say_pairs(12, "Say {word}, please ({i})."))
    run_dpo(base, train, held, out, *SHORT, "train.steps=8")
    assert scored == [16, 8, 12, 8]
    assert "(data changed); recomputing" in capfd.readouterr().err


def test_a_micro_policy_learns_the_preferred_reply_and_resumes_exactly(base, data, tmp_path):
    train, held = data
    settings = [*SHORT, "train.steps=24", "train.eval_every=4", "train.save_every=12"]
    # the first evaluation (step 4) has not yet learnt to read the prompt: accuracy 0.5
    run_dpo(base, train, held, tmp_path / "run", *settings)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    evals = [r for r in rows if "heldout/margin" in r]
    assert len(evals) == 6
    first, last = evals[0], evals[-1]
    assert last["heldout/margin"] > first["heldout/margin"] + 1.0
    # the margin grows (above); the accuracy may start at 1.0 with some tokenizers (the test
    # corpus is this Python's docstrings), so it is only asked to end there
    assert last["heldout/accuracy"] == 1.0
    assert last["heldout/chosen_reward"] > last["heldout/rejected_reward"]
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]

    resumed = tmp_path / "resumed"
    run_dpo(base, train, held, resumed, *settings, "train.stop_after=12")
    run_dpo(base, train, held, resumed, *settings)
    again = read_metrics(resumed / "metrics.jsonl")
    assert [r["loss"] for r in again] == [r["loss"] for r in rows]

    policy = load_checkpoint(resumed / "final")
    before = load_checkpoint(base)
    assert policy.config.vocab_size == before.config.vocab_size
    assert not torch.equal(policy.lm_head.weight, before.lm_head.weight)


def test_bad_settings_and_pairs_name_the_field(base, data, tmp_path):
    train, held = data
    with pytest.raises(SystemExit, match=r"\[dpo\] beta must be > 0"):
        run_dpo(base, train, held, tmp_path / "a", "dpo.beta=0")
    with pytest.raises(SystemExit, match=r"\[dpo\] unknown setting 'label_smoothing'"):
        run_dpo(base, train, held, tmp_path / "b", "dpo.label_smoothing=0.1")
    with pytest.raises(SystemExit, match="every pair is longer than max_seq_len 5"):
        run_dpo(base, train, held, tmp_path / "c", "dpo.max_seq_len=5")
    train.write_text(train.read_text().replace('"p_chosen": 1.0', '"p_chosen": 2', 1))
    with pytest.raises(SystemExit, match=r"train\.jsonl:1: p_chosen"):
        run_dpo(base, train, held, tmp_path / "d")


def test_the_smollm2_config_fills_the_settings():
    from charter.configs import __file__ as configs
    from charter.train.dpo import DPO_DEFAULTS
    from charter.train.loop import TrainConfig
    from charter.train.settings import fill, load_settings

    settings = load_settings(Path(configs).parent / "smollm2-dpo.toml", [])
    assert set(settings) == {"train", "dpo"}
    train = fill(TrainConfig, {**DPO_DEFAULTS, **settings["train"]}, "train")
    assert train.dtype == "bf16" and train.batch_size % train.micro_batch_size == 0
    assert train.steps % train.eval_every == 0  # the last step is evaluated
    assert fill(DPOSettings, settings["dpo"], "dpo").freeze_layers < 30  # SmolLM2's layers
