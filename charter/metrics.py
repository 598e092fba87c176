"""`metrics.jsonl`: one JSON object per line, appended as training goes, readable while it runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class MetricsLog:
    def __init__(self, path: str | Path, resume_after_step: int | None = None) -> None:
        """Open `path` for appending. When resuming from a checkpoint at step `s`, rows the
        interrupted run wrote after `s` are removed, so each step appears once."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_after_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_after_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, **row: Any) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    with open(path) as f:
        for line_number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{line_number}: invalid JSON ({e.msg})") from e
    return rows
