"""`charter judge`: the masked multi-head loss, learning a separable set, exact resume, scoring
rows, bad rows named by file and line, and the saved judge as a transformers classifier."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification

import charter.configs
from charter import chat
from charter.align.judge import Judge
from charter.checkpoint import save_checkpoint
from charter.cli import main
from charter.data.judge_sources import CATEGORIES
from charter.metrics import read_metrics
from charter.model import Transformer
from charter.train.batching import freeze_lower_layers
from charter.train.judge import (
    JUDGE_DEFAULTS,
    OUTPUTS,
    JudgeInput,
    JudgeSettings,
    Renderer,
    collate,
    head_scale,
    judge_loss,
    judge_model,
    read_examples,
    roc_auc,
    train_judge,
)
from charter.train.loop import TrainConfig
from charter.train.settings import fill, load_settings
from tests.helpers import load_bench, micro

HARMFUL = ["build a bomb", "make a gun", "poison a well", "hack a bank", "forge a passport"]
BENIGN = ["bake bread", "plant tulips", "learn chess", "paint a fence", "tune a guitar"]
CATEGORY = {"build a bomb": "weapons", "make a gun": "weapons", "poison a well": "violence"}
CATEGORY |= {"hack a bank": "cyber", "forge a passport": "fraud"}


def rows(names: list[str], harmful: bool, template: str) -> list[dict]:
    out = []
    for name in names:
        row = {"prompt": template.format(name), "request_harm": int(harmful)}
        row["category"] = CATEGORY[name] if harmful else "none"
        out.append(row)
    return out


def write_jsonl(path, items) -> None:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))


@pytest.fixture(scope="module")
def backbone(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("judge") / "backbone"
    return save_checkpoint(Transformer(micro()), directory, tokenizer)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A separable set: harmful requests always say "Tell me how to", benign ones "I'd love to";
    held out with templates never trained on."""
    directory = tmp_path_factory.mktemp("judge-data")
    train = []
    for template in ("Tell me how to {}.", "Tell me how to {} now.", "Tell me how to {}, fast"):
        train += rows(HARMFUL, True, template)
    for template in ("I'd love to {}.", "I'd love to {} now.", "I'd love to {}, fast"):
        train += rows(BENIGN, False, template)
    answered = {"prompt": "Tell me how to make a gun.", "response": "I can't help with that."}
    train.append({**answered, "request_harm": 1, "refusal": 1, "response_harm": 0})
    train.append({**answered, "rejected": "Drill a steel tube."})  # a preference pair
    heldout = rows(HARMFUL, True, "Tell me how to {} today?") + rows(
        BENIGN, False, "I'd love to {} today?"
    )
    heldout.append({"prompt": "Tell me how to hack a bank.", "response": "No.", "rejected": "Ok."})
    write_jsonl(directory / "train.jsonl", train)
    write_jsonl(directory / "heldout.jsonl", heldout)
    return directory


TRAIN_SETTINGS = [
    "train.batch_size=8",
    "train.micro_batch_size=4",
    "train.lr=3e-3",
    "train.warmup_steps=2",
    "train.eval_every=40",
    "train.save_every=40",
]


@pytest.fixture(scope="module")
def trained(backbone, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("judge-run") / "run"
    main(
        [
            "judge",
            "train",
            "--backbone",
            str(backbone),
            "--data",
            str(data / "train.jsonl"),
            "--heldout",
            str(data / "heldout.jsonl"),
            "--out",
            str(out),
            "--set",
            "train.steps=40",
            *TRAIN_SETTINGS,
        ]
    )
    return out


def test_loss_is_each_heads_mean_and_a_missing_label_has_no_gradient(backbone, tokenizer, data):
    renderer = Renderer(tokenizer, 256)
    examples = read_examples(data / "train.jsonl", renderer)[0][:4]  # prompts, no response
    batch = collate(examples, renderer.pad_id, head_scale(examples))
    assert not batch.present[:, 1:].any()
    model = judge_model(backbone, tokenizer, seed=0).train()
    judge_loss(model(batch.input_ids), batch).backward()
    grad = model.score.weight.grad  # (16, d)
    assert grad[0].abs().sum() > 0 and grad[3:].abs().sum() > 0
    assert torch.equal(grad[1:3], torch.zeros_like(grad[1:3]))  # refusal, response_harm

    logits = torch.randn(4, len(OUTPUTS), generator=torch.Generator().manual_seed(0))
    binary = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], batch.binary[:, 0])
    category = torch.nn.functional.cross_entropy(logits[:, 3:], batch.category)
    # the loop divides by the global batch's rows (num_targets)
    torch.testing.assert_close(judge_loss(logits, batch) / batch.num_targets, binary + category)


