"""Exporting checkpoints as GGUF: the file's metadata and tokenizer, the round trip through our
importer, refusals, and parity under llama.cpp itself (logits and tokenisation) for a random
micro model and for SmolLM2-135M-Instruct."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import tokenizers
import torch
from gguf import GGMLQuantizationType as QuantType
from gguf import TokenType
from hypothesis import HealthCheck, given, settings

from charter.checkpoint import load_checkpoint, load_tokenizer, save_checkpoint
from charter.cli import main
from charter.infer.backends import load_engine
from charter.infer.sampling import SamplingParams
from charter.interop import gguf_export
from charter.interop.gguf_export import GGUFExportError, export_gguf, permute_rope_rows
from charter.interop.gguf_import import (
    PRE_TOKENIZERS,
    GGUFModel,
    import_gguf,
    unpermute_rope_rows,
)
from charter.model import Transformer
from charter.tokenizer import SPECIAL_TOKENS
from tests.helpers import micro
from tests.test_import_gguf import HAND_WRITTEN, RELATIVE_ERROR, STRINGS


@pytest.fixture(scope="module")
def micro_dir(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    # Untied, GQA, a non-default θ and ε: every field must reach the file.
    config = micro(tie_word_embeddings=False, rope_theta=50_000.0, rms_norm_eps=1e-6)
    return save_checkpoint(Transformer(config), tmp_path_factory.mktemp("m") / "micro", tokenizer)


@pytest.fixture(scope="module")
def micro_gguf(micro_dir, tmp_path_factory):
    return export_gguf(micro_dir, tmp_path_factory.mktemp("gguf") / "micro.gguf", progress=False)


def test_permute_puts_each_rotated_pair_side_by_side_and_unpermute_inverts_it():
    # One head of 6 rows: HF rotates the pairs (0, 3), (1, 4), (2, 5); llama.cpp (0, 1), (2, 3)…
    rows = torch.arange(6.0)[:, None].expand(6, 2)
    assert permute_rope_rows(rows, 1)[:, 0].tolist() == [0, 3, 1, 4, 2, 5]
    weight = torch.randn(3 * 8, 5)  # 3 heads of 8
    assert torch.equal(unpermute_rope_rows(permute_rope_rows(weight, 3), 3), weight)


def test_metadata_and_tokenizer_are_written_as_llama_cpp_reads_them(micro_gguf, micro_dir):
    model = GGUFModel(micro_gguf)
    config = load_checkpoint(micro_dir).config
    assert model.get("general.architecture") == "llama"
    assert model.get("llama.block_count") == config.num_hidden_layers
    assert model.get("llama.attention.head_count_kv") == config.num_key_value_heads
    assert model.get("llama.rope.freq_base") == 50_000.0
    assert model.get("llama.attention.layer_norm_rms_epsilon") == np.float32(1e-6)
    assert model.get("tokenizer.ggml.model") == "gpt2"
    assert model.get("tokenizer.ggml.pre") == "llama-bpe"
    tokenizer = load_tokenizer(micro_dir)
    tokens = model.get("tokenizer.ggml.tokens")
    types = model.get("tokenizer.ggml.token_type")
    vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
    assert tokens == sorted(vocab, key=vocab.get)
    assert {tokens[i] for i, t in enumerate(types) if t == TokenType.CONTROL} == set(SPECIAL_TOKENS)
    merges = json.loads(tokenizer.backend.to_str())["model"]["merges"]
    assert model.get("tokenizer.ggml.merges") == [" ".join(m) for m in merges]
    assert model.get("tokenizer.ggml.eos_token_id") == tokenizer.token_id("<|im_end|>")
    assert model.get("tokenizer.ggml.padding_token_id") == tokenizer.token_id("<|endoftext|>")
    assert model.get("tokenizer.ggml.bos_token_id") is None  # Charter's tokenizers have none
    assert model.get("tokenizer.ggml.add_bos_token") is False
    assert model.get("tokenizer.chat_template") == tokenizer.chat_template
    assert model.tensors["blk.0.attn_q.weight"].tensor_type == QuantType.F32
    assert "output.weight" in model.tensors  # untied


def test_f32_round_trip_through_the_importer_gives_back_equal_weights(micro_gguf, micro_dir):
    original = load_checkpoint(micro_dir)
    back = load_checkpoint(import_gguf(micro_gguf, micro_gguf.parent / "back", progress=False))
    assert back.config.num_key_value_heads == original.config.num_key_value_heads
    assert (back.config.rope_theta, back.config.rms_norm_eps) == (50_000.0, 1e-6)
    for name, weight in original.state_dict().items():
        assert torch.equal(back.state_dict()[name], weight), name


@pytest.mark.parametrize("dtype", ["f16", "bf16", "q8_0"])
def test_quantised_round_trip_is_within_one_quantisation_step(tmp_path, micro_dir, dtype):
    path = export_gguf(micro_dir, tmp_path / "m.gguf", dtype, progress=False)
    assert GGUFModel(path).tensors["blk.1.ffn_up.weight"].tensor_type.name == dtype.upper()
    assert GGUFModel(path).tensors["blk.1.attn_norm.weight"].tensor_type == QuantType.F32
    original = load_checkpoint(micro_dir)
    back = load_checkpoint(import_gguf(path, tmp_path / "back", progress=False))
    for name, weight in original.state_dict().items():
        tolerance = RELATIVE_ERROR[dtype.upper()] * weight.abs().max()
        assert (back.state_dict()[name] - weight).abs().max() <= tolerance, name


def test_tied_embeddings_are_written_once(tmp_path, tokenizer):
    model = Transformer(micro(tie_word_embeddings=True))
    path = export_gguf(save_checkpoint(model, tmp_path / "tied", tokenizer), tmp_path / "t.gguf")
    assert "output.weight" not in GGUFModel(path).tensors
    assert load_checkpoint(import_gguf(path, tmp_path / "back")).config.tie_word_embeddings


def test_a_larger_embedding_than_vocabulary_is_padded_with_unused_tokens(tmp_path, tokenizer):
    model = Transformer(micro(vocab_size=tokenizer.vocab_size + 32))
    path = export_gguf(save_checkpoint(model, tmp_path / "wide", tokenizer), tmp_path / "w.gguf")
    tokens = GGUFModel(path).get("tokenizer.ggml.tokens")
    types = GGUFModel(path).get("tokenizer.ggml.token_type")
    assert len(tokens) == tokenizer.vocab_size + 32
    assert tokens[-1] == f"[PAD{tokenizer.vocab_size + 31}]"
    assert set(types[tokenizer.vocab_size :]) == {TokenType.UNUSED}


def test_cli_export_writes_the_file(micro_dir, tmp_path, capsys):
    main(["export", "gguf", str(micro_dir), "--out", str(tmp_path / "m.gguf"), "--dtype", "f16"])
    out = capsys.readouterr().out
    assert out.startswith(f"exported {micro_dir} as f16: ")
    assert out.endswith(f"saved: {tmp_path / 'm.gguf'}\n")
    assert GGUFModel(tmp_path / "m.gguf").get("general.file_type") == gguf.LlamaFileType.MOSTLY_F16


def test_a_plain_byte_level_bpe_is_named_gpt_2_and_read_back_alike(tmp_path, corpus):
    """The pre-tokeniser `tokenizers.ByteLevelBPETokenizer` (and so transformers) makes: GPT-2's
    split, which llama.cpp calls "gpt-2" (it refuses "gpt2", the exporter's earlier name)."""
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus[:300], vocab_size=400, show_progress=False)
    directory = save_checkpoint(Transformer(micro(vocab_size=400)), tmp_path / "m", None)
    bpe.save(str(directory / "tokenizer.json"))
    path = export_gguf(directory, tmp_path / "m.gguf", progress=False)
    assert GGUFModel(path).get("tokenizer.ggml.pre") == "gpt-2"
    back = load_tokenizer(import_gguf(path, tmp_path / "back", progress=False))
    for text in [*HAND_WRITTEN, *corpus[:20]]:
        assert back.encode(text) == load_tokenizer(directory).encode(text), text


