"""The decision log: one JSONL line per safety decision,

    {"time", "request_id", "layer", "score", "threshold", "category", "blocked"}

plus the text judged (`request`: the conversation, for the input layer; `response`: the reply
so far, for the output layer) only when `bodies` is on. Each line is appended with one write to
a file opened for appending, so guards and threads sharing the file never interleave lines.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from charter import chat
from charter.safety.decision import Decision


class DecisionLog:
    def __init__(self, path: str | Path, bodies: bool = False) -> None:
        self.path = Path(path)
        self.bodies = bodies
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(
        self,
        decision: Decision,
        request_id: str,
        conversation: chat.Conversation,
        reply: str | None = None,
    ) -> None:
        line: dict[str, Any] = {"time": time.time(), "request_id": request_id}
        line |= dataclasses.asdict(decision)
        if self.bodies and decision.layer == "input":
            line["request"] = chat.conversation_to_dict(conversation)
        elif self.bodies:
            line["response"] = reply
        data = (json.dumps(line, ensure_ascii=False) + "\n").encode()
        with open(self.path, "ab", buffering=0) as f:  # unbuffered: the line in one write
            f.write(data)
