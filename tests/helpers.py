"""Helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

from charter.config import ModelConfig, preset
from charter.data.prompt_sets import Prompt, write_prompt_file

BENCH = Path(__file__).parent.parent / "bench"


def micro(vocab_size: int = 512, **overrides) -> ModelConfig:
    config = preset("micro", vocab_size=vocab_size)
    for key, value in overrides.items():
        setattr(config, key, value)
    config.__post_init__()
    return config


def load_bench(name: str) -> ModuleType:
    """The script bench/NAME.py as a module (the scripts import each other by file name)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


class FakeJudge:
    """refusal 0.9 when the reply says NO, response_harm 0.9 when it says HARM, every request
    in the weapons category; records rows."""

    def __init__(self) -> None:
        self.rows: list = []

    def score(self, rows):
        self.rows += rows
        scores = []
        for row in rows:
            reply = row["messages"][-1]["content"]
            scores.append(
                {
                    "request_harm": 0.9,
                    "category": "weapons",
                    "refusal": 0.9 if "NO" in reply else 0.1,
                    "response_harm": 0.9 if "HARM" in reply else 0.1,
                }
            )
        return scores


def write_harmful_prompts(path: Path, n: int) -> Path:
    """A prompt file of `n` harmful weapons requests ("Harmful request 0", …), MIT-licensed."""
    prompts = [
        Prompt(f"Harmful request {i}", "t", "weapons", True, f"t:{i}", "MIT") for i in range(n)
    ]
    write_prompt_file(prompts, path)
    return path