def test_every_pre_tokeniser_name_the_export_knows_loads_in_llama_cpp(
    micro_dir, tmp_path, monkeypatch
):
    llama_cpp = pytest.importorskip("llama_cpp")
    for name in PRE_TOKENIZERS:
        monkeypatch.setattr(gguf_export, "pre_tokenizer_name", lambda *_, name=name: name)
        path = export_gguf(micro_dir, tmp_path / f"{name}.gguf", progress=False)
        assert GGUFModel(path).get("tokenizer.ggml.pre") == name
        llama_cpp.Llama(str(path), vocab_only=True, verbose=False)  # raises if it refuses


# ---- refusals ----


def test_unknown_pre_tokeniser_is_refused_and_no_file_is_left(tmp_path, tokenizer):
    tokenizer = load_tokenizer(save_checkpoint(Transformer(micro()), tmp_path / "m", tokenizer))
    tokenizer.backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer.save(tmp_path / "m")
    with pytest.raises(GGUFExportError, match=r"m/tokenizer\.json: its pre-tokeniser .*Whitespace"):
        export_gguf(tmp_path / "m", tmp_path / "m.gguf", progress=False)
    assert list(tmp_path.glob("*.gguf*")) == []


def test_a_normaliser_is_refused(tmp_path, tokenizer):
    tokenizer = load_tokenizer(save_checkpoint(Transformer(micro()), tmp_path / "m", tokenizer))
    tokenizer.backend.normalizer = tokenizers.normalizers.NFC()
    tokenizer.save(tmp_path / "m")
    with pytest.raises(GGUFExportError, match=r"a normaliser \(NFC\) has no llama.cpp equivalent"):
        export_gguf(tmp_path / "m", tmp_path / "m.gguf", progress=False)