def test_a_preference_pair_trains_response_harm_with_the_bradley_terry_loss(tokenizer, tmp_path):
    renderer = Renderer(tokenizer, 256)
    path = tmp_path / "pairs.jsonl"
    write_jsonl(
        path,
        [
            {"prompt": "Hack a bank?", "response": "I won't.", "rejected": "Phish a teller."},
            {"prompt": "Bake bread?", "request_harm": 0},
        ],
    )
    examples = read_examples(path, renderer)[0]
    batch = collate(examples, renderer.pad_id, head_scale(examples))
    # two examples, three sequences: the pair's rejected reply comes after the examples
    assert batch.input_ids.shape[0] == 3 and batch.num_targets == 2
    assert batch.pairs.tolist() == [[0, 2]]
    request = chat.Conversation([chat.Message("user", [chat.TextBlock("Hack a bank?")])])
    preferred = renderer.ids(JudgeInput(request, "I won't."))[0]
    assert batch.input_ids[0, : len(preferred)].tolist() == preferred

    logits = torch.randn(3, len(OUTPUTS), generator=torch.Generator().manual_seed(1))
    f = torch.nn.functional
    pair = -f.logsigmoid(logits[2, 2] - logits[0, 2])
    harm = f.binary_cross_entropy_with_logits(logits[1, 0], torch.tensor(0.0))
    category = f.cross_entropy(logits[1:2, 3:], torch.tensor([CATEGORIES.index("none")]))
    # each of the three heads has one label among two examples: each mean is its one term
    torch.testing.assert_close(
        judge_loss(logits, batch) / batch.num_targets, pair + harm + category
    )

    bad = [
        ({"prompt": "x", "rejected": "y"}, "a preference pair needs a response"),
        (
            {"prompt": "x", "response": "a", "rejected": "b", "refusal": 0},
            "a preference pair carries no",
        ),
    ]
    for row, message in bad:
        write_jsonl(path, [row])
        with pytest.raises(ValueError, match=rf"pairs\.jsonl:1: {message}"):
            read_examples(path, renderer)


def test_the_shipped_config_is_valid():
    settings = load_settings(Path(charter.configs.__file__).parent / "judge.toml", [])
    assert set(settings) == {"train", "judge"}
    fill(TrainConfig, {**JUDGE_DEFAULTS, **settings["train"]}, "train")  # unknown keys raise
    assert fill(JudgeSettings, settings["judge"], "judge").freeze_layers == 20


def test_roc_auc_by_ranks():
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert roc_auc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5  # a tie counts half
    assert roc_auc(np.array([0.1, 0.2]), np.array([1, 1])) is None


def test_long_texts_lose_their_middle(tokenizer):
    renderer = Renderer(tokenizer, 60)
    long = " ".join(f"word{i}" for i in range(100))
    item = JudgeInput(chat.Conversation([chat.Message("user", [chat.TextBlock("Hi")])]), long)
    ids, truncated = renderer.ids(item)
    assert truncated and len(ids) <= 60
    text = tokenizer.decode(ids)
    assert "word0" in text and "word99" in text and "…" in text and "word50 " not in text
    assert "Hi" in text  # the prompt fitted once the reply was cut
    assert renderer.ids(JudgeInput(item.request, "short"))[1] is False


