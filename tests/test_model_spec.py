"""Model specs: the one string every command that takes a model accepts."""

from __future__ import annotations

import pytest
import torch

from charter.checkpoint import save_checkpoint
from charter.infer.spec import ModelSpec, load_generator, parse_model_spec
from charter.model import Transformer
from tests.helpers import micro


def test_a_plain_directory_runs_on_the_default_backend():
    assert parse_model_spec("runs/sft/final") == ModelSpec("auto", "runs/sft/final")
    assert parse_model_spec("runs/x", default_backend="torch").kind == "torch"
    assert parse_model_spec("runs/sft/final").default_name == "final"


def test_a_backend_and_options_follow_the_spec_grammar():
    spec = parse_model_spec("llamacpp:runs/a,format=charter")
    assert spec == ModelSpec("llamacpp", "runs/a", None, {"format": "charter"})
    assert spec.is_local


def test_remote_endpoints_take_a_model_id_a_base_url_and_options():
    spec = parse_model_spec("anthropic:claude-x@http://127.0.0.1:8000,concurrency=4,key_env=K")
    assert spec == ModelSpec(
        "anthropic", "claude-x", "http://127.0.0.1:8000", {"concurrency": "4", "key_env": "K"}
    )
    assert not spec.is_local and spec.default_name == "claude-x"
    assert parse_model_spec("anthropic:claude-x").base_url is None
    assert parse_model_spec("openai:m@http://h:8080/v1").base_url == "http://h:8080/v1"


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("", "model spec is empty"),
        ("torch:", "nothing after torch:"),
        ("runs/a,colour=red", "unknown option 'colour' \\(known: format\\)"),
        ("runs/a,format", "option 'format' needs a value"),
        ("anthropic:m,format=charter", "unknown option 'format'"),
        ("anthropic:@http://h", "no model id before '@'"),
        ("openai:m", "an openai endpoint needs @BASE_URL"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, problem):
    with pytest.raises(ValueError, match=problem):
        parse_model_spec(spec)


def test_an_unknown_chat_format_is_refused(tmp_path, tokenizer):
    torch.manual_seed(0)
    directory = save_checkpoint(Transformer(micro()), tmp_path / "m", tokenizer)
    with pytest.raises(ValueError, match="chat format 'jinja' is not one of charter, template"):
        load_generator(f"torch:{directory},format=jinja")


def test_a_bad_concurrency_is_refused():
    with pytest.raises(ValueError, match="concurrency=0: expected a whole number ≥ 1"):
        load_generator("anthropic:m@http://127.0.0.1:1,concurrency=0")
