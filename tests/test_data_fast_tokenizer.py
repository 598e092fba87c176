"""The tiktoken encoder gives exactly the ids of the `tokenizers` BPE it is built from."""

from __future__ import annotations

import json

import pytest
import tokenizers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charter.data.fast_tokenizer import UnsupportedTokenizer, byte_level_alphabet, fast_encoding
from charter.tokenizer import ENDOFTEXT, Tokenizer


@pytest.fixture(scope="module")
def tokenizer_4k(corpus) -> Tokenizer:
    """More merges than the session's 512-token tokenizer: long, rare and overlapping tokens."""
    return Tokenizer.train(corpus, vocab_size=4096)


@pytest.fixture(scope="module")
def encodings(tokenizer, tokenizer_4k):
    return [(tokenizer, fast_encoding(tokenizer)), (tokenizer_4k, fast_encoding(tokenizer_4k))]


# Text the tokenizers were not trained on: prose, code, numbers, several scripts, odd spacing.
REAL_TEXT = [
    "It is a truth universally acknowledged, that a single man in possession of a good fortune,"
    " must be in want of a wife.",
    "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary "
    'election produced "no evidence" that any irregularities took place.',
    "def f(x):\r\n\treturn x ** 2  # squares\n\n\n    print(f(12345678))",
    "Ünïcödé: naïve café, Straße, Ελληνικά, русский, 日本語のテキスト, 한국어, עברית, العربية",
    "emoji 👩‍💻🚀 and numbers 3.14159, 1,000,000 and 2026-11-29T05:09:00Z",
    "I'M SURE THEY'LL SAY WE'VE DONE IT, SHE'D SAY, IT'S HERS'",
    "  leading spaces, trailing spaces   \n\n  \t mixed \u00a0 non-breaking \u2003 em space",
    "<|endoftext|> is text here, and so is <|im_start|>user",
]


def test_ids_equal_on_real_text(encodings, corpus):
    for tokenizer, encoding in encodings:
        for text in [*REAL_TEXT, *corpus]:
            assert encoding.encode_ordinary(text) == tokenizer.encode(text, special_tokens=False)


def test_batch_encoding_and_round_trip(encodings):
    tokenizer, encoding = encodings[1]
    batch = encoding.encode_ordinary_batch(REAL_TEXT, num_threads=2)
    assert batch == [tokenizer.encode(t, special_tokens=False) for t in REAL_TEXT]
    assert [encoding.decode(ids) for ids in batch] == REAL_TEXT


def test_special_tokens_are_text_unless_allowed(encodings):
    tokenizer, encoding = encodings[0]
    eot = tokenizer.token_id(ENDOFTEXT)
    assert encoding.encode_ordinary(ENDOFTEXT) != [eot]
    assert encoding.encode(ENDOFTEXT, allowed_special="all") == [eot] == tokenizer.encode(ENDOFTEXT)
    assert encoding.eot_token == eot  # tiktoken finds <|endoftext|> by name


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.characters(codec=None, exclude_categories=["Cs"]), max_size=60))
def test_ids_equal_on_any_unicode(encodings, text):
    for tokenizer, encoding in encodings:
        assert encoding.encode_ordinary(text) == tokenizer.encode(text, special_tokens=False)


# The characters where a regex engine's notion of letters, digits, whitespace and case folding
# could differ (Oniguruma in `tokenizers`, fancy-regex in tiktoken), densely mixed.
TRICKY = st.sampled_from(
    list(" \t\r\n\u00a0\u2028\u3000\u200b'’`\"aZß0９٣ſKİıǅ\u0301\u0308😀.,-_/\\")
    + ["'s", "'S", "'ll", "'LL", "'ve", "'re", "'d", "'m", "'t", "\r\n", "  ", "123456"]
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TRICKY, max_size=30).map("".join))
def test_ids_equal_on_dense_boundary_cases(encodings, text):
    for tokenizer, encoding in encodings:
        assert encoding.encode_ordinary(text) == tokenizer.encode(text, special_tokens=False)


@pytest.mark.slow
def test_ids_equal_for_every_code_point(encodings):
    """Every Unicode scalar value between letters, after an apostrophe, doubled after a space
    and before a newline: covers the Unicode tables of both regex engines entirely."""
    tokenizer, encoding = encodings[0]
    differing = []
    for code_point in range(0x110000):
        if 0xD800 <= code_point < 0xE000:
            continue
        c = chr(code_point)
        text = f"a{c}b '{c} {c}{c} 1{c}\n"
        if encoding.encode_ordinary(text) != tokenizer.encode(text, special_tokens=False):
            differing.append(hex(code_point))
    assert differing == []


def test_byte_level_alphabet_is_gpt2s():
    alphabet = byte_level_alphabet()
    assert sorted(alphabet.values()) == list(range(256))
    assert set(alphabet) == set(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    assert alphabet["Ġ"] == ord(" ") and alphabet["Ċ"] == ord("\n") and alphabet["A"] == ord("A")


def _edited(tokenizer: Tokenizer, edit) -> Tokenizer:
    spec = json.loads(tokenizer.backend.to_str())
    edit(spec)
    return Tokenizer(tokenizers.Tokenizer.from_str(json.dumps(spec)), tokenizer.config)


def test_refuses_settings_it_cannot_reproduce(tokenizer):
    def ignore_merges(spec):
        spec["model"]["ignore_merges"] = True

    def normalizer(spec):
        spec["normalizer"] = {"type": "NFC"}

    def other_split(spec):
        spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\s+|\S+"

    cases = [
        (ignore_merges, "model.ignore_merges"),
        (normalizer, "normalizer"),
        (other_split, "pre_tokenizer"),
    ]
    for edit, message in cases:
        with pytest.raises(UnsupportedTokenizer, match=message):
            fast_encoding(_edited(tokenizer, edit))


def test_refuses_merges_out_of_id_order(tokenizer):
    """tiktoken ranks merged tokens by id: if ids did not follow merge order, it would merge in a
    different order than `tokenizers`, so the encoder is refused rather than wrong."""

    def swap_first_two_merged_tokens(spec):
        vocab, merges = spec["model"]["vocab"], spec["model"]["merges"]
        a, b = ("".join(m) for m in merges[:2])
        vocab[a], vocab[b] = vocab[b], vocab[a]

    def merge_a_token_a_second_way(spec):
        vocab, merges = spec["model"]["vocab"], spec["model"]["merges"]
        # a token "xyz" merged as ("x", "yz") is appended as ("xy", "z") too, or vice versa
        for left, right in merges:
            token = left + right
            for cut in range(1, len(token)):
                other = (token[:cut], token[cut:])
                if other != (left, right) and all(part in vocab for part in other):
                    merges.append(list(other))
                    return
        raise AssertionError("no token with two possible merges")

    with pytest.raises(UnsupportedTokenizer, match=r"merges\[1\].*ids must follow merge order"):
        fast_encoding(_edited(tokenizer, swap_first_two_merged_tokens))
    with pytest.raises(UnsupportedTokenizer, match="has a second merge"):
        fast_encoding(_edited(tokenizer, merge_a_token_a_second_way))
