"""Our checkpoints are Hugging Face Llama checkpoints: equal logits in both directions."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from charter.checkpoint import load_checkpoint, save_checkpoint
from charter.model import Transformer
from tests.helpers import micro


@pytest.mark.parametrize(
    ("kv_heads", "tied"), [(2, True), (2, False), (4, True), (1, False)], ids=str
)
def test_charter_checkpoint_loads_in_transformers_with_equal_logits(tmp_path, kv_heads, tied):
    torch.manual_seed(0)
    model = Transformer(
        micro(num_key_value_heads=kv_heads, tie_word_embeddings=tied, rope_theta=100_000.0)
    ).eval()
    save_checkpoint(model, tmp_path / "ckpt")
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "ckpt", dtype=torch.float32).eval()
    assert hf.config.num_key_value_heads == kv_heads
    assert hf.config.tie_word_embeddings is tied
    ids = torch.randint(0, 512, (3, 40))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("tied", [True, False])
def test_transformers_checkpoint_loads_in_charter_with_equal_logits(tmp_path, tied):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=300,
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
    hf = LlamaForCausalLM(config).eval()
    hf.save_pretrained(tmp_path / "hf")
    model = load_checkpoint(tmp_path / "hf")
    assert model.config.rope_theta == 50_000.0 and model.config.rms_norm_eps == 1e-6
    ids = torch.randint(0, 300, (2, 50))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-4, rtol=0)
