"""`charter data prepare`: documents → deduplicated, split, tokenised shards (see `shards`).

    charter data prepare cache/corpora/*.jsonl notes/ --tokenizer runs/tok --out runs/data

1. read every input (`read_documents`); all malformed lines are reported, with file and line,
   and nothing is written until there are none; empty documents are counted and skipped;
2. remove exact and near duplicates (`dedup`), keeping the first in input order;
3. split documents (never parts of one) into train and validation with a seeded permutation;
4. tokenise with the tiktoken encoder (`fast_tokenizer`, threads in Rust) — or, for a
   tokenizer it cannot reproduce, with `tokenizers` — appending <|endoftext|> to each document;
5. write the shards, a copy of the tokenizer, `manifest.json` and `metrics.jsonl` (stage
   timings) into a temporary directory that replaces OUT only when complete.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from charter.data.dedup import NEAR_DUPLICATE_THRESHOLD, find_duplicates
from charter.data.documents import Document, read_documents
from charter.data.fast_tokenizer import UnsupportedTokenizer, fast_encoding
from charter.data.shards import (
    DEFAULT_SHARD_TOKENS,
    FORMAT,
    MANIFEST,
    ShardWriter,
    token_dtype,
)
from charter.files import file_sha256, replace_directory, temporary_sibling, write_json
from charter.log import log
from charter.metrics import MetricsLog
from charter.tokenizer import ENDOFTEXT, Tokenizer

WRITE_TOKENS = 1_000_000  # ids gathered before each write to the shards
MAX_ERRORS_SHOWN = 20
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


@dataclass
class SourceStats:
    documents: int = 0
    bytes: int = 0
    tokens: int = 0
    licence: str = ""
    duplicates_removed: int = 0
    near_duplicates_removed: int = 0
    empty_removed: int = 0


def read_all(inputs: Sequence[str | Path]) -> list[Document]:
    """Every document of `inputs`; raises one ValueError listing every malformed line."""
    errors: list[str] = []
    documents = list(read_documents(list(inputs), errors))
    if errors:
        shown = "\n".join(errors[:MAX_ERRORS_SHOWN])
        more = len(errors) - MAX_ERRORS_SHOWN
        tail = f"\n… and {more} more" if more > 0 else ""
        raise ValueError(f"{len(errors)} malformed input line(s), nothing written:\n{shown}{tail}")
    return documents


def split_documents(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the train and validation documents, each in a seeded random order (so sources
    are interleaved in the shards). A positive fraction of two or more documents gives at least
    one validation document and leaves at least one for training."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    return order[n_val:], order[:n_val]


def batch_encoder(
    tokenizer: Tokenizer, workers: int
) -> Callable[[list[str]], Iterator[np.ndarray]]:
    """Encode texts as ordinary text (a literal "<|endoftext|>" in a document is not the special
    token), with the tiktoken encoder when it can reproduce `tokenizer`; the ids come in order,
    as each text is done."""
    try:
        encoding = fast_encoding(tokenizer)
    except UnsupportedTokenizer as e:
        log(f"tokenising with `tokenizers` (slower): tiktoken cannot reproduce this tokenizer: {e}")
        return lambda texts: (np.array(tokenizer.encode(t, special_tokens=False)) for t in texts)
    # One encoding on this thread before any worker's. The split regex keeps its matching caches
    # in pools (Rust's `regex`) owned by the first thread to use them, and an owner rewrites its
    # pool's owner flag on every match, which the other threads read on theirs: with a worker
    # as owner the two cores contend for that memory on every match. prepare's tokenising ran
    # at 11.7 MB/s on 2 threads without this call, 16.1 with it (see docs/benchmarks.md).
    encoding.encode_ordinary("claim")

    def encode_ordinary(text: str) -> np.ndarray:
        # Ids straight into a numpy buffer: building Python int lists holds the GIL, which
        # serialises the threads (15.0 against 12.0 MB/s on 2 cores, see docs/benchmarks.md).
        return encoding.encode_to_numpy(text, disallowed_special=())

    def encode(texts: list[str]) -> Iterator[np.ndarray]:
        # Every text is queued at once, so no thread waits for another between batches.
        with ThreadPoolExecutor(workers) as pool:
            yield from pool.map(encode_ordinary, texts)

    return encode


def _tokenise_split(
    documents: list[Document],
    writer: ShardWriter,
    encode: Callable[[list[str]], Iterator[np.ndarray]],
    eot: int,
    stats: dict[str, SourceStats],
    progress: tqdm,
) -> None:
    end_of_text = np.array([eot], dtype=np.uint32)
    pending: list[np.ndarray] = []
    pending_tokens = 0
    for document, ids in zip(documents, encode([d.text for d in documents]), strict=True):
        stats[document.source].tokens += len(ids) + 1  # + <|endoftext|>
        pending += [ids, end_of_text]
        pending_tokens += len(ids) + 1
        if pending_tokens >= WRITE_TOKENS:
            writer.write(np.concatenate(pending))
            pending, pending_tokens = [], 0
        progress.update(len(document.text.encode("utf-8")))
    if pending:
        writer.write(np.concatenate(pending))
    writer.close()


def _read(inputs: Sequence[str | Path]) -> tuple[list[Document], dict[str, SourceStats]]:
    """The non-empty documents, and per source its licence(s) and count of empty documents."""
    stats: dict[str, SourceStats] = {}
    licences: dict[str, set[str]] = {}
    documents = []
    for document in read_all(inputs):
        source = stats.setdefault(document.source, SourceStats())
        licences.setdefault(document.source, set()).add(document.licence)
        if document.text.strip():
            documents.append(document)
        else:
            source.empty_removed += 1
    if not documents:
        raise ValueError(f"no non-empty documents in {', '.join(map(str, inputs))}")
    for name, source in stats.items():
        source.licence = ", ".join(sorted(licences[name]))
    return documents, stats


def _deduplicate(
    documents: list[Document], stats: dict[str, SourceStats], threshold: float, workers: int
) -> list[Document]:
    log(f"deduplicating {len(documents)} documents")
    duplicates = find_duplicates([d.text for d in documents], threshold, workers)
    for i in duplicates.exact:
        stats[documents[i].source].duplicates_removed += 1
    for i in duplicates.near:
        stats[documents[i].source].near_duplicates_removed += 1
    removed = duplicates.removed()
    kept = [d for i, d in enumerate(documents) if i not in removed]
    for document in kept:
        stats[document.source].documents += 1
        stats[document.source].bytes += len(document.text.encode("utf-8"))
    return kept


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - start


def prepare(
    inputs: Sequence[str | Path],
    tokenizer_dir: str | Path,
    out: str | Path,
    val_fraction: float = 0.05,
    seed: int = 0,
    workers: int | None = None,
    near_duplicate_threshold: float = NEAR_DUPLICATE_THRESHOLD,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
) -> dict[str, Any]:
    """Prepare `inputs` into token shards in `out`; returns the manifest."""
    workers = workers or os.cpu_count() or 1
    tokenizer_dir, out = Path(tokenizer_dir), Path(out)
    tokenizer = Tokenizer.load(tokenizer_dir)
    eot = tokenizer.token_id(ENDOFTEXT)
    if eot is None:
        raise ValueError(f"{tokenizer_dir}: the tokenizer has no {ENDOFTEXT} token")
    encode = batch_encoder(tokenizer, workers)
    dtype = token_dtype(tokenizer.vocab_size)

    timings: dict[str, float] = {}
    with _timed(timings, "read"):
        documents, stats = _read(inputs)
    with _timed(timings, "deduplicate"):
        documents = _deduplicate(documents, stats, near_duplicate_threshold, workers)
    train, val = split_documents(len(documents), val_fraction, seed)
    total_bytes = sum(s.bytes for s in stats.values())

    tmp = temporary_sibling(out)
    try:
        splits = {}
        progress = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="tokenising")
        with _timed(timings, "tokenise"), progress:
            for split, indices in (("train", train), ("val", val)):
                chosen = [documents[i] for i in indices]
                writer = ShardWriter(tmp, split, dtype, shard_tokens)
                _tokenise_split(chosen, writer, encode, eot, stats, progress)
                splits[split] = {
                    "files": writer.files,
                    "documents": len(chosen),
                    "bytes": sum(len(d.text.encode("utf-8")) for d in chosen),
                    "tokens": writer.tokens,
                }
        (tmp / "tokenizer").mkdir()
        for name in TOKENIZER_FILES:  # the tokenizer alone, even from a checkpoint directory
            if (tokenizer_dir / name).exists():
                shutil.copy2(tokenizer_dir / name, tmp / "tokenizer" / name)
        manifest = {
            "format": FORMAT,
            "tokenizer": {
                "path": "tokenizer",  # relative to `out`
                "sha256": file_sha256(tmp / "tokenizer/tokenizer.json"),
            },
            "vocab_size": tokenizer.vocab_size,
            "dtype": dtype.name,
            "eot_token_id": eot,
            "seed": seed,
            "splits": splits,
            "sources": {name: asdict(s) for name, s in sorted(stats.items())},
        }
        write_json(tmp / MANIFEST, manifest)
        metrics = MetricsLog(tmp / "metrics.jsonl")
        for stage, seconds in timings.items():
            rate = total_bytes / 1e6 / max(seconds, 1e-9)  # of the text kept
            metrics.write(stage=stage, seconds=round(seconds, 3), mb_per_s=round(rate, 2))
        replace_directory(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful replace
    return manifest
