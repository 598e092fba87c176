"""The `charter` command line: tokenizer training, generation, info."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from charter.checkpoint import save_checkpoint
from charter.cli import main
from charter.infer.engine import Engine
from charter.infer.generator import user_turn
from charter.infer.local import LocalGenerator
from charter.infer.sampling import SamplingParams
from charter.infer.torch_backend import TorchBackend
from charter.model import Transformer
from tests.helpers import micro


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    return save_checkpoint(Transformer(micro()), tmp_path_factory.mktemp("m") / "micro", tokenizer)


def test_tokenizer_train_reports_held_out_bytes_per_token(tmp_path, corpus, capsys):
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in corpus[:200]))
    main(
        [
            "tokenizer",
            "train",
            "--input",
            str(data),
            "--vocab-size",
            "400",
            "--out",
            str(tmp_path / "tok"),
        ]
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "vocab size: 400"
    assert out[1] == "held-out documents: 10"  # every 20th of 200
    ratio = float(out[2].removeprefix("held-out bytes per token: "))
    assert 1.2 < ratio < 4
    assert (tmp_path / "tok" / "tokenizer.json").exists()


def test_tokenizer_train_names_a_malformed_line(tmp_path):
    data = tmp_path / "docs.jsonl"
    data.write_text('{"text": "fine"}\n{"text": broken}\n')
    with pytest.raises(SystemExit, match=r"docs\.jsonl:2: invalid JSON"):
        main(["tokenizer", "train", "--input", str(data), "--out", str(tmp_path / "tok")])


def test_generate_prints_only_the_completion(checkpoint, tokenizer):
    """Run as a real subprocess: stdout must hold exactly the completion and a newline."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "charter.cli",
            "generate",
            "--model",
            str(checkpoint),
            "--prompt",
            "Hello",
            "--system",
            "Be kind.",
            "--temperature",
            "0",
            "--max-new-tokens",
            "12",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    from charter.checkpoint import load_checkpoint

    engine = Engine(TorchBackend(load_checkpoint(checkpoint)), tokenizer)
    with LocalGenerator(engine, "micro") as generator:
        request = user_turn("Hello", "Be kind.", max_tokens=12, temperature=0)
        turn = generator.generate([request])[0]
    assert result.stdout == turn.text + "\n"


def test_generate_raw_prints_the_engines_plain_completion(checkpoint, tokenizer, capsys):
    from charter.checkpoint import load_checkpoint

    arguments = ["--prompt", "Hello", "--raw", "--temperature", "0", "--max-new-tokens", "12"]
    main(["generate", "--model", str(checkpoint), "--backend", "torch", *arguments])
    engine = Engine(TorchBackend(load_checkpoint(checkpoint)), tokenizer)
    params = SamplingParams(max_new_tokens=12, temperature=0)
    expected = engine.generate([tokenizer.encode("Hello")], params)[0]
    assert expected.token_ids and capsys.readouterr().out == expected.text + "\n"


def test_generate_raw_sends_plain_text(checkpoint, tokenizer, capsys):
    main(
        [
            "generate",
            "--model",
            str(checkpoint),
            "--prompt",
            "def f(x):",
            "--raw",
            "--temperature",
            "0",
            "--max-new-tokens",
            "8",
            "--stop",
            "zzz",
        ]
    )
    from charter.checkpoint import load_checkpoint

    engine = Engine(TorchBackend(load_checkpoint(checkpoint)), tokenizer)
    expected = engine.generate(
        [tokenizer.encode("def f(x):")], SamplingParams(max_new_tokens=8, temperature=0)
    )[0]
    assert capsys.readouterr().out == expected.text + "\n"


def test_info_describes_the_directory(checkpoint, capsys):
    main(["info", str(checkpoint), "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == sum(p.numel() for p in Transformer(micro()).parameters())
    assert info["tokenizer"]["vocab_size"] == 512
    assert info["tokenizer"]["eos_tokens"] == ["<|im_end|>"]
    assert set(info["files"]) >= {"config.json", "model.safetensors", "tokenizer.json"}
    main(["info", str(checkpoint)])
    text = capsys.readouterr().out
    assert "layers 2, width 64, heads 4 (KV 2, head_dim 16)" in text


def test_errors_are_one_line_messages(tmp_path):
    with pytest.raises(SystemExit, match="charter info: error: .*config.json not found"):
        main(["info", str(tmp_path)])
