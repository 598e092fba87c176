"""The llama.cpp backend's cache of exported checkpoints.

A checkpoint is exported to GGUF once per content and dtype, into `$CHARTER_CACHE/gguf` (default
`~/.cache/charter/gguf`), named by a hash of the checkpoint's files: a retrained checkpoint is
re-exported, an unchanged one never is. Every training stage writes a new checkpoint (SmolLM2 in
f32 is 0.5 GB of GGUF), so the cache is bounded: after each export the least recently used files
are deleted until it holds at most `$CHARTER_GGUF_CACHE_GB` GiB (default 8). A file counts as used
when it is looked up (its modification time is set then); the file just exported is never deleted.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from charter.files import cache_root, resolve_directory

# Part of every cache key: bump it when the exporter's output changes, so old files are not used.
EXPORT_FORMAT = "charter-gguf-2"  # 2: GPT-2's pre-tokeniser named "gpt-2", as llama.cpp reads it
DEFAULT_LIMIT_GB = 8.0
LIMIT_VARIABLE = "CHARTER_GGUF_CACHE_GB"


def default_cache_dir() -> Path:
    return cache_root() / "gguf"


def cache_limit_bytes() -> int:
    """The cache's size bound from `$CHARTER_GGUF_CACHE_GB`, refusing a value that is no size."""
    value = os.environ.get(LIMIT_VARIABLE, "").strip()
    try:
        gib = float(value) if value else DEFAULT_LIMIT_GB
    except ValueError:
        gib = -1.0
    if not gib >= 0:  # also refuses nan
        raise ValueError(f"{LIMIT_VARIABLE}={value!r} is not a size in GiB (a number >= 0)")
    return int(gib * 2**30)


def checkpoint_hash(directory: str | Path) -> str:
    """SHA-256 of every file at the top of a checkpoint directory (names and contents)."""
    digest = hashlib.sha256(EXPORT_FORMAT.encode())
    for path in sorted(p for p in resolve_directory(directory).iterdir() if p.is_file()):
        with path.open("rb") as f:
            file_digest = hashlib.file_digest(f, "sha256").digest()
        digest.update(path.name.encode() + b"\0" + file_digest)
    return digest.hexdigest()


def cached_gguf(model_dir: str | Path, dtype: str = "f32", cache_dir: Path | None = None) -> Path:
    """The checkpoint as a GGUF file of `dtype`, exported on first use."""
    from charter.interop.gguf_export import check_tokenizer, export_gguf

    cache_dir = cache_dir or default_cache_dir()
    path = cache_dir / f"{checkpoint_hash(model_dir)[:24]}-{dtype}.gguf"
    if path.exists():
        os.utime(path)  # most recently used: the last to be evicted
        return path
    limit = cache_limit_bytes()  # a bad setting refuses before a long export
    check_tokenizer(resolve_directory(model_dir))  # refuses at once, before a long export
    print(f"exporting {model_dir} to {path} for llama.cpp", file=sys.stderr, flush=True)
    export_gguf(model_dir, path, dtype, progress=False)
    evict(cache_dir, limit, keep=path)
    return path


def evict(cache_dir: Path, limit: int, keep: Path) -> list[Path]:
    """Delete the least recently used exports in `cache_dir` until the rest take at most `limit`
    bytes, never `keep`; return the deleted files. Another process's partial export (a hidden
    temporary file) is not an export and is left alone."""
    files = []
    for path in cache_dir.glob("*.gguf"):
        try:
            files.append((path.stat(), path))
        except FileNotFoundError:  # deleted meanwhile by another process's eviction
            continue
    total = sum(stat.st_size for stat, _ in files)
    deleted = []
    for stat, path in sorted(files, key=lambda item: item[0].st_mtime_ns):
        if total <= limit:
            break
        if path == keep:
            continue
        path.unlink(missing_ok=True)  # a process already running it keeps its open file
        total -= stat.st_size
        deleted.append(path)
    if deleted:
        print(
            f"GGUF cache over {limit / 2**30:.1f} GiB ({LIMIT_VARIABLE}): deleted {len(deleted)} "
            f"least recently used export(s) from {cache_dir}",
            file=sys.stderr,
            flush=True,
        )
    return deleted
