"""The output monitor: the judge's `response_harm` of the conversation with the reply written so
far, against `[output] threshold`. The guard asks it every `every_tokens` output tokens of a
stream and at its end (`guard.py`)."""

from __future__ import annotations

from charter import chat
from charter.align.judge import Scorer
from charter.safety.config import SafetyConfig
from charter.safety.decision import Decision, decide, judge_row


class OutputMonitor:
    def __init__(self, judge: Scorer, config: SafetyConfig) -> None:
        self.judge = judge
        self.settings = config.output

    def check(self, conversation: chat.Conversation, partial_reply_text: str) -> Decision:
        scores = self.judge.score([judge_row(conversation, partial_reply_text)])[0]
        return decide(
            "output", scores["response_harm"], self.settings.threshold, scores["category"]
        )
