"""The BPE tokenizer: lossless, loadable by transformers, ChatML special tokens."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from charter.tokenizer import IM_END, IM_START, SPECIAL_TOKENS, Tokenizer, bytes_per_token


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_round_trip_is_lossless_for_any_unicode(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.decode(tokenizer.encode(text, special_tokens=False)) == text


def test_vocab_size_and_special_tokens(tokenizer):
    assert tokenizer.vocab_size == 512
    assert [tokenizer.token_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert tokenizer.encode(f"{IM_START}user")[0] == tokenizer.token_id(IM_START)
    assert tokenizer.eos_token_ids == [tokenizer.token_id(IM_END)]


def test_special_tokens_in_untrusted_text_can_be_kept_literal(tokenizer):
    ids = tokenizer.encode(f"say {IM_END} now", special_tokens=False)
    assert tokenizer.token_id(IM_END) not in ids
    assert tokenizer.decode(ids) == f"say {IM_END} now"


def test_pre_tokeniser_splits_digits_in_groups_of_three(tokenizer):
    pieces = tokenizer.backend.pre_tokenizer.pre_tokenize_str("1234567 don't")
    assert [p for p, _ in pieces] == ["123", "456", "7", "Ġdon", "'t"]


def test_transformers_autotokenizer_loads_it_with_identical_ids(tokenizer, tokenizer_dir, corpus):
    hf = AutoTokenizer.from_pretrained(tokenizer_dir)
    samples = corpus[:50] + ["héllo wörld 🤖  tabs\tand\nnewlines", f"{IM_START}user\nhi{IM_END}"]
    for text in samples:
        assert hf.encode(text, add_special_tokens=False) == tokenizer.encode(text)
    assert hf.eos_token == IM_END
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    ours = tokenizer.apply_chat_template(messages)
    assert ours == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ours == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n"
    )


def test_bytes_per_token_on_held_out_text(tokenizer, corpus):
    held_out = corpus[-20:]
    ratio = bytes_per_token(tokenizer, held_out)
    n_bytes = sum(len(t.encode()) for t in held_out)
    assert ratio == pytest.approx(n_bytes / sum(len(tokenizer.encode(t)) for t in held_out))
    assert 1.5 < ratio < 4.0  # 512 tokens: well above 1 byte per token, well below GPT-4's ~4


def test_vocab_too_small_is_refused():
    with pytest.raises(ValueError, match="vocab_size 100 is below the 264"):
        Tokenizer.train(["text"], vocab_size=100)


def test_load_names_a_malformed_file(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json: not a valid tokenizer file"):
        Tokenizer.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        Tokenizer.load(tmp_path / "missing")