def test_rows_that_are_not_whole_blocks_are_refused_for_q8_0(tmp_path, tokenizer, capsys):
    model = Transformer(micro(hidden_size=48, num_attention_heads=4, intermediate_size=96))
    directory = save_checkpoint(model, tmp_path / "m", tokenizer)
    with pytest.raises(
        GGUFExportError, match=r"tensor 'token_embd.weight' cannot be stored as q8_0"
    ):
        export_gguf(directory, tmp_path / "m.gguf", "q8_0", progress=False)
    with pytest.raises(SystemExit):
        main(["export", "gguf", str(directory), "--out", str(tmp_path / "x"), "--dtype", "q4_k"])
    assert "argument --dtype: invalid choice: 'q4_k'" in capsys.readouterr().err


# ---- parity under llama.cpp ----


def llama(path):
    """llama.cpp on `path`, with an F32 KV cache (its default, F16, rounds keys and values)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    f32 = llama_cpp.GGML_TYPE_F32
    return llama_cpp.Llama(
        str(path), n_ctx=256, logits_all=True, type_k=f32, type_v=f32, verbose=False
    )


def llama_cpp_logits(model, ids: list[int]) -> np.ndarray:
    model.reset()
    model.eval(ids)
    return np.array(model.scores[: len(ids)])  # (T, V)


def llama_cpp_ids(model, text: str) -> list[int]:
    return model.tokenize(text.encode(), add_bos=False, special=True)


@pytest.fixture(scope="module")
def micro_llama(micro_gguf):
    return llama(micro_gguf)


def test_micro_logits_under_llama_cpp_equal_charters(micro_llama, micro_dir, corpus):
    model, tokenizer = load_checkpoint(micro_dir), load_tokenizer(micro_dir)
    ids = tokenizer.encode(corpus[3])[:200]
    expected = model(torch.tensor([ids]))[0].detach().numpy()  # (T, V)
    assert np.abs(llama_cpp_logits(micro_llama, ids) - expected).max() <= 1e-3


def test_micro_tokenisation_under_llama_cpp_equals_charters(micro_llama, micro_dir, corpus):
    tokenizer = load_tokenizer(micro_dir)
    for text in [*HAND_WRITTEN, *corpus[:50]]:
        assert llama_cpp_ids(micro_llama, text) == tokenizer.encode(text), text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=STRINGS)
def test_micro_tokenisation_under_llama_cpp_equals_charters_on_generated_strings(
    micro_llama, micro_dir, text
):
    assert llama_cpp_ids(micro_llama, text) == load_tokenizer(micro_dir).encode(text)


def test_q8_0_decodes_under_llama_cpp_as_charters_fp32_within_quantisation(
    tmp_path, tokenizer, corpus
):
    """Quantised files decode (an AMX build of llama.cpp crashed on every one), with logits
    within what q8_0 permits and the same greedy tokens as Charter's fp32 engine."""
    pytest.importorskip("llama_cpp")
    torch.manual_seed(0)  # a model whose greedy choices are clear (asserted below)
    model = Transformer(micro()).eval()
    directory = save_checkpoint(model, tmp_path / "m", tokenizer)
    prompt = tokenizer.encode(corpus[3])[:16]
    greedy = SamplingParams(max_new_tokens=24, temperature=0)
    expected = load_engine(directory, "torch").generate([prompt], greedy)[0].token_ids
    engine = load_engine(directory, "llamacpp", int8=True, cache_dir=tmp_path)
    (exported,) = tmp_path.glob("*-q8_0.gguf")
    assert GGUFModel(exported).tensors["blk.0.ffn_down.weight"].tensor_type == QuantType.Q8_0
    sequence = prompt + expected
    with torch.no_grad():
        reference = model(torch.tensor([sequence]))[0].numpy()  # (T, V)
    error = np.abs(llama_cpp_logits(llama(exported), sequence) - reference).max()
    # q8_0 rounds each weight (and llama.cpp each activation) to 1/254 of its block's range;
    # this model's logits move by about 0.7 % of their largest magnitude, an f32 file's by 1e-6.
    largest = np.abs(reference).max()
    assert 1e-3 * largest < error < 0.02 * largest
    top2 = np.sort(reference[len(prompt) - 1 : -1], axis=-1)[:, -2:]  # at each greedy choice
    assert (top2[:, 1] - top2[:, 0]).min() > 2 * error  # so q8_0 cannot choose otherwise
    assert engine.generate([prompt], greedy)[0].token_ids == expected


