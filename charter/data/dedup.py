"""Exact and near-duplicate documents, found before a corpus is split and tokenised.

Exact duplicates have the same text once whitespace is normalised. Near duplicates (the same
page in two releases, a chapter with a different header) are found with MinHash signatures of
word 5-gram shingles and locality-sensitive hashing (`datasketch`): LSH proposes candidates
whose estimated Jaccard similarity is likely above the threshold, and the signature estimate
confirms them. In both cases the first document in input order is kept.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

NUM_PERMUTATIONS = 128
SHINGLE_WORDS = 5
NEAR_DUPLICATE_THRESHOLD = 0.8  # estimated Jaccard similarity of the shingle sets


@dataclass
class Duplicates:
    """Removed document index → index of the kept document it duplicates."""

    exact: dict[int, int] = field(default_factory=dict)
    near: dict[int, int] = field(default_factory=dict)

    def removed(self) -> set[int]:
        return set(self.exact) | set(self.near)


def exact_key(text: str) -> bytes:
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).digest()


def shingle_hashes(text: str) -> np.ndarray:
    """32-bit hashes of the lower-cased word 5-grams of `text`, (max(1, words - 4),).

    Each word is hashed once (crc32: C speed, and the same in every worker process, unlike
    `hash()`), and each 5-gram's hash is a polynomial in its words' hashes, computed for all
    5-grams at once; datasketch mixes the values (fmix) before its permutations.
    """
    words = text.lower().split()
    word_hashes = np.fromiter((zlib.crc32(w.encode()) for w in words), np.uint64, len(words))
    n = max(1, len(words) - SHINGLE_WORDS + 1)  # a short text is one shingle
    acc = np.zeros(n, dtype=np.uint64)
    for j in range(min(SHINGLE_WORDS, len(words))):
        acc = acc * np.uint64(0x100000001B3) + word_hashes[j : j + n]  # wraps mod 2^64
    return (acc ^ (acc >> np.uint64(32))).astype(np.uint32)


def signature(text: str) -> LeanMinHash:
    """The MinHash signature of `text`'s shingles (lean: no hash function, small to pickle)."""
    minhash = MinHash(num_perm=NUM_PERMUTATIONS, hashfunc=int)  # the values are hashes already
    minhash.update_batch(shingle_hashes(text).tolist())
    return LeanMinHash(minhash)


PARALLEL_MIN_CHARS = 4_000_000  # below this, starting worker processes costs more than it saves


def signatures(texts: Sequence[str], workers: int = 1) -> list[LeanMinHash]:
    if workers <= 1 or sum(map(len, texts)) < PARALLEL_MIN_CHARS:
        return [signature(t) for t in texts]
    with multiprocessing.Pool(workers) as pool:  # the platform's default start method
        return pool.map(signature, texts, chunksize=max(1, len(texts) // (8 * workers)))


def find_duplicates(
    texts: Sequence[str], threshold: float = NEAR_DUPLICATE_THRESHOLD, workers: int = 1
) -> Duplicates:
    """Which of `texts` repeat an earlier one, exactly or nearly (`workers` processes compute
    the signatures of a large corpus)."""
    duplicates = Duplicates()
    first_with_key: dict[bytes, int] = {}
    unique = []
    for i, text in enumerate(texts):
        original = first_with_key.setdefault(exact_key(text), i)
        if original != i:
            duplicates.exact[i] = original
        else:
            unique.append(i)
    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERMUTATIONS)
    kept: dict[int, LeanMinHash] = {}
    for i, minhash in zip(unique, signatures([texts[i] for i in unique], workers)):
        similar = [(minhash.jaccard(kept[j]), j) for j in lsh.query(minhash)]
        best = max(similar, key=lambda s: (s[0], -s[1]), default=(0.0, -1))  # earliest on ties
        if best[0] >= threshold:
            duplicates.near[i] = best[1]
        else:
            lsh.insert(i, minhash)
            kept[i] = minhash
    return duplicates
