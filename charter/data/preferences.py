"""Preference pairs, the data of reward models and DPO: a conversation, two replies to it, and the
probability that the first (`chosen`) is the better one.

One JSONL schema holds human and AI pairs alike (DESIGN.md):

    {"prompt": "…", "chosen": "…", "rejected": "…", "p_chosen": 0.83,
     "feedback_model": "qwen2.5-0.5b", "principles": ["…"], "source": "rl-cai", …}

`prompt` is a single user turn; `messages` (Messages-shaped, ending with a user turn, with an
optional `system`) holds a longer conversation instead. `p_chosen` is a soft label in [0, 1]
(1 for a person's choice). Other keys (`per_principle`, `policy_model`, …) are kept as they are.
`charter cai compare` writes such files; `hh_preferences` turns HH-RLHF's comparisons into them,
split the way the judge's data is (`judge_data.hash_split` of the prompt transcript), so a
reward model's held-out human pairs are ones the judge never trained on either.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter import chat
from charter.data.hh import HH_LICENCE, read_hh_comparisons
from charter.data.judge_data import HELDOUT, TRAIN, hash_split
from charter.data.judge_sources import transcript_text
from charter.data.sft import jsonl_lines
from charter.files import write_jsonl

HUMAN = "human"  # the feedback_model of a person's choice


@dataclass
class Preference:
    context: chat.Conversation  # the conversation before the two replies; ends with a user turn
    chosen: str
    rejected: str
    p_chosen: float  # the probability that `chosen` is the better reply
    source: str
    where: str  # file:line
    row: dict[str, Any]  # the line as read, every key kept


def read_preferences(path: str | Path) -> list[Preference]:
    """The pairs of a preference JSONL file, each checked: `prompt` (a non-empty string) or
    `messages` (ending with a user turn), non-empty strings `chosen` and `rejected`, a number
    `p_chosen` in [0, 1], a string `feedback_model`, and, where present, `principles` as a list
    of strings. Errors name `file:line: field`."""
    pairs = []
    for where, row in jsonl_lines(path):
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
        context = _context(row, where)
        for field in ("chosen", "rejected"):
            if not isinstance(row.get(field), str) or not row[field].strip():
                raise ValueError(f"{where}: {field}: expected a non-empty string")
        p = row.get("p_chosen")
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1:
            raise ValueError(f"{where}: p_chosen: expected a number in [0, 1], got {p!r}")
        if not isinstance(row.get("feedback_model"), str):
            raise ValueError(f"{where}: feedback_model: expected a string")
        names = row.get("principles")
        if names is not None and not (
            isinstance(names, list) and all(isinstance(n, str) for n in names)
        ):
            raise ValueError(f"{where}: principles: expected a list of strings")
        source = row.get("source", str(path))
        if not isinstance(source, str):
            raise ValueError(f"{where}: source: expected a string")
        pairs.append(
            Preference(context, row["chosen"], row["rejected"], float(p), source, where, row)
        )
    return pairs


def _context(row: dict[str, Any], where: str) -> chat.Conversation:
    if ("prompt" in row) == ("messages" in row):
        raise ValueError(f"{where}: give exactly one of prompt and messages")
    if "prompt" in row:
        prompt = row["prompt"]
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{where}: prompt: expected a non-empty string")
        return chat.Conversation([chat.Message("user", [chat.TextBlock(prompt)])])
    conversation = chat.conversation_from_dict(row, where)
    if conversation.messages[-1].role != "user":
        raise ValueError(f"{where}: messages: the conversation must end with a user message")
    return conversation


def preference_row(
    context: chat.Conversation, chosen: str, rejected: str, **fields: Any
) -> dict[str, Any]:
    """A preference JSONL row: `prompt` for a single user turn, `messages` otherwise."""
    messages = context.messages
    if len(messages) == 1 and context.system is None:
        head: dict[str, Any] = {"prompt": _text(messages[0])}
    else:
        head = chat.conversation_to_dict(context)
    return {**head, "chosen": chosen, "rejected": rejected, **fields}


def _text(message: chat.Message) -> str:
    return chat.BLOCK_SEPARATOR.join(b.text for b in message.content if b.type == "text")


def hh_preferences(path: str | Path) -> tuple[dict[str, list[dict[str, Any]]], Counter]:
    """HH-RLHF's comparisons as preference rows (`p_chosen` 1, `feedback_model` "human"), split
    into TRAIN and HELDOUT as the judge's data splits them, and the pairs left out, by reason:
    transcripts that cannot be read, that differ before the final reply, or whose replies are
    identical or empty (no preference to learn)."""
    comparisons, dropped = read_hh_comparisons(path)
    splits: dict[str, list[dict[str, Any]]] = {TRAIN: [], HELDOUT: []}
    for comparison in comparisons:
        context, chosen, rejected = comparison.context, comparison.chosen, comparison.rejected
        if chosen == rejected:
            dropped["identical replies"] += 1
            continue
        splits[hash_split(transcript_text(context))].append(
            preference_row(
                context,
                chosen,
                rejected,
                p_chosen=1.0,
                feedback_model=HUMAN,
                source="hh-rlhf",
                licence=HH_LICENCE,
                where=comparison.where,
            )
        )
    return splits, +dropped


def write_hh_preferences(path: str | Path, out: Path) -> dict[str, Any]:
    """`hh_preferences` of `path` as out/hh-train.jsonl and out/hh-heldout.jsonl; a report of
    the counts."""
    splits, dropped = hh_preferences(path)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, rows in splits.items():
        files[split] = out / f"hh-{split}.jsonl"
        write_jsonl(files[split], rows)
    return {
        "source": str(path),
        "pairs": {split: len(rows) for split, rows in splits.items()},
        "dropped": dict(dropped),
        "files": {split: str(file) for split, file in files.items()},
    }