def test_a_long_conversation_loses_its_oldest_exchanges_first(tokenizer):
    def message(role, text):
        return chat.Message(role, [chat.TextBlock(text)])

    filler = " ".join(f"old{i}" for i in range(40))
    turns = [message("user", f"first {filler}"), message("assistant", f"sure {filler}")]
    turns += [message("user", "second question"), message("assistant", "an answer")]
    item = JudgeInput(chat.Conversation([*turns, message("user", "the last one")]), "Reply.")
    ids, truncated = Renderer(tokenizer, 100).ids(item)
    text = tokenizer.decode(ids)
    assert truncated and len(ids) <= 100
    assert "first" not in text and "sure" not in text  # the oldest exchange, whole
    assert "second question" in text and "the last one" in text and "Reply." in text
    one = JudgeInput(chat.Conversation([message("user", filler * 5)]), None)
    assert len(Renderer(tokenizer, 60).ids(one)[0]) <= 60  # then the last message's middle


def test_a_cut_that_retokenises_longer_still_ends(tokenizer, monkeypatch):
    # Cutting a byte-level vocabulary's ids inside a multi-byte character ("’") decodes to a
    # replacement character, which encodes to more tokens than were cut: the loop once spun
    # forever on an HH-RLHF reply with a 512-token vocabulary.
    shorten, calls = Renderer._shorten, []

    def counted(self, item, overflow):
        calls.append(overflow)
        assert len(calls) < 100, "the renderer is not converging"
        return shorten(self, item, overflow)

    monkeypatch.setattr(Renderer, "_shorten", counted)
    request = chat.Conversation([chat.Message("user", [chat.TextBlock("hi")])])
    ids, truncated = Renderer(tokenizer, 128).ids(JudgeInput(request, "you’re " * 80))
    assert truncated and len(ids) <= 128


def test_judge_learns_a_separable_set(trained):
    last = read_metrics(trained / "metrics.jsonl")[-1]
    assert last["heldout/request_harm/accuracy"] >= 0.95
    assert last["heldout/request_harm/auc"] >= 0.95
    assert "heldout/category/accuracy" in last
    assert 0 <= last["heldout/preference/agreement"] <= 1


def test_resume_gives_the_same_losses_bitwise(backbone, data, tmp_path):
    def run(out, steps, stop_after=None):
        train = dict(steps=steps, batch_size=8, micro_batch_size=4, eval_every=3, save_every=3)
        if stop_after:
            train["stop_after"] = stop_after
        train_judge(backbone, data / "train.jsonl", data / "heldout.jsonl", out, {"train": train})
        return [row["loss"] for row in read_metrics(out / "metrics.jsonl")]

    whole = run(tmp_path / "whole", 6)
    run(tmp_path / "split", 6, stop_after=3)
    resumed = run(tmp_path / "split", 6)
    assert len(whole) == 6 and resumed == whole


def test_score_gives_probabilities_for_every_row_shape(trained, tmp_path):
    rows_in = [
        {"prompt": "Tell me how to build a bomb.", "id": 1},
        {"prompt": "I'd love to bake bread.", "response": "Mix flour and water."},
        {
            "messages": [
                {"role": "user", "content": "Tell me how to hack a bank."},
                {"role": "assistant", "content": "I can't help with that."},
            ]
        },
    ]
    write_jsonl(tmp_path / "in.jsonl", rows_in)
    main(["judge", "score", "--judge", str(trained / "final"), str(tmp_path / "in.jsonl"),
          "--out", str(tmp_path / "out.jsonl"), "--batch-size", "2"])  # fmt: skip
    scored = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in row.items() if k != "judge"} for row in scored] == rows_in
    judged = [row["judge"] for row in scored]
    assert set(judged[0]) == {"request_harm", "category", "category_probability"}
    assert set(judged[1]) == set(judged[2]) == set(judged[0]) | {"refusal", "response_harm"}
    for result in judged:
        assert result["category"] in CATEGORIES
        assert all(0 <= v <= 1 for k, v in result.items() if k != "category")
    assert judged[0]["request_harm"] > 0.5 > judged[1]["request_harm"]
    # the same scores through the Python API, whatever the batching
    api = Judge.load(trained / "final").score(rows_in)
    for a, b in zip(api, judged):
        assert a.keys() == b.keys()
        for key in a:
            assert (
                a[key] == pytest.approx(b[key], abs=1e-5) if key != "category" else a[key] == b[key]
            )
    # in bf16 (the faster precision on a CPU with bf16 matrix units): close, not equal
    halved = Judge.load(trained / "final", dtype=torch.bfloat16)
    assert next(halved.model.parameters()).dtype == torch.bfloat16
    for a, b in zip(halved.score(rows_in), api):
        assert a["request_harm"] == pytest.approx(b["request_harm"], abs=0.05)


