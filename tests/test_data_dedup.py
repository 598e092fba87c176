"""Exact and near-duplicate removal (MinHash LSH), keeping the first document."""

from __future__ import annotations

import random

import pytest

from charter.data import dedup
from charter.data.dedup import find_duplicates, shingle_hashes


def prose(seed: int, n_words: int = 300) -> str:
    rng = random.Random(seed)
    vocabulary = [f"word{i}" for i in range(2000)]
    return " ".join(rng.choice(vocabulary) for _ in range(n_words))


def edit_words(text: str, every: int, seed: int = 0) -> str:
    """Replace every `every`-th word (so 1/every of the words differ)."""
    words = text.split()
    for i in range(0, len(words), every):
        words[i] = f"changed{seed}_{i}"
    return " ".join(words)


def test_exact_duplicates_ignore_whitespace_and_keep_the_first():
    a, b = prose(1), prose(2)
    texts = [a, b, "  " + a.replace(" ", "\n", 3) + "\n", b]
    duplicates = find_duplicates(texts)
    assert duplicates.exact == {2: 0, 3: 1}
    assert duplicates.near == {}
    assert duplicates.removed() == {2, 3}


def test_near_duplicates_above_the_threshold_only():
    original = prose(3)
    texts = [
        original,
        edit_words(original, every=100),  # 1% of words changed: a near duplicate
        edit_words(original, every=3),  # a third changed: most 5-grams differ
        prose(4),  # unrelated
    ]
    duplicates = find_duplicates(texts)
    assert duplicates.exact == {}
    assert duplicates.near == {1: 0}


def test_case_and_short_texts():
    texts = ["The Same Words Here", "the same words here", "other", "the same words"]
    assert find_duplicates(texts).near == {1: 0}  # shingles are lower-cased
    assert len(shingle_hashes("a b c")) == 1 and len(shingle_hashes("")) == 1
    assert len(shingle_hashes(prose(5, n_words=12))) == 8  # 12 - 5 + 1 five-grams


def test_worker_processes_give_the_same_result(monkeypatch):
    originals = [prose(i) for i in range(20)]
    texts = originals + [edit_words(t, every=100, seed=1) for t in originals[:5]] + originals[5:7]
    expected = find_duplicates(texts, workers=1)
    monkeypatch.setattr(dedup, "PARALLEL_MIN_CHARS", 0)
    assert find_duplicates(texts, workers=2) == expected
    assert expected.near == {20 + i: i for i in range(5)}
    assert expected.exact == {25: 5, 26: 6}


@pytest.mark.parametrize("threshold", [0.5, 0.95])
def test_threshold_is_respected(threshold):
    original = prose(6)
    edited = edit_words(original, every=20)  # 3/4 of the 5-grams survive: Jaccard 0.6
    near = find_duplicates([original, edited], threshold=threshold).near
    assert near == ({1: 0} if threshold == 0.5 else {})
