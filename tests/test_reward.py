"""`charter rm`: the reward read at the last real token under either padding, the soft-label
Bradley–Terry loss and its margin, the weighted mixture, learning a separable set, exact resume,
the commands, and the saved reward model loading with the same scores."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification

import charter.configs
from charter import chat
from charter.chat.format import chat_format
from charter.checkpoint import load_score_model, save_checkpoint
from charter.cli import main
from charter.commands.rm import weighted_file
from charter.metrics import read_metrics
from charter.model import Transformer
from charter.train.distributed import init_distributed
from charter.train.judge import judge_pad_token_id
from charter.train.loop import TrainConfig, train
from charter.train.pairs import collate_pairs, preference_accuracy
from charter.train.reward import (
    REWARD_DEFAULTS,
    RewardModel,
    RewardSettings,
    RewardTask,
    bradley_terry_loss,
    mixture_draw,
    pair_rewards,
    read_pair_file,
    sequence_rewards,
    train_reward_model,
)
from charter.train.settings import fill, load_settings
from tests.helpers import micro

THINGS = ["bread", "tulips", "chess", "a fence", "a guitar", "a kite", "soup", "a boat"]


def write_jsonl(path: Path, items: list[dict]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def pair(prompt: str, chosen: str, rejected: str, p: float = 1.0) -> dict:
    return dict(prompt=prompt, chosen=chosen, rejected=rejected, p_chosen=p, feedback_model="t")


def separable(templates: list[str], things: list[str]) -> list[dict]:
    """Chosen replies say "banana", rejected ones never do."""
    rows = []
    for t, template in enumerate(templates):
        for i, thing in enumerate(things):
            other = things[(i + 1 + t) % len(things)]
            chosen, rejected = f"Try banana with {thing}.", f"Try {other} with {thing}."
            rows.append(pair(template.format(thing), chosen, rejected))
    return rows


@pytest.fixture(scope="module")
def backbone(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("rm") / "backbone"
    return save_checkpoint(Transformer(micro()), directory, tokenizer)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    directory = tmp_path_factory.mktemp("rm-data")
    train_rows = separable(["How do I make {}?", "Help me with {}.", "What about {}?"], THINGS)
    train_rows[0]["p_chosen"] = 0.8  # a soft label trains too
    write_jsonl(directory / "train.jsonl", train_rows)
    write_jsonl(directory / "heldout.jsonl", separable(["Tell me about {} now."], THINGS))
    return directory


TRAIN_SETTINGS = {
    "batch_size": 8,
    "micro_batch_size": 4,
    "lr": 3e-3,
    "warmup_steps": 2,
    "eval_every": 20,
    "save_every": 20,
}


@pytest.fixture(scope="module")
def trained(backbone, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("rm-run") / "run"
    sets = [f"train.{k}={v}" for k, v in TRAIN_SETTINGS.items()]
    main(["rm", "train", "--base", str(backbone), "--data", str(data / "train.jsonl"),
          "--heldout", str(data / "heldout.jsonl"), "--out", str(out),
          "--set", "train.steps=20", *sets])  # fmt: skip
    return out


def test_the_reward_is_read_at_the_last_real_token_under_either_padding(backbone, tokenizer):
    model = load_score_model(backbone, num_labels=1, seed=0)
    pad_id = model.config.pad_token_id = judge_pad_token_id(tokenizer)
    request = chat.Conversation([chat.Message("user", [chat.TextBlock("Hi?")])])
    format = chat_format(tokenizer)
    short, long = (
        format.scored(request, [chat.TextBlock(reply)], thinking=False).ids
        for reply in ("Hello.", "Hello there, how are you doing today, friend?")
    )
    end_of_turn = short[-1]
    assert end_of_turn in tokenizer.eos_token_ids and pad_id != end_of_turn

    T = len(long)
    right = torch.full((2, T), pad_id)
    left = torch.full((2, T), end_of_turn)  # padded with the end-of-turn token, as PPO may
    right_mask, left_mask = torch.zeros(2, T, dtype=torch.long), torch.zeros(2, T, dtype=torch.long)
    for b, ids in enumerate((short, long)):
        right[b, : len(ids)], right_mask[b, : len(ids)] = torch.tensor(ids), 1
        left[b, T - len(ids) :], left_mask[b, T - len(ids) :] = torch.tensor(ids), 1
    with torch.no_grad():
        from_right = sequence_rewards(model, right, right_mask)
        from_left = sequence_rewards(model, left, left_mask)
        alone = [float(model(torch.tensor([ids]))[0, 0]) for ids in (short, long)]
        hidden = model.model.hidden_states(right, attention_mask=right_mask)
        at_pad = float(model.score(hidden[0, T - 1])[0])  # the short row's last position
    assert from_right.shape == (2,)
    torch.testing.assert_close(from_right, from_left, atol=1e-5, rtol=0)
    torch.testing.assert_close(from_right, torch.tensor(alone), atol=1e-5, rtol=0)
    assert abs(at_pad - alone[0]) > 1e-3
    # padding with the end-of-turn token and no rewriting: refused, not read elsewhere
    model.config.pad_token_id = end_of_turn
    with pytest.raises(ValueError, match="row 0: transformers would score it at"):
        model(right.masked_fill(right_mask == 0, end_of_turn), right_mask)


def test_the_soft_label_loss_is_the_cross_entropy_of_the_preference():
    chosen = torch.tensor([2.0, 0.5, 1.0])
    rejected = torch.tensor([1.0, 1.5, 1.0])
    p = torch.tensor([1.0, 0.25, 0.5])  # Δ = 1, -1, 0

    def log_sigmoid(x: float) -> float:
        return -math.log1p(math.exp(-x))

    by_hand = -log_sigmoid(1) - (0.25 * log_sigmoid(-1) + 0.75 * log_sigmoid(1)) - log_sigmoid(0)
    assert float(bradley_terry_loss(chosen, rejected, p)) == pytest.approx(by_hand, abs=1e-6)
    # p = 1: -log σ(Δ)
    one = torch.tensor([1.0])
    loss = bradley_terry_loss(torch.tensor([0.3]), torch.tensor([1.0]), one)
    assert float(loss) == pytest.approx(-log_sigmoid(-0.7), abs=1e-6)
    # the gradient in Δ is σ(Δ) − p: at p = 0.5 it pushes Δ towards 0 from either side
    for delta in (2.0, -2.0):
        d = torch.tensor([delta], requires_grad=True)
        bradley_terry_loss(d, torch.zeros(1), torch.tensor([0.5])).backward()
        assert float(d.grad) == pytest.approx(1 / (1 + math.exp(-delta)) - 0.5, abs=1e-6)
        assert float(d.grad) * delta > 0  # descent lowers |Δ|
    # the margin: a sure pair must win by m; none at p = 0.5; swapping replies and p ↦ 1 − p
    # gives the same loss
    r_c, r_r = torch.tensor([0.4]), torch.tensor([0.1])
    with_margin = bradley_terry_loss(r_c, r_r, one, margin=1.0)
    assert float(with_margin) == pytest.approx(-log_sigmoid(0.3 - 1.0), abs=1e-6)
    half = torch.tensor([0.5])
    assert float(bradley_terry_loss(r_c, r_r, half, margin=1.0)) == pytest.approx(
        float(bradley_terry_loss(r_c, r_r, half))
    )
    for label in (1.0, 0.8, 0.3):
        q = torch.tensor([label])
        torch.testing.assert_close(
            bradley_terry_loss(r_c, r_r, q, margin=0.7),
            bradley_terry_loss(r_r, r_c, 1 - q, margin=0.7),
        )


def test_accuracy_skips_even_labels_and_counts_ties_half():
    assert preference_accuracy([(1.0, 1.0), (-1.0, 0.9), (0.0, 1.0), (-2.0, 0.2)]) == 0.625
    assert preference_accuracy([(1.0, 0.5)]) is None


def test_a_global_batch_is_a_pure_function_of_seed_and_step_drawn_by_weight():
    sizes, weights = [10, 1000], [1.0, 3.0]
    assert mixture_draw(sizes, weights, 0, 5, 16) == mixture_draw(sizes, weights, 0, 5, 16)
    assert mixture_draw(sizes, weights, 0, 5, 16) != mixture_draw(sizes, weights, 0, 6, 16)
    assert mixture_draw(sizes, weights, 0, 5, 16) != mixture_draw(sizes, weights, 1, 5, 16)
    draws = [d for step in range(200) for d in mixture_draw(sizes, weights, 0, step, 16)]
    files = Counter(f for f, _ in draws)
    assert files[0] / len(draws) == pytest.approx(0.25, abs=0.03)  # the small file's weight
    assert all(0 <= i < sizes[f] for f, i in draws)
    assert len({i for f, i in draws if f == 0}) == 10  # its every pair drawn
    never = [d for step in range(50) for d in mixture_draw([10, 10], [0.0, 1.0], 0, step, 8)]
    assert {f for f, _ in never} == {1}


def test_a_weight_0_file_is_never_drawn_and_ranks_split_the_global_batch(tokenizer, tmp_path):
    format = chat_format(tokenizer)
    rows = separable(["Q {}?"], THINGS)
    a = read_pair_file(write_jsonl(tmp_path / "a.jsonl", rows[:4]), format, 256, 0.0)
    b = read_pair_file(write_jsonl(tmp_path / "b.jsonl", rows[4:]), format, 256, 1.0)
    config = micro()
    config.pad_token_id = judge_pad_token_id(tokenizer)
    task = RewardTask(config, tokenizer, [a, b], [], RewardSettings(), seed=3)
    batch = task.global_batch(7, 8)
    assert batch == task.global_batch(7, 8)
    assert all(any(e is x for x in b.examples) for e in batch)
    assert [e.length for e in batch] == sorted(e.length for e in batch)
    whole = task.train_batches(7, 0, 1, 8, 2)
    halves = task.train_batches(7, 0, 2, 8, 2) + task.train_batches(7, 1, 2, 8, 2)
    for x, y in zip(whole, halves, strict=True):
        assert torch.equal(x.input_ids, y.input_ids)
    with pytest.raises(ValueError, match="every training file has weight 0"):
        RewardTask(config, tokenizer, [a], [], RewardSettings(), seed=0)


def test_a_reward_model_learns_a_separable_set(trained, capsys):
    last = read_metrics(trained / "metrics.jsonl")[-1]
    assert last["step"] == 20
    assert last["heldout/heldout/accuracy"] >= 0.95
    assert last["heldout/heldout/margin"] > 0


def test_resume_gives_the_same_losses_bitwise(backbone, data, tmp_path):
    def run(out, stop_after=None):
        settings = {**TRAIN_SETTINGS, "steps": 6, "eval_every": 3, "save_every": 3}
        if stop_after:
            settings["stop_after"] = stop_after
        train_reward_model(
            backbone,
            [(data / "train.jsonl", 1.0)],
            [data / "heldout.jsonl"],
            out,
            {"train": settings, "rm": {"margin": 0.5}},
        )
        return [row["loss"] for row in read_metrics(out / "metrics.jsonl")]

    whole = run(tmp_path / "whole")
    run(tmp_path / "split", stop_after=3)
    resumed = run(tmp_path / "split")
    assert len(whole) == 6 and resumed == whole


def test_score_gives_every_row_its_reward(trained, tmp_path):
    rows_in = [
        {"prompt": "What about soup?", "response": "Try banana with soup.", "id": 1},
        {"prompt": "What about soup?", "response": "Try a kite with soup."},
        {
            "messages": [
                {"role": "user", "content": "Help me with chess."},
                {"role": "assistant", "content": "Try banana with chess."},
            ]
        },
    ]
    write_jsonl(tmp_path / "in.jsonl", rows_in)
    main(["rm", "score", "--rm", str(trained / "final"), str(tmp_path / "in.jsonl"),
          "--out", str(tmp_path / "out.jsonl"), "--batch-size", "2"])  # fmt: skip
    scored = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in row.items() if k != "reward"} for row in scored] == rows_in
    rewards = [row["reward"] for row in scored]
    assert rewards[0] > rewards[1] and rewards[2] > rewards[1]
    model = RewardModel.load(trained / "final")
    conversations = [
        (chat.Conversation([chat.Message("user", [chat.TextBlock("What about soup?")])]), reply)
        for reply in ("Try banana with soup.", "Try a kite with soup.")
    ]
    assert model.score(conversations, batch_size=1) == pytest.approx(rewards[:2], abs=1e-5)


def test_bad_rows_are_named_by_file_line_and_field(trained, backbone, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "no reply"}\n')
    with pytest.raises(SystemExit, match=r"rows\.jsonl:2: response: expected the reply"):
        main(["rm", "score", "--rm", str(trained / "final"), str(path),
              "--out", str(tmp_path / "out.jsonl")])  # fmt: skip
    bad = write_jsonl(tmp_path / "prefs.jsonl", [{**pair("x", "y", "z"), "p_chosen": 2}])
    with pytest.raises(SystemExit, match=r"prefs\.jsonl:1: p_chosen: expected a number"):
        main(["rm", "train", "--base", str(backbone), "--data", f"{bad}:2",
              "--out", str(tmp_path / "run")])  # fmt: skip
    with pytest.raises(SystemExit, match="not a reward model"):
        main(["rm", "score", "--rm", str(backbone), str(path), "--out", str(tmp_path / "o")])


def test_weighted_file_arguments():
    assert weighted_file("a/b.jsonl:2.5") == (Path("a/b.jsonl"), 2.5)
    assert weighted_file("a/b.jsonl") == (Path("a/b.jsonl"), 1.0)
    assert weighted_file("odd:name.jsonl") == (Path("odd:name.jsonl"), 1.0)


def test_the_saved_reward_model_loads_with_the_same_scores(backbone, data, tokenizer, tmp_path):
    config = fill(TrainConfig, {**TRAIN_SETTINGS, "steps": 3}, "train")
    settings = RewardSettings(max_seq_len=256)
    pad_token = tokenizer.decode([judge_pad_token_id(tokenizer)])  # as train_reward_model sets
    tokenizer = type(tokenizer)(tokenizer.backend, {**tokenizer.config, "pad_token": pad_token})
    format = chat_format(tokenizer)
    files = [read_pair_file(data / "train.jsonl", format, 256)]
    model = load_score_model(backbone, num_labels=1, seed=0)
    model.config.pad_token_id = judge_pad_token_id(tokenizer)
    task = RewardTask(model.config, tokenizer, files, [], settings, seed=0)
    train(model, task, config, tmp_path / "run", init_distributed())
    batch = collate_pairs(files[0].examples[:3], model.config.pad_token_id)
    with torch.no_grad():
        chosen, rejected = pair_rewards(model.eval(), batch)
    expected = torch.cat([chosen, rejected])

    directory = tmp_path / "run" / "final"
    loaded = load_score_model(directory)
    assert loaded.config.num_labels == 1
    assert loaded.config.pad_token_id == model.config.pad_token_id
    rm = RewardModel.load(directory)
    torch.testing.assert_close(rm.rewards(batch.input_ids, batch.attention_mask), expected)
    ids = [files[0].examples[i].chosen for i in range(3)]
    assert rm.score_ids(ids) == pytest.approx(chosen.tolist(), abs=1e-5)
    hf = AutoModelForSequenceClassification.from_pretrained(directory, dtype=torch.float32).eval()
    assert hf.config.id2label == {0: "reward"}
    with torch.no_grad():  # right-padded with a token no reply ends with: no mask needed
        logits = hf(input_ids=batch.input_ids).logits
    torch.testing.assert_close(logits[:, 0], expected, atol=1e-5, rtol=0)


def test_the_shipped_config_is_valid():
    settings = load_settings(Path(charter.configs.__file__).parent / "smollm2-rm.toml", [])
    assert set(settings) == {"train", "rm"}
    train_config = fill(TrainConfig, {**REWARD_DEFAULTS, **settings["train"]}, "train")
    assert train_config.batch_size % train_config.micro_batch_size == 0
    assert train_config.steps % train_config.eval_every == 0  # the last step is evaluated
    assert fill(RewardSettings, settings["rm"], "rm").freeze_layers < 30  # SmolLM2's layers
