"""`charter sft`: assistant-only targets, length bucketing, learning, exact resume."""

from __future__ import annotations

import json

import pytest
import torch

from charter.chat import Conversation, Message, TextBlock
from charter.chat.template import CHAT_TEMPLATE
from charter.checkpoint import load_checkpoint, load_tokenizer, save_checkpoint
from charter.cli import main
from charter.data.sft import SFTRecord, to_training_example, write_sft
from charter.data.synthetic import generate
from charter.infer.engine import Engine
from charter.infer.sampling import SamplingParams
from charter.infer.torch_backend import TorchBackend
from charter.metrics import read_metrics
from charter.model import Transformer
from charter.train.lm import IGNORE
from charter.train.sft import SFTSettings, SFTTask, collate, render_examples
from tests.helpers import micro


@pytest.fixture(scope="module")
def base(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    return save_checkpoint(Transformer(micro()), tmp_path_factory.mktemp("sft") / "base", tokenizer)


def sft(base, data, out, *settings):
    main(
        [
            "sft",
            "--base",
            str(base),
            "--data",
            str(data),
            "--heldout",
            str(data),
            "--out",
            str(out),
            "--set",
            *settings,
        ]
    )


def test_targets_are_exactly_the_next_assistant_tokens(tokenizer):
    records = generate("train", 6, seed=1)
    examples, truncated = render_examples(records, tokenizer, max_seq_len=4096)
    assert truncated == 0
    batch = collate(examples, pad_id=tokenizer.pad_token_id)
    for row, record in enumerate(records):
        rendered = to_training_example(record, tokenizer)
        n = len(rendered.ids) - 1
        assert batch.input_ids[row, :n].tolist() == rendered.ids[:-1]
        expected = [t if m else IGNORE for t, m in zip(rendered.ids[1:], rendered.loss_mask[1:])]
        assert batch.targets[row, :n].tolist() == expected
        assert (batch.targets[row, n:] == IGNORE).all()  # padding is never a target
        assert (batch.input_ids[row, n:] == tokenizer.pad_token_id).all()
    assert batch.num_targets == sum(sum(e.loss_mask[1:]) for e in examples)


def test_truncation_is_counted(tokenizer):
    records = generate("train", 4, seed=2)
    examples, truncated = render_examples(records, tokenizer, max_seq_len=20)
    assert truncated == 4 and all(len(e.ids) == 21 for e in examples)


def test_every_demonstration_once_per_epoch_in_length_sorted_batches(tokenizer):
    examples, _ = render_examples(generate("train", 24, seed=3), tokenizer, 4096)
    task = SFTTask(micro(), tokenizer, examples, [], [], SFTSettings(), seed=0)
    epoch = [task.global_batch(step, 8) for step in range(3)]
    assert sorted(i for batch in epoch for i in batch) == list(range(24))
    for batch in epoch:
        lengths = [len(examples[i].ids) for i in batch]
        assert lengths == sorted(lengths)
    assert task.global_batch(3, 8) != epoch[0]  # the next epoch is reshuffled
    assert sorted(
        task.global_batch(3, 8) + task.global_batch(4, 8) + task.global_batch(5, 8)
    ) == list(range(24))
    # two ranks split the same global batch
    ranks = [task.train_batches(1, r, 2, 8, 2) for r in (0, 1)]
    assert sum(b.num_targets for r in ranks for b in r) == sum(
        b.num_targets for b in task.train_batches(1, 0, 1, 8, 2)
    )


def test_sft_teaches_the_demonstrated_answer_and_resumes_exactly(base, tokenizer, tmp_path):
    question = Conversation([Message("user", [TextBlock("What is the password?")])])
    answer = "The password is swordfish."
    records = [
        SFTRecord(Conversation(question.messages + [Message("assistant", [TextBlock(answer)])]))
    ] * 16
    data = tmp_path / "sft.jsonl"
    write_sft(records, data)
    settings = [
        "train.steps=40",
        "train.batch_size=4",
        "train.micro_batch_size=2",
        "train.min_lr_ratio=0.5",
        "train.warmup_steps=5",
        "train.lr=1e-2",
        "train.eval_every=20",
        "train.save_every=20",
    ]
    sft(base, data, tmp_path / "run", *settings)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert rows[-1]["val_loss"] < 0.05
    tuned = tmp_path / "run" / "final"
    assert load_tokenizer(tuned).chat_template == CHAT_TEMPLATE
    from charter.chat import render_prompt

    prompt = render_prompt(question, tokenizer, thinking=False)
    engine = Engine(TorchBackend(load_checkpoint(tuned)), tokenizer)
    completion = engine.generate([prompt], SamplingParams(max_new_tokens=30, temperature=0))[0]
    assert completion.text == answer and completion.stop_reason == "end_turn"

    sft(base, data, tmp_path / "resumed", *settings, "train.stop_after=20")
    sft(base, data, tmp_path / "resumed", *settings)
    resumed = read_metrics(tmp_path / "resumed" / "metrics.jsonl")
    assert [r["loss"] for r in resumed] == [r["loss"] for r in rows]


def test_bad_demonstration_names_file_line_and_field(base, tmp_path):
    data = tmp_path / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    bad = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 5}]}
    data.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(SystemExit, match=r"bad\.jsonl:2: messages\[1\]\.content"):
        main(["sft", "--base", str(base), "--data", str(data), "--out", str(tmp_path / "r")])


def test_frozen_lower_layers_and_embeddings_do_not_change(base, tokenizer, tmp_path):
    data = tmp_path / "sft.jsonl"
    write_sft(generate("train", 8, seed=4), data)
    sft(
        base,
        data,
        tmp_path / "run",
        "train.steps=2",
        "train.batch_size=4",
        "train.micro_batch_size=4",
        "train.eval_every=2",
        "train.save_every=2",
        "sft.freeze_layers=1",
    )
    before, after = load_checkpoint(base), load_checkpoint(tmp_path / "run" / "final")
    assert torch.equal(before.embed_tokens.weight, after.embed_tokens.weight)
    for (name, a), (_, b) in zip(
        before.layers[0].state_dict().items(), after.layers[0].state_dict().items()
    ):
        assert torch.equal(a, b), name
    assert not torch.equal(before.layers[1].mlp.up_proj.weight, after.layers[1].mlp.up_proj.weight)
    with pytest.raises(SystemExit, match="freeze_layers 3: the model has 2 layers"):
        sft(base, data, tmp_path / "bad", "sft.freeze_layers=3")
