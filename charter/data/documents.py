"""Documents: the unit of text every stage reads. A document is `{"text", "source", "licence"}`.

`read_documents` accepts the user's own files — `.txt` and `.md` (one document per file),
`.jsonl` (one JSON object with a "text" field per line), `.parquet` (a "text" column) — or
directories of them. A malformed line is an error naming its file and line, never skipped
(reported at once, or collected so that one pass reports them all). `write_documents` writes
the JSONL form the corpus recipes produce.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

TEXT_SUFFIXES = {".txt", ".md"}
SUFFIXES = TEXT_SUFFIXES | {".jsonl", ".parquet"}


@dataclass
class Document:
    text: str
    source: str
    licence: str = "unknown"

    def to_json(self) -> dict[str, str]:
        return {"text": self.text, "source": self.source, "licence": self.licence}


def write_documents(documents: Iterable[Document], path: str | Path) -> tuple[int, int]:
    """Write `documents` as JSONL, atomically (a crash leaves no half-written file); returns the
    number of documents and of UTF-8 bytes of their text."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    n_documents = n_bytes = 0
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for document in documents:
                f.write(json.dumps(document.to_json(), ensure_ascii=False) + "\n")
                n_documents += 1
                n_bytes += len(document.text.encode("utf-8"))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return n_documents, n_bytes


def read_documents(paths: list[str | Path], errors: list[str] | None = None) -> Iterator[Document]:
    """The documents in `paths`, in order. A file's source is its name without the suffix, or the
    directory's name for files found in a directory (a JSONL "source" field takes precedence).

    A malformed line or row raises ValueError("file:line: problem"); if an `errors` list is given,
    the message is appended to it instead and reading goes on, so one pass finds every bad line.
    """
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
            if not files:
                raise ValueError(f"{path}: no {', '.join(sorted(SUFFIXES))} files in directory")
            for file in files:
                yield from _read_file(file, path.resolve().name, errors)
        elif path.exists():
            yield from _read_file(path, path.stem, errors)
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")


def _report(errors: list[str] | None, message: str) -> None:
    if errors is None:
        raise ValueError(message)
    errors.append(message)


def _read_file(path: Path, source: str, errors: list[str] | None) -> Iterator[Document]:
    if path.suffix in TEXT_SUFFIXES:
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            _report(errors, f"{path}: not UTF-8 (byte {e.start}: {e.reason})")
            return
        yield Document(text, source=source)
    elif path.suffix == ".jsonl":
        yield from _read_jsonl(path, errors)
    elif path.suffix == ".parquet":
        yield from _read_parquet(path, errors)
    else:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r} (use {sorted(SUFFIXES)})")


def _read_jsonl(path: Path, errors: list[str] | None) -> Iterator[Document]:
    with open(path, "rb") as f:  # bytes, so a bad encoding is reported with its line too
        for line_number, raw in enumerate(f, start=1):
            where = f"{path}:{line_number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                _report(errors, f"{where}: not UTF-8 (byte {e.start}: {e.reason})")
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                _report(errors, f"{where}: invalid JSON ({e.msg}, column {e.colno})")
                continue
            problem = _record_problem(record)
            if problem:
                _report(errors, f"{where}: {problem}")
                continue
            yield Document(
                record["text"], record.get("source", path.stem), record.get("licence", "unknown")
            )


def _record_problem(record: object) -> str | None:
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    if "text" not in record:
        return "no 'text' field"
    for key in ("text", "source", "licence"):
        if key in record and not isinstance(record[key], str):
            return f"'{key}' must be a string, got {type(record[key]).__name__}"
    return None


def _read_parquet(path: Path, errors: list[str] | None) -> Iterator[Document]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f"{path}: reading .parquet needs pyarrow (pip install pyarrow)") from e
    table = pq.read_table(path)
    if "text" not in table.column_names:
        raise ValueError(f"{path}: no 'text' column (columns: {table.column_names})")
    columns = table.to_pydict()
    for row, text in enumerate(columns["text"]):
        source = columns["source"][row] if "source" in columns else path.stem
        licence = columns["licence"][row] if "licence" in columns else "unknown"
        problem = _record_problem({"text": text, "source": source, "licence": licence})
        if problem:
            _report(errors, f"{path}: row {row}: {problem}")
            continue
        yield Document(text, source, licence)


# Modules with side effects on import, or whose docs are mostly not prose.
_SKIPPED_MODULES = {
    "antigravity",
    "this",
    "idlelib",
    "tkinter",
    "turtle",
    "turtledemo",
    "test",
    "lib2to3",
    "ensurepip",
    "venv",
    "pydoc_data",
    "pty",
    "tty",
    "curses",
}


def python_docstrings(min_chars: int = 200) -> Iterator[Document]:
    """Docstrings of the Python standard library: real English prose that every Python has, so
    tests and the first demo need no download (about 0.5 MB)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(sys.stdlib_module_names):
            if name.startswith("_") or name in _SKIPPED_MODULES:
                continue
            try:
                module = importlib.import_module(name)
            except Exception:  # platform-specific modules (winreg, …) do not import everywhere
                continue
            members = [module] + [
                obj
                for attr, obj in vars(module).items()
                if not attr.startswith("_")
                and (inspect.isclass(obj) or inspect.isfunction(obj))
                and getattr(obj, "__module__", None) == name
            ]
            for obj in members:
                doc = inspect.getdoc(obj)
                if doc and len(doc) >= min_chars:
                    yield Document(doc, source="python-docstrings", licence="PSF-2.0")
