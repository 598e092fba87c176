"""The input classifier: before the model reads a request, the judge's `request_harm` of the
whole conversation (a harmful request spread over several turns is read as one), against the
threshold of the judge's category if `[input.categories]` gives one, else `[input] threshold`."""

from __future__ import annotations

from charter import chat
from charter.align.judge import Scorer
from charter.safety.config import SafetyConfig
from charter.safety.decision import Decision, decide, judge_row


class InputClassifier:
    def __init__(self, judge: Scorer, config: SafetyConfig) -> None:
        self.judge = judge
        self.settings = config.input

    def check(self, conversation: chat.Conversation) -> Decision:
        scores = self.judge.score([judge_row(conversation)])[0]
        category = scores["category"]
        threshold = self.settings.threshold_for(category)
        return decide("input", scores["request_harm"], threshold, category)
