"""Small file helpers shared by every stage: JSON that names its file and line on error, atomic
directory writes (temp dir, fsync, rename) so a crash never leaves half a checkpoint, and JSONL
written whole or a batch of scored rows at a time, TOML read with errors that name the file, the
SQLite databases of findings and comparisons opened one way, a file's SHA-256, and where caches
go."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tomllib
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def read_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found")
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}"
        ) from e
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def read_toml(path: str | Path, error: type[Exception] = ValueError) -> dict[str, Any]:
    """A TOML file's top-level table. A file that cannot be read, is not UTF-8 or is not TOML
    raises `error` with a message that starts with the file's path."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except tomllib.TOMLDecodeError as e:
        raise error(f"{path}: {e}") from e


def write_json(path: str | Path, value: Any) -> None:
    Path(path).write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """`rows` one JSON object per line, written to a temporary file and renamed into place, so a
    reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """`items` in lists of `size` (the last may be shorter); a size below 1 is an error at once."""
    if size < 1:
        raise ValueError(f"batch size must be ≥ 1, got {size}")

    def take(iterator: Iterator[T]) -> Iterator[list[T]]:
        while batch := list(islice(iterator, size)):
            yield batch

    return take(iter(items))


def write_scored_jsonl(
    rows: Iterable[tuple[dict[str, Any], T]],
    out: Path,
    field: str,
    score: Callable[[list[T]], list[Any]],
    batch_size: int,
) -> int:
    """Each `(row, item)` of `rows` written to JSONL `out` as the row with `field` set to its
    item's score, `batch_size` items a call to `score`, a batch at a time (a progress bar
    counts them); returns how many rows."""
    chunks = batches(rows, batch_size)
    written = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f, tqdm(unit="row", dynamic_ncols=True) as bar:
        for batch in chunks:
            scores = score([item for _, item in batch])
            f.writelines(
                json.dumps({**row, field: result}, ensure_ascii=False) + "\n"
                for (row, _), result in zip(batch, scores, strict=True)
            )
            f.flush()
            written += len(batch)
            bar.update(len(batch))
    return written


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temporary_sibling(directory: Path) -> Path:
    """An empty directory next to `directory` to write into before `replace_directory`."""
    tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def replace_directory(tmp: Path, directory: Path) -> None:
    """Make the fully written `tmp` appear as `directory`, replacing any old one.

    Every file is fsynced before the renames. Renames are atomic; between the two below only the
    `.old` copy exists, and `resolve_directory` falls back to it, so at no instant is the
    directory unreadable.
    """
    for path in sorted(tmp.rglob("*")):
        _fsync(path)
    _fsync(tmp)
    old = directory.parent / f".{directory.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if directory.exists():
        os.rename(directory, old)
    os.rename(tmp, directory)
    _fsync(directory.parent)
    if old.exists():
        shutil.rmtree(old)


def resolve_directory(directory: str | Path) -> Path:
    """`directory`, or its `.old` copy if a crash happened between the renames above."""
    directory = Path(directory)
    old = directory.parent / f".{directory.name}.old"
    if not directory.exists() and old.exists():
        return old
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such directory")
    return directory


class ResumableJsonl:
    """A JSONL file that a generation stage appends to, one finished item per line, and that a
    rerun continues: `rows` are the items already written, so the stage skips their keys.

    A kill mid-write can leave a last line without its newline; opening drops it (that item is
    redone), so the file never holds half an item nor the same item twice."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        if self.path.exists():
            data = self.path.read_bytes()
            kept = data[: data.rfind(b"\n") + 1]
            if len(kept) != len(data):
                with open(self.path, "r+b") as f:
                    f.truncate(len(kept))
            for number, line in enumerate(kept.decode("utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    self.rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{self.path}:{number}: invalid JSON: {e.msg}") from e
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def keys(self, field: str) -> set[Any]:
        return {row.get(field) for row in self.rows}

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Write `rows` and make them durable before returning."""
        with open(self.path, "a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows += rows


def open_sqlite(path: str | Path, schema: str) -> sqlite3.Connection:
    """A connection to the SQLite database at `path` (created with its folder when new) with the
    table in `schema` (a CREATE TABLE IF NOT EXISTS). Shared by threads (a server's handlers) and
    in autocommit mode, so each `with connection:` block is one transaction; WAL so that readers
    never block the writer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(schema)
    return connection


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_root() -> Path:
    """Where Charter caches downloads and exports: `$CHARTER_CACHE`, default `~/.cache/charter`."""
    return Path(os.environ.get("CHARTER_CACHE") or Path.home() / ".cache" / "charter")