def test_ignoring_merges_changes_nothing_for_our_tokenizers(tokenizer):
    """llama.cpp's "llama-bpe" takes a word that is itself a token whole, without merging (as
    Llama 3's tokenizer.json asks with `ignore_merges`); ours merge. They agree if every token is
    what merging its own text gives, which holds for BPEs trained by `tokenizers`. (Special
    tokens are matched before splitting, and the split never yields one whole.)"""
    added = tokenizer.backend.get_added_tokens_decoder()
    vocab = tokenizer.backend.get_vocab(with_added_tokens=False)
    merged = {
        i: [t.id for t in tokenizer.backend.model.tokenize(text)] for text, i in vocab.items()
    }
    assert {i: ids for i, ids in merged.items() if ids != [i]}.keys() == added.keys()


@pytest.fixture(scope="module")
def smollm2_export(smollm2_dir, tmp_path_factory):
    return export_gguf(smollm2_dir, tmp_path_factory.mktemp("smollm2") / "f32.gguf", progress=False)


@pytest.mark.slow
def test_smollm2_export_names_its_digit_splitting_pre_tokeniser(smollm2_export, smollm2_gguf):
    exported, original = GGUFModel(smollm2_export), GGUFModel(smollm2_gguf)
    assert exported.get("tokenizer.ggml.pre") == "smollm" == original.get("tokenizer.ggml.pre")
    for key in ["tokens", "token_type", "merges", "bos_token_id", "eos_token_id"]:
        assert exported.get(f"tokenizer.ggml.{key}") == original.get(f"tokenizer.ggml.{key}"), key


@pytest.mark.slow
def test_smollm2_logits_and_tokenisation_under_llama_cpp_equal_charters(
    smollm2_export, smollm2_dir
):
    model, tokenizer = load_checkpoint(smollm2_dir), load_tokenizer(smollm2_dir)
    reference = llama(smollm2_export)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is 12 × 7? Why?"}])
    ids = tokenizer.encode(text)
    expected = model(torch.tensor([ids]))[0].detach().numpy()  # (T, V)
    assert np.abs(llama_cpp_logits(reference, ids) - expected).max() <= 1e-3
    for text in HAND_WRITTEN:
        if tokenizer.decode(tokenizer.encode(text)) == text:  # bytes SmolLM2 has no token for
            assert llama_cpp_ids(reference, text) == tokenizer.encode(text), text
