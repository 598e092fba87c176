"""`charter import hf`: a random LlamaForCausalLM saved by transformers becomes a Charter
checkpoint with equal logits, its tokenizer, sampling defaults and licence; what Charter cannot
run is refused by name."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from charter.checkpoint import CheckpointError, load_checkpoint, load_tokenizer
from charter.cli import main
from charter.interop.hf_import import import_hf


def random_llama(tied: bool, dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=96,
        intermediate_size=200,
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rope_theta=50_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tied,
    )
    return LlamaForCausalLM(config).to(dtype).eval()


@pytest.mark.parametrize(
    ("tied", "dtype"),
    [(True, torch.float32), (False, torch.float32), (False, torch.bfloat16)],
    ids=str,
)
def test_import_hf_gives_equal_logits(tmp_path, tokenizer, capsys, tied, dtype):
    hf = random_llama(tied, dtype)
    hf.save_pretrained(tmp_path / "hf")
    tokenizer.save(tmp_path / "hf")
    main(["import", "hf", str(tmp_path / "hf"), "--out", str(tmp_path / "ckpt")])
    assert capsys.readouterr().out.splitlines()[-1] == f"saved: {tmp_path / 'ckpt'}"
    model = load_checkpoint(tmp_path / "ckpt")
    assert model.config.tie_word_embeddings is tied
    assert (model.config.rope_theta, model.config.rms_norm_eps) == (50_000.0, 1e-6)
    ids = torch.randint(0, 512, (2, 50))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf.float()(ids).logits, atol=1e-4, rtol=0)
    assert load_tokenizer(tmp_path / "ckpt").encode_batch(["hi 123"]) == tokenizer.encode_batch(
        ["hi 123"]
    )


def test_import_hf_carries_sampling_defaults_template_and_licence(tmp_path, tokenizer):
    source = tmp_path / "hf"
    random_llama(tied=True).save_pretrained(source)
    tokenizer.save(source)
    settings = json.loads((source / "tokenizer_config.json").read_text())
    template = settings.pop("chat_template")  # the newer layout keeps it in its own file
    (source / "tokenizer_config.json").write_text(json.dumps(settings))
    (source / "chat_template.jinja").write_text(template)
    generation = json.loads((source / "generation_config.json").read_text())
    generation.update(temperature=0.6, top_p=0.9, eos_token_id=[2, 5])
    (source / "generation_config.json").write_text(json.dumps(generation))
    (source / "LICENSE").write_text("Apache License 2.0 (test)\n")

    out = import_hf(source, tmp_path / "ckpt")
    written = json.loads((out / "generation_config.json").read_text())
    assert (written["temperature"], written["top_p"], written["eos_token_id"]) == (0.6, 0.9, [2, 5])
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == template
    assert (out / "LICENSE").read_text() == "Apache License 2.0 (test)\n"


def test_import_hf_without_tokenizer_says_so(tmp_path, capsys):
    random_llama(tied=True).save_pretrained(tmp_path / "hf")
    main(["import", "hf", str(tmp_path / "hf"), "--out", str(tmp_path / "ckpt")])
    assert "has no tokenizer.json" in capsys.readouterr().err
    assert not (tmp_path / "ckpt" / "tokenizer.json").exists()
    assert (tmp_path / "ckpt" / "model.safetensors").exists()


def test_non_causal_lm_architecture_is_refused(tmp_path):
    random_llama(tied=True).save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["architectures"] = ["LlamaForSequenceClassification"]
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match=r"architectures \['LlamaForSequenceClassification'\] is not a "
    ):
        import_hf(tmp_path / "hf", tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


def test_unsupported_config_and_sentencepiece_only_tokenizer_are_refused(tmp_path):
    random_llama(tied=True).save_pretrained(tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer.model").write_bytes(b"\x00sentencepiece")
    with pytest.raises(CheckpointError, match=r"only a SentencePiece tokenizer\.model"):
        import_hf(tmp_path / "hf", tmp_path / "ckpt")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(SystemExit, match=r"rope scaling 'yarn' is not supported"):
        main(["import", "hf", str(tmp_path / "hf"), "--out", str(tmp_path / "ckpt")])


def test_missing_tensor_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    random_llama(tied=True).save_pretrained(tmp_path / "hf")
    weights = tmp_path / "hf" / "model.safetensors"
    tensors = load_file(weights)
    del tensors["model.layers.2.mlp.up_proj.weight"]
    save_file(tensors, weights)
    with pytest.raises(
        CheckpointError, match=r"tensor 'model\.layers\.2\.mlp\.up_proj\.weight' is missing"
    ):
        import_hf(tmp_path / "hf", tmp_path / "ckpt")
