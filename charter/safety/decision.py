"""What a safety layer decides (`Decision`), and what it decides from: a judge's scores of a
Messages-shaped row (`judge_row`).

The judge is anything with `score(rows) -> list[dict]` (`charter.align.judge.Scorer`): the trained
`charter.align.judge.Judge`, or a stand-in in tests. It reads a row as
`{"messages", "system"?, "tools"?}`, a final assistant message being the reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from charter import chat


@dataclass(frozen=True)
class Decision:
    layer: Literal["input", "output"]
    score: float  # request_harm (input) or response_harm (output)
    threshold: float  # the one that applied (input: the category's, if it has one)
    category: str  # the judge's category of the request
    blocked: bool  # score ≥ threshold


def decide(
    layer: Literal["input", "output"], score: float, threshold: float, category: str
) -> Decision:
    return Decision(layer, score, threshold, category, score >= threshold)


def judge_row(conversation: chat.Conversation, reply: str | None = None) -> dict[str, Any]:
    """`conversation` as the judge's row, with `reply` (text) as the assistant's answer. A final
    assistant message (a prefill) is the start of the reply, so the reply continues it; the judge
    reads a reply's text only, so its other blocks are left out."""
    row = chat.conversation_to_dict(conversation)
    messages = conversation.messages
    if messages[-1].role == "assistant":
        row["messages"].pop()
        prefill = "".join(b.text for b in messages[-1].content if b.type == "text")
        reply = prefill + (reply or "")
    if reply is not None:
        row["messages"].append({"role": "assistant", "content": reply})
    return row
