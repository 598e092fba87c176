"""`charter serve` from the command line: models by directory name or NAME=DIR, keys, and the
refusal to serve beyond loopback without a key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anthropic
import httpx
import pytest
import torch

from charter.checkpoint import save_checkpoint
from charter.cli import main
from charter.model import Transformer
from charter.serve.registry import split_name
from tests.helpers import micro
from tests.serve_helpers import free_port, wait_for


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(
        Transformer(micro()), tmp_path_factory.mktemp("ckpt") / "micro-ckpt", tokenizer
    )


def test_served_models_are_named_by_their_spec_or_explicitly():
    assert split_name("runs/sft/final") == (None, "runs/sft/final")
    assert split_name("chat=runs/sft/final") == ("chat", "runs/sft/final")
    assert split_name("chat=torch:runs/a,format=charter") == ("chat", "torch:runs/a,format=charter")
    assert split_name("runs/a,format=charter") == (None, "runs/a,format=charter")
    assert split_name("anthropic:m@http://h:1") == (None, "anthropic:m@http://h:1")
    with pytest.raises(ValueError, match="the model name is empty"):
        split_name("=runs/x")


def test_serving_beyond_loopback_needs_a_key(checkpoint, monkeypatch):
    monkeypatch.delenv("CHARTER_API_KEYS", raising=False)
    with pytest.raises(SystemExit, match="refusing to listen on 0.0.0.0 without an API key"):
        main(["serve", "--model", str(checkpoint), "--host", "0.0.0.0"])


@pytest.mark.slow
def test_charter_serve_answers_the_sdk(checkpoint):
    """A real `charter serve` process (about 10 s: a cold interpreter imports torch)."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if k != "CHARTER_API_KEYS"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "charter.cli",
            "serve",
            "--allow-ungated",
            "--model",
            str(checkpoint),
            "--model",
            f"second={checkpoint}",
            "--port",
            str(port),
            "--api-key",
            "cli-key",
            "--max-batch-size",
            "2",
            "--context",
            "128",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        base_url = f"http://127.0.0.1:{port}"

        def up():
            try:
                return httpx.get(f"{base_url}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                assert server.poll() is None, server.stderr.read()
                return False

        wait_for(up, timeout=60, interval=0.2)
        client = anthropic.Anthropic(base_url=base_url, api_key="cli-key", max_retries=0)
        assert [m.id for m in client.models.list()] == ["micro-ckpt", "second"]
        assert client.models.retrieve("second").max_input_tokens == 127  # --context 128
        message = client.messages.create(
            model="second", max_tokens=4, messages=[{"role": "user", "content": "Hi"}]
        )
        assert message.usage.output_tokens >= 1 and message.model == "second"
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    assert "1 API key(s) configured" in stderr
    assert "serving ungated (--allow-ungated)" in stderr and "no gate.json" in stderr
    assert f"web chat at http://127.0.0.1:{port}/" in stderr
