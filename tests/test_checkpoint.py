"""Checkpoints: exact round trip, atomic replacement, and errors that name file and tensor."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from charter.checkpoint import CheckpointError, load_checkpoint, load_tokenizer, save_checkpoint
from charter.model import Transformer
from tests.helpers import micro


@pytest.fixture
def saved(tmp_path, micro_model, tokenizer):
    return save_checkpoint(micro_model, tmp_path / "ckpt", tokenizer=tokenizer)


def test_round_trip_is_exact_and_is_a_hugging_face_directory(saved, micro_model, tokenizer):
    names = sorted(p.name for p in saved.iterdir())
    assert names == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    config = json.loads((saved / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    generation = json.loads((saved / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tokenizer.eos_token_ids
    tensors = load_file(saved / "model.safetensors")
    assert "model.layers.1.self_attn.q_proj.weight" in tensors
    assert "lm_head.weight" not in tensors  # tied to model.embed_tokens.weight
    loaded = load_checkpoint(saved)
    for (name, a), (_, b) in zip(micro_model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.lm_head.weight is loaded.embed_tokens.weight
    assert load_tokenizer(saved).encode("hello world") == tokenizer.encode("hello world")


def test_saving_over_a_checkpoint_replaces_it_and_leaves_no_temporary_files(saved, tokenizer):
    torch.manual_seed(5)
    other = Transformer(micro())
    save_checkpoint(other, saved, tokenizer=tokenizer)
    assert torch.equal(load_checkpoint(saved).embed_tokens.weight, other.embed_tokens.weight)
    assert sorted(p.name for p in saved.parent.iterdir()) == ["ckpt"]


def test_a_crash_between_renames_still_loads_the_old_copy(saved, micro_model):
    saved.rename(saved.parent / ".ckpt.old")  # the moment between the two renames
    assert torch.equal(load_checkpoint(saved).embed_tokens.weight, micro_model.embed_tokens.weight)


def test_truncated_weights_name_the_file(saved):
    path = saved / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt or truncated"):
        load_checkpoint(saved)


def test_garbage_weights_name_the_file(saved):
    (saved / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt or truncated"):
        load_checkpoint(saved)


def test_missing_tensor_is_named(saved):
    tensors = load_file(saved / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, saved / "model.safetensors")
    with pytest.raises(
        CheckpointError, match=r"'model\.layers\.1\.mlp\.up_proj\.weight' is missing"
    ):
        load_checkpoint(saved)


def test_shape_mismatch_names_tensor_and_shapes(saved):
    config = json.loads((saved / "config.json").read_text())
    config["intermediate_size"] = 96
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError,
        match=(
            r"'model\.layers\.0\.mlp\.gate_proj\.weight' has shape \(128, 64\) but config\.json "
            r"implies \(96, 64\)"
        ),
    ):
        load_checkpoint(saved)


def test_unexpected_tensor_is_an_error_not_dropped(saved):
    tensors = load_file(saved / "model.safetensors")
    tensors["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(64)
    save_file(tensors, saved / "model.safetensors")
    with pytest.raises(
        CheckpointError, match=r"unexpected tensor\(s\) model\.layers\.0\.self_attn"
    ):
        load_checkpoint(saved)


def test_malformed_config_names_file_and_line(saved):
    (saved / "config.json").write_text('{\n  "vocab_size": 512,\n  oops\n}')
    with pytest.raises(CheckpointError, match=r"config\.json: invalid JSON at line 3"):
        load_checkpoint(saved)


def test_unsupported_architecture_is_named(saved):
    config = json.loads((saved / "config.json").read_text())
    config["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="rope scaling 'yarn' is not supported"):
        load_checkpoint(saved)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_checkpoint(tmp_path / "nope")


def test_a_config_without_tie_word_embeddings_is_untied_as_in_transformers(saved):
    config = json.loads((saved / "config.json").read_text())
    del config["tie_word_embeddings"]
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"'lm_head\.weight' is missing"):
        load_checkpoint(saved)  # untied, as LlamaConfig reads it, so lm_head must be stored
