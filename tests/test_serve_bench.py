"""bench/serve_load.py on the micro model: it starts `charter serve`, drives concurrent streaming
clients, and reports what it measured (the real figures come from SmolLM2; see the script)."""

from __future__ import annotations

import json

import pytest
import torch

from charter.checkpoint import save_checkpoint
from charter.model import Transformer
from tests.helpers import load_bench, micro
from tests.serve_helpers import free_port


@pytest.mark.slow
def test_load_benchmark_reports_every_level_without_errors(tmp_path, tokenizer, capsys):
    torch.manual_seed(0)
    checkpoint = save_checkpoint(Transformer(micro()), tmp_path / "micro", tokenizer)
    out = tmp_path / "results.jsonl"
    argv = ["--model", str(checkpoint), "--clients", "1", "3", "--requests", "2"]
    argv += ["--max-tokens", "8", "--port", str(free_port()), "--out", str(out)]
    results = load_bench("serve_load").main(argv)
    assert [(r.clients, r.requests, r.ok, r.errors, r.overloaded) for r in results] == [
        (1, 2, 2, 0, 0),
        (3, 6, 6, 0, 0),
    ]
    for r in results:
        assert 0 < r.output_tokens <= r.requests * 8
        assert r.tokens_per_second == pytest.approx(r.output_tokens / r.seconds)
        assert 0 < r.ttft_p50 <= r.ttft_p95 < r.seconds
    assert [json.loads(line)["clients"] for line in out.read_text().splitlines()] == [1, 3]
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| clients | requests | output tok/s")
    assert table[2].startswith("| 1 | 2 | ") and table[3].startswith("| 3 | 6 | ")