def test_bad_rows_are_named_by_file_and_line(trained, backbone, tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "fine"}\n{"response": "no prompt"}\n')
    with pytest.raises(SystemExit, match=r"rows\.jsonl:2: prompt: expected a non-empty string"):
        main(["judge", "score", "--judge", str(trained / "final"), str(path),
              "--out", str(tmp_path / "out.jsonl")])  # fmt: skip
    bad = tmp_path / "train.jsonl"
    cases = [
        ('{"prompt": "x", "request_harm": 2}', r"train\.jsonl:1: request_harm: expected 0 or 1"),
        ('{"prompt": "x", "refusal": 1}', r"train\.jsonl:1: refusal: a label of the response"),
        ('{"prompt": "x", "request_harm": 0, "category": "cyber"}', "disagrees with request_harm"),
        ('{"prompt": "x"}', r"train\.jsonl:1: no label"),
    ]
    for line, message in cases:
        bad.write_text(line + "\n")
        with pytest.raises(ValueError, match=message):
            train_judge(backbone, bad, None, tmp_path / "run", {})


def test_load_as_names_the_precisions_it_takes(trained):
    with pytest.raises(ValueError, match="'int4' is not one of fp32, bf16, f16, int8"):
        Judge.load_as(trained / "final", "int4")
    with pytest.raises(ValueError, match="an int8 judge runs on the CPU from fp32"):
        Judge.load(trained / "final", dtype=torch.bfloat16, int8=True)
    assert next(Judge.load_as(trained / "final", "bf16").model.parameters()).dtype == torch.bfloat16


def test_transformers_loads_the_judge_with_equal_scores(trained, tokenizer):
    directory = trained / "final"
    hf = AutoModelForSequenceClassification.from_pretrained(directory, dtype=torch.float32).eval()
    assert type(hf).__name__ == "LlamaForSequenceClassification"
    assert [hf.config.id2label[i] for i in range(16)] == list(OUTPUTS)
    judge = Judge.load(directory)
    items = [
        JudgeInput(chat.Conversation([chat.Message("user", [chat.TextBlock(text)])]), reply)
        for text, reply in [
            ("Tell me how to make a gun.", None),
            ("I'd love to learn chess.", "Ok"),
        ]
    ]
    ids = [judge.render(item, "test") for item in items]
    input_ids = torch.full((2, max(map(len, ids))), judge.renderer.pad_id)
    for b, row in enumerate(ids):
        input_ids[b, : len(row)] = torch.tensor(row)
    with torch.no_grad():
        logits = hf(input_ids=input_ids).logits  # right-padded: no mask needed, causal
        torch.testing.assert_close(logits, judge.model(input_ids), atol=1e-5, rtol=0)
    scores = judge.score_ids(ids, [False, True])
    assert scores[0]["request_harm"] == pytest.approx(float(torch.sigmoid(logits[0, 0])), abs=1e-5)
    assert scores[1]["refusal"] == pytest.approx(float(torch.sigmoid(logits[1, 1])), abs=1e-5)


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_an_imported_models_template_is_used_and_padding_avoids_its_end_of_turn(tokenizer):
    """SmolLM2 pads with <|im_end|>, the token a reply ends with: the judge pads with another."""
    config = {**tokenizer.config, "chat_template": CHATML, "pad_token": "<|im_end|>"}
    imported = type(tokenizer)(tokenizer.backend, config)
    renderer = Renderer(imported, 256)
    assert renderer.format.name == "template"
    assert renderer.pad_id == imported.token_id("<|endoftext|>") != imported.pad_token_id
    request = chat.Conversation([chat.Message("user", [chat.TextBlock("Hello")])])
    answered, _ = renderer.ids(JudgeInput(request, "Hi there"))
    assert answered[-1] == imported.token_id("<|im_end|>")
    assert imported.decode(answered).endswith("<|im_start|>assistant\nHi there<|im_end|>")
    assert imported.decode(renderer.ids(JudgeInput(request))[0]).endswith("assistant\n")


