"""Anthropic's HH-RLHF transcripts: `\\n\\nHuman: …\\n\\nAssistant: …` text, one comparison per
JSONL line as `{"chosen": transcript, "rejected": transcript}`.

`import_hh` turns one side (`chosen` or `rejected`) into SFT records; `read_hh_pairs` gives the
comparisons as pairs of conversations for a reward model. The files hold a few transcripts that
cannot become a demonstration (an empty final response, say): these are returned as problems
naming file, line and field, for the caller to report, never dropped unmentioned. A line that is
not a JSON object with both transcripts is an error.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from charter.chat import Conversation, Message, TextBlock
from charter.data.sft import SFTRecord, jsonl_lines

HH_LICENCE = "MIT"  # github.com/anthropics/hh-rlhf
FIELDS = ("chosen", "rejected")
_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(text: str, where: str, allow_empty_response: bool = False) -> Conversation:
    """The messages of one transcript. Turn text is stripped of the blank space around it; two
    turns in a row by one speaker (the data has a few) stay two messages. An empty final
    response is an error unless `allow_empty_response` (then it is an empty assistant message)."""
    pieces = _TURN.split(text)
    if pieces[0].strip() or len(pieces) < 3:
        raise ValueError(f"{where}: expected a transcript starting with '\\n\\nHuman: '")
    turns = list(zip(pieces[1::2], pieces[2::2]))
    messages = []
    for number, (speaker, turn) in enumerate(turns, start=1):
        is_response = number == len(turns) and speaker == "Assistant"
        if not turn.strip() and not (is_response and allow_empty_response):
            what = "the final response" if is_response else f"turn {number} ({speaker})"
            raise ValueError(f"{where}: {what} is empty")
        content = [TextBlock(turn.strip())] if turn.strip() else []
        messages.append(Message(_ROLES[speaker], content))
    if messages[0].role != "user" or messages[-1].role != "assistant":
        raise ValueError(f"{where}: expected a Human turn first and an Assistant turn last")
    return Conversation(messages)


def _transcripts(path: str | Path):
    """(where, line's value) for each comparison line, checking it holds both transcripts."""
    for where, data in jsonl_lines(path):
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object with 'chosen' and 'rejected'")
        for field in FIELDS:
            if not isinstance(data.get(field), str):
                raise ValueError(f"{where}: {field}: expected a transcript string")
        yield where, data


def import_hh(path: str | Path, field: str = "chosen") -> tuple[list[SFTRecord], list[str]]:
    """SFT records from one side of the comparisons, and the problems that kept a line out."""
    if field not in FIELDS:
        raise ValueError(f"field must be one of {FIELDS}, got {field!r}")
    records, problems = [], []
    for where, data in _transcripts(path):
        try:
            conversation = parse_transcript(data[field], f"{where}: {field}")
        except ValueError as e:
            problems.append(str(e))
            continue
        records.append(
            SFTRecord(conversation, source=f"hh-rlhf:{field}", licence=HH_LICENCE, where=where)
        )
    return records, problems


@dataclass
class PreferencePair:
    chosen: Conversation
    rejected: Conversation
    where: str

    @property
    def prompt(self) -> Conversation | None:
        """The shared conversation before the two final responses; None where the transcripts
        differ earlier too (a few HH pairs do)."""
        if self.chosen.messages[:-1] != self.rejected.messages[:-1]:
            return None
        return Conversation(self.chosen.messages[:-1])


def read_hh_pairs(path: str | Path) -> tuple[list[PreferencePair], list[str]]:
    """The comparisons as (chosen, rejected) conversations, and the problems that kept a line out.
    An empty response is kept: preferring silence to a harmful answer is a real preference."""
    pairs, problems = [], []
    for where, data in _transcripts(path):
        try:
            chosen, rejected = (
                parse_transcript(data[f], f"{where}: {f}", allow_empty_response=True)
                for f in FIELDS
            )
        except ValueError as e:
            problems.append(str(e))
            continue
        pairs.append(PreferencePair(chosen, rejected, where))
    return pairs, problems


@dataclass
class Comparison:
    """A comparison of two final replies to one conversation: what a reward model learns from."""

    context: Conversation  # the shared conversation before the two final replies
    chosen: str
    rejected: str
    where: str


def read_hh_comparisons(path: str | Path) -> tuple[list[Comparison], Counter]:
    """The comparisons whose transcripts share everything before the final replies and whose
    replies are both non-empty, and the pairs left out, by reason: unreadable transcripts,
    transcripts that differ before the final reply, an empty reply."""
    pairs, problems = read_hh_pairs(path)
    dropped = Counter({"unreadable transcript": len(problems)})
    comparisons = []
    for pair in pairs:
        context = pair.prompt
        if context is None:
            dropped["transcripts differ before the final reply"] += 1
            continue
        # A transcript's turn is one stripped text block (parse_transcript), or none if empty.
        chosen, rejected = (
            "".join(b.text for b in c.messages[-1].content) for c in (pair.chosen, pair.rejected)
        )
        if not chosen or not rejected:
            dropped["empty reply"] += 1
            continue
        comparisons.append(Comparison(context, chosen, rejected, pair.where))
    return comparisons, +dropped
