"""How a checkpoint was made: `lineage.json` in its directory lists the stages from the first (an
import, or pretraining from scratch) to the one that wrote it, each with its command, its
settings and its data files with their licences. The training commands append their stage when
their run finishes (`charter.commands.main`), so the model card (`charter.eval.card`) can say
how any model was made, however it was trained.

    {"stages": [{"name": "import", "source": {…source.json…}},
                {"name": "sft", "command": "charter sft --base … --out runs/sft",
                 "settings": {"train": {"lr": 1e-4, …}}, "data": [{"path": "…", "rows": 4000,
                 "licence": "Apache-2.0"}]}]}
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from charter.data.sft import jsonl_lines
from charter.files import read_json, write_json

LINEAGE_FILE = "lineage.json"
SOURCE_FILE = "source.json"  # what `charter import` writes beside an imported model


def read_lineage(directory: str | Path) -> list[dict[str, Any]]:
    """The stages that made the checkpoint in `directory`: its lineage.json's, else an import
    stage from its source.json, else none (a model made elsewhere)."""
    directory = Path(directory)
    if (directory / LINEAGE_FILE).exists():
        return list(read_json(directory / LINEAGE_FILE).get("stages", []))
    if (directory / SOURCE_FILE).exists():
        return [{"name": "import", "source": read_json(directory / SOURCE_FILE)}]
    return []


def data_file(path: str | Path) -> dict[str, Any]:
    """A data file as a lineage entry: its path, its rows, and the licences its rows name (JSONL
    rows with a "licence" field); a directory (token shards) or other file by its path alone."""
    path = Path(path)
    entry: dict[str, Any] = {"path": str(path)}
    if path.is_file() and path.suffix == ".jsonl":
        rows = [row for _, row in jsonl_lines(path)]
        licences = {row.get("licence") if isinstance(row, dict) else None for row in rows}
        named = ", ".join(sorted(str(licence) for licence in licences - {None}))
        entry["rows"] = len(rows)
        if not named:
            entry["licence"] = "not recorded"
        else:
            entry["licence"] = named + (", and rows without one" if None in licences else "")
    return entry


def record_stage(
    directory: str | Path,
    name: str,
    command: str,
    settings: dict[str, Any],
    data: Sequence[str | Path],
    base: str | Path | None = None,
) -> None:
    """Write `directory`/lineage.json: the stages of `base` (the checkpoint this stage started
    from, if any), then this one."""
    stages = read_lineage(base) if base is not None else []
    stage = {"name": name, "command": command, "settings": settings}
    stage["data"] = [data_file(path) for path in data]
    write_json(Path(directory) / LINEAGE_FILE, {"stages": [*stages, stage]})