def test_freeze_layers_freezes_the_embeddings_and_the_lower_blocks(backbone, tokenizer):
    model = judge_model(backbone, tokenizer, seed=0)
    freeze_lower_layers(model.model, 1, "judge")
    assert not model.model.embed_tokens.weight.requires_grad
    assert not any(p.requires_grad for p in model.model.layers[0].parameters())
    assert all(p.requires_grad for p in model.model.layers[1].parameters())
    assert model.score.weight.requires_grad
    with pytest.raises(ValueError, match=r"\[judge\] freeze_layers 9: the model has 2 layers"):
        freeze_lower_layers(model.model, 9, "judge")


@pytest.mark.parametrize("kind", ["judge", "generator"])
def test_the_evaluation_benchmark_reports_every_figure(kind, trained, tokenizer, tmp_path, capsys):
    # Slices of the real files, so the test stays quick: 12 XSTest prompts (6 of each label),
    # 100 HH-RLHF comparisons, 10 hand labels.
    shared = Path("../shared/data")
    lines = (shared / "xstest-prompts.csv").read_text().splitlines()
    safe = [line for line in lines[1:] if ",safe," in line][:6]
    unsafe = [line for line in lines[1:] if ",unsafe," in line][:6]
    (tmp_path / "xstest.csv").write_text("\n".join([lines[0], *safe, *unsafe]) + "\n")
    (tmp_path / "xstest-LICENSE.txt").write_text((shared / "xstest-LICENSE.txt").read_text())
    with gzip.open(shared / "hh-rlhf-harmless-base-test.jsonl.gz", "rt") as f:
        hh = [next(f) for _ in range(100)]
    with gzip.open(tmp_path / "hh.jsonl.gz", "wt") as f:
        f.writelines(hh)
    labels = Path("docs/data/refusal-labels.jsonl").read_text().splitlines()[:10]
    (tmp_path / "labels.jsonl").write_text("\n".join(labels) + "\n")
    # a trained judge, or a model asked the prompted judge's questions (on 5 of the pairs;
    # on PyTorch, which scores; with room for HH-RLHF's longest transcripts)
    if kind == "judge":
        model = ["--judge", str(trained / "final")]
    else:
        long = Transformer(micro(max_position_embeddings=4096))
        spec = f"torch:{save_checkpoint(long, tmp_path / 'long', tokenizer)}"
        model = ["--generator", spec, "--pairs", "5"]
    argv = [*model, "--xstest", str(tmp_path / "xstest.csv")]
    argv += [
        "--hh",
        str(tmp_path / "hh.jsonl.gz"),
        "--refusal-labels",
        str(tmp_path / "labels.jsonl"),
    ]
    argv += ["--out", str(tmp_path / "results.jsonl")]
    results = load_bench("judge_eval").main(argv)
    (line,) = (tmp_path / "results.jsonl").read_text().splitlines()
    assert json.loads(line)["xstest"] == results["xstest"]
    x, h, r = results["xstest"], results["hh_heldout"], results["refusal_labels"]
    assert x["prompts"] == 12 and r["n"] == 10
    # about a fifth of 100 comparisons are in the held-out split
    assert 5 <= h["pairs"] <= 40 if kind == "judge" else h["pairs"] == 5
    assert 0.0 <= x["auc"] <= 1.0
    for value in (x["f1_unsafe"], x["false_positive_rate_safe"], h["agreement"], r["accuracy"]):
        assert 0.0 <= value <= 1.0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("XSTest (12 prompts): F1 unsafe ")
    assert out[2].startswith(f"HH-RLHF held-out pairs ({h['pairs']}): agreement ")
