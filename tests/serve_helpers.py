"""Helpers for the serving tests: a real uvicorn server on a free loopback port, micro models,
and scripted model output.

A micro model with random weights writes random tokens, so tests that need a particular answer
(a tool call, a thinking block, an XSS payload) script it: `script_replies` puts a logits
processor in front of every request's, forcing the script's tokens one by one. Everything after
the logits (sampling, stop conditions, parsing, the wire format) runs as in production, and the
server's own processors (the thinking budget) still override the script.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import torch
import uvicorn

from charter.infer.driver import Job
from charter.infer.engine import GenerationRequest
from charter.infer.thinking import force_token
from charter.model import Transformer
from charter.serve.app import create_app
from charter.serve.registry import Registry, ServedModel, serve_model
from charter.tokenizer import IM_END, Tokenizer
from tests.helpers import micro

CONTEXT = 1024


def micro_registry(tokenizer: Tokenizer, specs: dict[str, tuple[int, int]]) -> Registry:
    """Models named by `specs` (name → (max_batch_size, max_waiting)), all the same seeded micro
    model (they only read it), with a context of 1024 tokens: room for a tools section."""
    torch.manual_seed(0)
    model = Transformer(micro(max_position_embeddings=CONTEXT)).eval()
    return Registry(
        [
            serve_model(name, model, tokenizer, max_batch_size=b, max_waiting=w)
            for name, (b, w) in specs.items()
        ]
    )


class ScriptedOutput:
    """Forces `ids` as the first generated tokens, optionally sleeping before each token."""

    def __init__(self, ids: list[int], delay: float = 0.0) -> None:
        self.ids = ids
        self.delay = delay

    def __call__(self, generated: list[int], logits: torch.Tensor) -> torch.Tensor:
        if self.delay:
            time.sleep(self.delay)
        if len(generated) < len(self.ids):
            return force_token(logits, self.ids[len(generated)])
        return logits


def reply_ids(tokenizer: Tokenizer, text: str, end_turn: bool = True) -> list[int]:
    ids = tokenizer.encode(text, special_tokens=False)
    return ids + [tokenizer.token_id(IM_END)] if end_turn else ids


class Script:
    """Installed on a served model: scripts every request submitted from now on, and records
    the submitted requests (their prompt ids) for the test to inspect."""

    def __init__(self, monkeypatch, served: ServedModel) -> None:
        self.processor: ScriptedOutput | None = None
        self.requests: list[GenerationRequest] = []
        worker = served.generator.worker
        submit = worker.submit

        def scripted_submit(job: Job):
            if self.processor is not None:
                job.request.logits_processors.insert(0, self.processor)
            self.requests.append(job.request)
            return submit(job)

        monkeypatch.setattr(worker, "submit", scripted_submit)

    def reply(self, ids: list[int], delay: float = 0.0) -> None:
        self.processor = ScriptedOutput(ids, delay)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(registry: Registry, **app_options) -> Iterator[str]:
    """Serve `create_app(registry, **app_options)` on a loopback port; yields the base URL."""
    config = uvicorn.Config(
        create_app(registry, **app_options), host="127.0.0.1", port=free_port(), log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def raw_sse(base_url: str, path: str, body: dict, headers: dict) -> list[tuple[str | None, str]]:
    """(event name, data) of every frame of a streamed response, as sent."""
    frames = []
    with httpx.stream("POST", base_url + path, json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        event, data = None, []
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
            elif not line and data:
                frames.append((event, "\n".join(data)))
                event, data = None, []
    return frames


def wait_for(condition, timeout: float = 10.0, interval: float = 0.02):
    """Poll `condition()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def health(base_url: str, model: str) -> dict:
    return json.loads(httpx.get(f"{base_url}/health", timeout=10).text)["models"][model]
