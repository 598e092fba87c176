"""Supervised fine-tuning data: JSONL files of conversations in Anthropic format.

One conversation per line:

    {"system"?: str, "messages": [{"role", "content"}, …], "tools"?: [...],
     "task"?: str, "answer"?: str, "source"?: str, "licence"?: str}

`task` and `answer` are what a held-out evaluation checks (the synthetic generators write them);
`source` and `licence` say where a real conversation came from. Every line is validated, and a
bad one is an error naming file, line and field (`sft.jsonl:12: messages[3].content[0].input:
expected an object, got a string`), never skipped. A conversation must end with the assistant's
message: that is what it teaches.

For training, each conversation is rendered with thinking off (`to_training_example`): a
demonstration with thinking keeps it, one without gets the empty think block, so one model learns
both modes of the hybrid-reasoning toggle.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.chat import (
    Conversation,
    Rendered,
    TextBlock,
    conversation_from_dict,
    conversation_to_dict,
    render,
)
from charter.tokenizer import Tokenizer

CHARTER_LICENCE = "Apache-2.0"  # Charter's own data (pyproject.toml): synthetic tasks, QA set

_METADATA_FIELDS = ("task", "answer", "source", "licence")
_FIELDS = {"system", "messages", "tools", *_METADATA_FIELDS}


@dataclass
class SFTRecord:
    conversation: Conversation
    task: str | None = None
    answer: str | None = None  # the checkable answer of a task's final response
    source: str | None = None
    licence: str | None = None
    where: str = ""  # "file:line" it was read from, for messages

    def to_json(self) -> dict[str, Any]:
        data = conversation_to_dict(self.conversation)
        for key in _METADATA_FIELDS:
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data

    def prompt(self) -> Conversation:
        """The conversation up to the user's last question, for generating the answer afresh:
        everything before the assistant turns that follow the last user text (tool results, the
        model's own calls, are part of what it must now do)."""
        messages = self.conversation.messages
        last_question = max(
            i
            for i, m in enumerate(messages)
            if m.role == "user" and any(isinstance(b, TextBlock) for b in m.content)
        )
        return Conversation(
            messages[: last_question + 1], self.conversation.system, self.conversation.tools
        )


def record_from_dict(data: Any, where: str) -> SFTRecord:
    conversation = conversation_from_dict(data, where)
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise ValueError(f"{where}: {unknown[0]}: unknown field (expected {sorted(_FIELDS)})")
    for key in _METADATA_FIELDS:
        if key in data and not isinstance(data[key], str):
            raise ValueError(f"{where}: {key}: expected a string")
    messages = conversation.messages
    if messages[-1].role != "assistant" or not messages[-1].content:
        raise ValueError(
            f"{where}: messages[{len(messages) - 1}]: a demonstration must end with the "
            "assistant's (non-empty) message"
        )
    if not any(
        m.role == "user" and any(isinstance(b, TextBlock) for b in m.content) for m in messages
    ):
        raise ValueError(f"{where}: messages: no user message with text")
    metadata = {key: data.get(key) for key in _METADATA_FIELDS}
    return SFTRecord(conversation, **metadata, where=where)


def jsonl_lines(path: str | Path) -> Iterator[tuple[str, Any]]:
    """(`file:line`, value) for each non-blank line of a JSONL file (gzipped if `.gz`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON at column {e.colno}: {e.msg}") from e


def read_sft(paths: Iterable[str | Path]) -> Iterator[SFTRecord]:
    for path in paths:
        for where, data in jsonl_lines(path):
            yield record_from_dict(data, where)


def write_sft(records: Iterable[SFTRecord], path: str | Path) -> int:
    """Write `records` as JSONL, atomically; returns how many."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    count = 0
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def to_training_example(record: SFTRecord, tokenizer: Tokenizer) -> Rendered:
    """Token ids and the assistant-only loss mask of one demonstration."""
    return render(record.conversation, tokenizer, thinking=False)
