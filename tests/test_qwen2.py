"""Qwen2 (Llama with biases on the q/k/v projections, its own split and NFC normaliser): a tiny
random `Qwen2ForCausalLM` with a Qwen2 tokenizer, both made by transformers, imports with
transformers' logits, tokens and chat template; Charter's Qwen2 checkpoints load in transformers;
the GGUF export is a "qwen2" file that imports back with equal logits. (llama.cpp's greedy
output on it: tests/test_foreign_checkpoints.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest
import torch
from tokenizers import pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2Tokenizer

from charter.checkpoint import CheckpointError, load_checkpoint, load_tokenizer, save_checkpoint
from charter.cli import main
from charter.config import ModelConfig, num_parameters
from charter.infer.backends import load_engine
from charter.infer.sampling import SamplingParams
from charter.interop.gguf_export import export_gguf
from charter.interop.gguf_import import import_gguf
from charter.model import Transformer

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# ChatML, as Qwen2 instruct models speak it, with a default system turn.
CHATML = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are helpful.<|im_end|>\n"
    "{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Single digits, a contraction, indentation, punctuation, a decomposed é (NFC composes it).
PROMPT = "def add(a, b):\n    # it's 12345 + 678!\n    return a+b  # cafe\u0301"


def save_qwen2_tokenizer(directory: Path, corpus: list[str]) -> None:
    """A byte-level BPE trained on `corpus` behind transformers' own Qwen2 tokenizer (its split
    and NFC normaliser, untouched), with Qwen2's special tokens and a ChatML template."""
    backend = Qwen2Tokenizer().backend_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus[:300], trainer)
    bpe = json.loads(backend.to_str())["model"]
    tokenizer = Qwen2Tokenizer(
        vocab=bpe["vocab"],
        merges=[tuple(merge) for merge in bpe["merges"]],
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=SPECIAL[1:],
    )
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(directory)


def qkv(attention: torch.nn.Module) -> tuple[torch.nn.Linear, ...]:
    return attention.q_proj, attention.k_proj, attention.v_proj


def save_qwen2_model(directory: Path, tied: bool = True, seed: int = 0) -> Qwen2Config:
    """A random Qwen2ForCausalLM for the tokenizer in `directory`, saved by transformers, with
    random (not zero) q/k/v biases so that a model ignoring them would differ."""
    tokenizer = AutoTokenizer.from_pretrained(directory)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        initializer_range=0.2,  # decisive logits, no near-ties in greedy decoding
        tie_word_embeddings=tied,
        use_sliding_window=False,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"]),
        pad_token_id=tokenizer.pad_token_id,
    )
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for layer in model.model.layers:
            for projection in qkv(layer.self_attn):
                projection.bias.normal_(std=0.5)
    model.save_pretrained(directory)
    return config


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory, corpus) -> Path:
    directory = tmp_path_factory.mktemp("qwen2") / "hf"
    save_qwen2_tokenizer(directory, corpus)
    save_qwen2_model(directory)
    return directory


def charter_qwen2(tied: bool) -> Transformer:
    torch.manual_seed(0)
    config = ModelConfig(
        model_type="qwen2",
        vocab_size=300,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=1_000_000.0,
        tie_word_embeddings=tied,
    )
    model = Transformer(config).eval()
    with torch.no_grad():
        for layer in model.layers:
            for projection in qkv(layer.self_attn):
                projection.bias.normal_(std=0.5)
    return model


def test_only_q_k_v_have_biases_and_llama_has_none():
    qwen2 = charter_qwen2(tied=True)
    biases = [n for n, _ in qwen2.named_parameters() if "bias" in n]
    assert biases == [f"layers.{i}.self_attn.{p}_proj.bias" for i in range(2) for p in "qkv"]
    assert num_parameters(qwen2.config) == sum(p.numel() for p in qwen2.parameters())
    llama = ModelConfig(**{**vars(qwen2.config), "model_type": "llama"})
    assert not [n for n, _ in Transformer(llama).named_parameters() if "bias" in n]


