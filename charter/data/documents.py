"""Documents: the unit of text every stage reads. A document is `{"text", "source", "licence"}`.

`read_documents` accepts the user's own files — `.txt` and `.md` (one document per file),
`.jsonl` (one JSON object with a "text" field per line), `.parquet` (a "text" column) — or
directories of them. A malformed line is an error naming its file and line, never skipped.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import warnings
from collections.abc import Iterator
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


def read_documents(paths: list[str | Path]) -> Iterator[Document]:
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
            if not files:
                raise ValueError(f"{path}: no {', '.join(sorted(SUFFIXES))} files in directory")
            for file in files:
                yield from _read_file(file)
        elif path.exists():
            yield from _read_file(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")


def _read_file(path: Path) -> Iterator[Document]:
    if path.suffix in TEXT_SUFFIXES:
        yield Document(path.read_text(encoding="utf-8"), source=path.stem)
    elif path.suffix == ".jsonl":
        yield from _read_jsonl(path)
    elif path.suffix == ".parquet":
        yield from _read_parquet(path)
    else:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r} (use {sorted(SUFFIXES)})")


def _read_jsonl(path: Path) -> Iterator[Document]:
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_number}: invalid JSON ({e.msg})") from e
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f"{path}:{line_number}: expected an object with a string 'text'")
            yield Document(
                record["text"], record.get("source", path.stem), record.get("licence", "unknown")
            )


def _read_parquet(path: Path) -> Iterator[Document]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f"{path}: reading .parquet needs pyarrow (pip install pyarrow)") from e
    table = pq.read_table(path)
    if "text" not in table.column_names:
        raise ValueError(f"{path}: no 'text' column (columns: {table.column_names})")
    columns = table.to_pydict()
    for row, text in enumerate(columns["text"]):
        if not isinstance(text, str):
            raise ValueError(f"{path}: row {row}: 'text' is not a string")
        source = columns.get("source", [path.stem] * (row + 1))[row]
        licence = columns.get("licence", ["unknown"] * (row + 1))[row]
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