@pytest.mark.parametrize("tied", [True, False])
def test_charter_qwen2_checkpoint_loads_in_transformers_with_equal_logits(tmp_path, tied):
    model = charter_qwen2(tied)
    save_checkpoint(model, tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert (config["model_type"], config["architectures"]) == ("qwen2", ["Qwen2ForCausalLM"])
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", dtype=torch.float32).eval()
    assert type(hf).__name__ == "Qwen2ForCausalLM" and hf.config.tie_word_embeddings is tied
    ids = torch.randint(0, 300, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-4, rtol=0)
    assert load_checkpoint(tmp_path / "ckpt").config.qkv_bias


def test_import_hf_qwen2_gives_transformers_logits_tokens_and_template(qwen2_dir, tmp_path, capsys):
    main(["import", "hf", str(qwen2_dir), "--out", str(tmp_path / "ckpt")])
    assert "Qwen2" in capsys.readouterr().out
    model = load_checkpoint(tmp_path / "ckpt")
    assert (model.config.model_type, model.config.rope_theta) == ("qwen2", 1_000_000.0)
    hf = AutoModelForCausalLM.from_pretrained(qwen2_dir, dtype=torch.float32).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 50))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-4, rtol=0)

    hf_tokenizer = AutoTokenizer.from_pretrained(qwen2_dir)
    tokenizer = load_tokenizer(tmp_path / "ckpt")
    prompt = hf_tokenizer(PROMPT, add_special_tokens=False).input_ids
    assert tokenizer.encode(PROMPT) == prompt
    assert tokenizer.encode("cafe\u0301") == tokenizer.encode("caf\u00e9")  # NFC, as Qwen2's
    messages = [{"role": "user", "content": "hi 42"}]
    assert tokenizer.apply_chat_template(messages) == hf_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )

    expected = hf.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=12)
    expected = expected[0, len(prompt) :].tolist()
    if expected[-1] in hf.generation_config.eos_token_id:
        expected.pop()  # Charter reports the end of turn, not the token
    assert len(expected) > 3
    engine = load_engine(tmp_path / "ckpt", "torch", max_batch_size=1)
    params = SamplingParams(max_new_tokens=12, temperature=0)
    assert engine.generate([prompt], params)[0].token_ids == expected


def test_qwen2_gguf_export_names_its_architecture_biases_and_split(qwen2_dir, tmp_path):
    path = export_gguf(qwen2_dir, tmp_path / "q.gguf", progress=False)
    reader = gguf.GGUFReader(path)
    assert reader.fields["general.architecture"].contents() == "qwen2"
    assert reader.fields["tokenizer.ggml.pre"].contents() == "qwen2"
    assert reader.fields["qwen2.rope.freq_base"].contents() == 1_000_000.0
    names = {t.name for t in reader.tensors}
    assert {"blk.1.attn_q.bias", "blk.1.attn_k.bias", "blk.1.attn_v.bias"} <= names
    biased = {n.split(".")[2] for n in names if n.endswith(".bias")}
    assert biased == {"attn_q", "attn_k", "attn_v"}  # no o_proj or MLP biases

    out = import_gguf(path, tmp_path / "back", progress=False)
    imported, original = load_checkpoint(out), load_checkpoint(qwen2_dir)
    assert imported.config.model_type == "qwen2"
    ids = torch.randint(0, original.config.vocab_size, (2, 30))
    with torch.no_grad():
        torch.testing.assert_close(imported(ids), original(ids), atol=1e-5, rtol=0)
    assert load_tokenizer(out).encode(PROMPT) == load_tokenizer(qwen2_dir).encode(PROMPT)


def test_sliding_window_and_mismatched_architecture_are_refused(qwen2_dir, tmp_path):
    config = json.loads((qwen2_dir / "config.json").read_text())
    for edit, message in [
        ({"use_sliding_window": True, "sliding_window": 64}, r"use_sliding_window=true"),
        ({"architectures": ["LlamaForCausalLM"]}, r"SequenceClassification for model_type 'qwen2'"),
    ]:
        source = tmp_path / message[:8]
        source.mkdir()
        (source / "config.json").write_text(json.dumps({**config, **edit}))
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(source)


def test_q4_k_m_file_written_by_llama_cpp_imports_with_its_logits(tmp_path, corpus):
    """Q4_K and Q6_K (gguf cannot quantise to them): llama.cpp's own quantiser writes a Q4_K_M
    file of a Qwen2 whose rows are whole 256-value blocks; Charter's import of it gives
    llama.cpp's logits, up to llama.cpp's 8-bit quantisation of the activations."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from charter.infer.llamacpp_backend import LlamaCppBackend

    source = tmp_path / "hf"
    save_qwen2_tokenizer(source, corpus)
    config = json.loads(json.dumps(save_qwen2_model(source).to_dict()))
    config.update(hidden_size=256, intermediate_size=512, head_dim=64, initializer_range=0.02)
    AutoModelForCausalLM.from_config(Qwen2Config(**config)).save_pretrained(source)
    f32 = export_gguf(source, tmp_path / "f32.gguf", progress=False)
    quantized = tmp_path / "q4_k_m.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert llama_cpp.llama_model_quantize(str(f32).encode(), str(quantized).encode(), params) == 0
    types = {t.tensor_type.name for t in gguf.GGUFReader(quantized).tensors}
    assert {"Q4_K", "Q6_K"} <= types

    model = load_checkpoint(import_gguf(quantized, tmp_path / "ckpt", progress=False))
    prompt = load_tokenizer(source).encode(PROMPT)
    with torch.no_grad():
        ours = model(torch.tensor([prompt]))[0, -1]
        unquantized = load_checkpoint(source)(torch.tensor([prompt]))[0, -1]
    backend = LlamaCppBackend(quantized, max_batch_size=1, max_len=128, kv_type="f32")
    theirs = backend.prefill(prompt, 0).clone()  # a view of llama.cpp's buffer until closed
    backend.close()
    # The dequantised weights carry the quantisation's error, which the originals do not.
    error = (ours - theirs).abs().max()
    assert error < 0.05 * ours.std() and error < 0.25 * (unquantized - theirs).abs().max()
