"""Generative feedback through any `Generator`: critiques, revisions and soft preferences.

These are the building blocks of Constitutional AI. Supervised CAI asks a model to criticise a
response under a principle and then to revise the response in the light of that critique
(`critique`, `revise`); RL-CAI asks a feedback model which of two responses a principle prefers,
and keeps the probability as a soft label (`compare`). Every function takes a batch and makes
one `generate` or `score` call per step, so a local engine batches the work and a remote
endpoint answers it concurrently.

Critique and revision continue the conversation being judged. The few-shot examples come first
as prior exchanges (prompt, response, critique request, critique; for a revision also the
revision request and revision); then the real conversation, its response as the assistant's
turn, and the principle's critique request as the next user turn. A revision goes one step
further: the critique is the assistant's answer and the revision request the user's next turn.
The examples are data (`FewShotExample`), `EXAMPLES` by default. Generation is greedy unless
`options` say otherwise.

A comparison shows the conversation as a transcript, asks the principle's question, and offers
the two responses as options "(A)" and "(B)". Its probability comes in one of two ways:

- `"logprobs"` (a generator that can score: a local PyTorch model): "(A)" and "(B)" are each
  scored as the reply, and their total log-probabilities (the end-of-turn token included) are
  normalised over the two, a softmax;
- `"votes"` (a generator that cannot, `score` raising `ScoringUnsupported`: remote endpoints,
  llama.cpp): `votes` replies are sampled at `temperature` and each is read for the letter it
  chooses; the probability is a letter's share of the votes that chose one. A reply that names
  neither letter (or both) is counted as unparsed and reported, never silently dropped; an
  order in which no vote parsed says 0.5 (no information) and its `unparsed` says why.

`method="auto"` tries scoring and falls back to votes. Models favour an option for its position
alone, so every question is asked in both orders — response A shown as "(A)", then as "(B)" —
and the two probabilities that A is better are averaged; with several principles the averages
are averaged again (an ensemble). Swapping the two responses therefore gives exactly 1 - p. An
optional `clamp` bounds the final probability (RL-CAI clamps chain-of-thought labels to
[0.4, 0.6], because reasoning makes a model overconfident).

Votes are deterministic given `seed` (on a generator that honours seeds): vote k of question q
(questions numbered per comparison, per principle, per order) is sampled with seed
`seed + q * votes + k`.

With `reasoning_tokens` (chain of thought) the model is asked to reason first and to end with
"So the answer is (A)" or "(B)". On the logprobs path it reasons greedily until that cue (one
`generate` call), and the two scored replies are its reasoning followed by the cue and each
option: the reasoning's tokens score the same in both and cancel, so the softmax is over the
options given the reasoning. On the votes path each sampled reply reasons and is read for the
letter after its last cue. `method="auto"` first scores one option to learn whether the
generator can, so that the reasoning is not generated for nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from charter import chat
from charter.infer.generator import (
    Generator,
    ScoreRequest,
    ScoringUnsupported,
    TurnOptions,
    TurnRequest,
)

LOGPROBS, VOTES = "logprobs", "votes"
OPTIONS = ("(A)", "(B)")
ANSWER_CUE = "So the answer is"  # ends the reasoning of a chain-of-thought comparison

# A prompt: one user message, or a conversation that ends with the user's turn.
Prompt = str | chat.Conversation


@dataclass(frozen=True)
class Principle:
    """One principle of a constitution, as the three requests feedback is asked under."""

    name: str
    critique_request: str  # asks for the response's faults under the principle
    revision_request: str  # asks for the response rewritten to fix them
    comparison_question: str  # asks which of two responses the principle prefers
    category: str = "general"  # the domain it guards, e.g. a harm category the judge names


@dataclass(frozen=True)
class FewShotExample:
    """One worked critique and revision, shown to the model before the real request."""

    prompt: str
    response: str
    critique_request: str
    critique: str
    revision_request: str
    revision: str


# Our own two generic examples: one response with a real fault, and one without, so that the
# model also sees that a critique may find nothing to change.
EXAMPLES = (
    FewShotExample(
        prompt="What's the fastest way to lose 10 kg before my wedding in two weeks?",
        response="Stop eating for the two weeks and drink only water; you'll easily drop it.",
        critique_request=(
            "Point out anything in the assistant's last reply that could harm the user or "
            "others, or that is untrue."
        ),
        critique=(
            "The reply recommends two weeks of water-only fasting, which is dangerous: it can "
            "cause fainting, muscle loss and heart rhythm problems. It also promises a result "
            "that is not realistic, and it does not suggest asking a doctor."
        ),
        revision_request=(
            "Rewrite the assistant's last reply so that it fixes the problems the critique "
            "found, keeping whatever in it was helpful."
        ),
        revision=(
            "Losing 10 kg safely in two weeks isn't realistic, and crash diets can be "
            "dangerous. What helps in the short term: less salty and processed food and less "
            "alcohol (to reduce bloating), plenty of water, good sleep and regular activity. A "
            "doctor or dietitian can help you plan for the longer term."
        ),
    ),
    FewShotExample(
        prompt="What is a prime number?",
        response=(
            "A prime number is a whole number greater than 1 whose only divisors are 1 and "
            "itself, such as 2, 3, 5 and 7."
        ),
        critique_request=(
            "Identify anything in the assistant's last reply that is inaccurate, unclear or "
            "unhelpful."
        ),
        critique="The reply is accurate, clear and complete; nothing needs fixing.",
        revision_request="Rewrite the assistant's last reply to address the critique.",
        revision=(
            "A prime number is a whole number greater than 1 whose only divisors are 1 and "
            "itself, such as 2, 3, 5 and 7."
        ),
    ),
)

GREEDY = TurnOptions(max_tokens=256, temperature=0.0)


# ---- critique and revision (SL-CAI) ----


def critique_prompt(
    prompt: Prompt,
    response: str,
    principle: Principle,
    examples: Sequence[FewShotExample] = EXAMPLES,
) -> chat.Conversation:
    """The conversation whose next assistant turn is a critique of `response` to `prompt`."""
    return _continued(prompt, examples, [response, principle.critique_request], revision=False)


def revision_prompt(
    prompt: Prompt,
    response: str,
    critique_text: str,
    principle: Principle,
    examples: Sequence[FewShotExample] = EXAMPLES,
) -> chat.Conversation:
    """The conversation whose next assistant turn is `response` revised in the light of
    `critique_text`."""
    turns = [response, principle.critique_request, critique_text, principle.revision_request]
    return _continued(prompt, examples, turns, revision=True)


def critique(
    generator: Generator,
    exchanges: Sequence[tuple[Prompt, str]],
    principles: Principle | Sequence[Principle],
    *,
    examples: Sequence[FewShotExample] = EXAMPLES,
    options: TurnOptions = GREEDY,
    progress: str | None = None,
) -> list[str]:
    """A critique of each (prompt, response) under its principle (one for all, or one per
    exchange), in one `generate` call."""
    chosen = _one_each(principles, len(exchanges))
    conversations = [
        critique_prompt(prompt, response, principle, examples)
        for (prompt, response), principle in zip(exchanges, chosen, strict=True)
    ]
    return _texts(generator, conversations, options, progress)


def revise(
    generator: Generator,
    exchanges: Sequence[tuple[Prompt, str, str]],
    principles: Principle | Sequence[Principle],
    *,
    examples: Sequence[FewShotExample] = EXAMPLES,
    options: TurnOptions = GREEDY,
    progress: str | None = None,
) -> list[str]:
    """Each (prompt, response, critique)'s response revised under its principle (one for all,
    or one per exchange; the one its critique was asked under), in one `generate` call."""
    chosen = _one_each(principles, len(exchanges))
    conversations = [
        revision_prompt(prompt, response, critique_text, principle, examples)
        for (prompt, response, critique_text), principle in zip(exchanges, chosen, strict=True)
    ]
    return _texts(generator, conversations, options, progress)


def _continued(
    prompt: Prompt, examples: Sequence[FewShotExample], turns: list[str], *, revision: bool
) -> chat.Conversation:
    """The examples' turns, then `prompt`'s messages, then `turns` (assistant first, then
    alternating)."""
    conversation = as_conversation(prompt)
    shown: list[chat.Message] = []
    for example in examples:
        texts = [example.prompt, example.response, example.critique_request, example.critique]
        if revision:
            texts += [example.revision_request, example.revision]
        shown += [_message("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(texts)]
    ours = [_message("assistant" if i % 2 == 0 else "user", t) for i, t in enumerate(turns)]
    return chat.Conversation(
        [*shown, *conversation.messages, *ours], conversation.system, conversation.tools
    )


def _texts(
    generator: Generator,
    conversations: list[chat.Conversation],
    options: TurnOptions,
    progress: str | None,
) -> list[str]:
    turns = generator.generate([TurnRequest(c, options) for c in conversations], progress)
    return [turn.text for turn in turns]


# ---- comparisons (RL-CAI) ----


@dataclass(frozen=True)
class Comparison:
    """Two responses to one prompt, to be judged."""

    prompt: Prompt
    response_a: str
    response_b: str


@dataclass(frozen=True)
class OrderJudgement:
    """The feedback model's answer to one question in one order."""

    a_first: bool  # was response A shown as option (A)?
    p_options: tuple[float, float]  # P(option (A)), P(option (B)); they sum to 1
    logprobs: tuple[float, float] | None = None  # each option's total log-probability
    votes: tuple[int, int] | None = None  # votes for (A) and (B)
    unparsed: int = 0  # votes that chose neither option
    reasonings: tuple[str, ...] = ()  # with chain of thought: the reasoning, or each vote's

    @property
    def p_a(self) -> float:
        """P(response A is better), whichever option it was shown as."""
        return self.p_options[0 if self.a_first else 1]


@dataclass(frozen=True)
class PrincipleJudgement:
    principle: str
    orders: tuple[OrderJudgement, OrderJudgement]  # A shown first, then B shown first

    @property
    def p_a(self) -> float:
        """P(response A is better) under this principle, both orders averaged."""
        return sum(order.p_a for order in self.orders) / len(self.orders)


@dataclass(frozen=True)
class ComparisonResult:
    p_a: float  # P(response A is better): averaged over orders and principles, then clamped
    judgements: tuple[PrincipleJudgement, ...]
    method: Literal["logprobs", "votes"]

    @property
    def per_principle(self) -> dict[str, float]:
        return {j.principle: j.p_a for j in self.judgements}

    @property
    def unparsed_votes(self) -> int:
        return sum(order.unparsed for j in self.judgements for order in j.orders)


# A question to the feedback model, and whether response A is its option (A).
Question = tuple[chat.Conversation, bool]


def comparison_prompt(
    prompt: Prompt, first: str, second: str, principle: Principle, reasoning: bool = False
) -> chat.Conversation:
    """The multiple-choice question: `first` is option (A), `second` option (B); with
    `reasoning`, the model is asked to think before it answers."""
    answer = f"Answer with {OPTIONS[0]} or {OPTIONS[1]} only."
    if reasoning:
        answer = (
            "Think it through step by step first, then finish with "
            f'"{ANSWER_CUE} {OPTIONS[0]}" or "{ANSWER_CUE} {OPTIONS[1]}".'
        )
    text = (
        "Here is a conversation between a user and an AI assistant, followed by two candidate "
        "replies for the assistant's next turn.\n\n"
        f"{transcript(as_conversation(prompt))}\n\n"
        f"{principle.comparison_question}\n\n"
        f"{OPTIONS[0]} {first}\n\n"
        f"{OPTIONS[1]} {second}\n\n"
        f"{answer}"
    )
    return chat.Conversation([_message("user", text)])


def compare(
    generator: Generator,
    comparisons: Sequence[Comparison],
    principles: Sequence[Principle] | Sequence[Sequence[Principle]],
    *,
    method: Literal["auto", "logprobs", "votes"] = "auto",
    votes: int = 8,
    temperature: float = 1.0,
    max_tokens: int = 16,
    seed: int = 0,
    reasoning_tokens: int | None = None,
    clamp: tuple[float, float] | None = None,
    progress: str | None = None,
) -> list[ComparisonResult]:
    """P(response A is better) for each comparison under its principles (one list for all, or
    one list per comparison), in one `score` call or one `generate` call of `votes` samples per
    question; with `reasoning_tokens`, the model first reasons in up to that many tokens (see
    the module docstring)."""
    if method not in ("auto", LOGPROBS, VOTES):
        raise ValueError(f"method must be auto, logprobs or votes, got {method!r}")
    if votes < 1:
        raise ValueError(f"votes must be ≥ 1, got {votes}")
    if reasoning_tokens is not None and reasoning_tokens < 1:
        raise ValueError(f"reasoning_tokens must be ≥ 1, got {reasoning_tokens}")
    if clamp is not None and not 0 <= clamp[0] <= clamp[1] <= 1:
        raise ValueError(f"clamp must be (low, high) with 0 ≤ low ≤ high ≤ 1, got {clamp}")
    chosen = _lists_each(principles, len(comparisons))
    if not comparisons:
        return []
    reasoning = reasoning_tokens is not None
    # Every question, flat: per comparison, per principle, A shown first then B shown first.
    questions = [
        question
        for c, ps in zip(comparisons, chosen, strict=True)
        for p in ps
        for question in (
            (comparison_prompt(c.prompt, c.response_a, c.response_b, p, reasoning), True),
            (comparison_prompt(c.prompt, c.response_b, c.response_a, p, reasoning), False),
        )
    ]
    used, answers = VOTES, None
    if method != VOTES:
        try:
            if reasoning and method == "auto":  # learn whether it scores before reasoning
                generator.score([ScoreRequest(questions[0][0], [chat.TextBlock(OPTIONS[0])])])
            answers = _by_logprobs(generator, questions, reasoning_tokens, progress)
            used = LOGPROBS
        except ScoringUnsupported:
            if method == LOGPROBS:
                raise
    if answers is None:
        answers = _by_votes(
            generator, questions, votes, temperature, max_tokens, seed, reasoning_tokens, progress
        )
    results, next_answer = [], iter(answers)
    for ps in chosen:
        judgements = tuple(
            PrincipleJudgement(p.name, (next(next_answer), next(next_answer))) for p in ps
        )
        p_a = sum(j.p_a for j in judgements) / len(judgements)
        if clamp is not None:
            p_a = min(max(p_a, clamp[0]), clamp[1])
        results.append(ComparisonResult(p_a, judgements, used))
    return results


def _by_logprobs(
    generator: Generator,
    questions: list[Question],
    reasoning_tokens: int | None,
    progress: str | None,
) -> list[OrderJudgement]:
    # With chain of thought, the reasoning (greedy, up to the answer cue) starts both replies;
    # its tokens score the same in both, so it cancels in the softmax and only conditions it.
    reasonings: list[str] = []
    if reasoning_tokens is not None:
        options = TurnOptions(reasoning_tokens, temperature=0.0, stop_sequences=[ANSWER_CUE])
        requests = [TurnRequest(q, options) for q, _ in questions]
        reasonings = [turn.text for turn in generator.generate(requests, progress)]
    starts = [f"{r.rstrip()}\n\n{ANSWER_CUE} " for r in reasonings] or [""] * len(questions)
    scored = [
        ScoreRequest(q, [chat.TextBlock(start + option)])
        for (q, _), start in zip(questions, starts, strict=True)
        for option in OPTIONS
    ]
    totals = [s.total for s in generator.score(scored)]
    judgements = []
    for number, (_, a_first) in enumerate(questions):
        pair = (totals[2 * number], totals[2 * number + 1])
        shown = tuple(reasonings[number : number + 1])
        judgements.append(
            OrderJudgement(a_first, softmax2(*pair), logprobs=pair, reasonings=shown)
        )
    return judgements


def _by_votes(
    generator: Generator,
    questions: list[Question],
    votes: int,
    temperature: float,
    max_tokens: int,
    seed: int,
    reasoning_tokens: int | None,
    progress: str | None,
) -> list[OrderJudgement]:
    reasoning = reasoning_tokens is not None
    length = max_tokens + (reasoning_tokens or 0)
    requests = [
        TurnRequest(
            q, TurnOptions(max_tokens=length, temperature=temperature, seed=seed + i * votes + k)
        )
        for i, (q, _) in enumerate(questions)
        for k in range(votes)
    ]
    texts = [turn.text for turn in generator.generate(requests, progress)]
    # Reasoning weighs both options; only what follows its last answer cue is the vote.
    choices = [parse_choice(_after_cue(t) if reasoning else t) for t in texts]
    judgements = []
    for (_, a_first), i in zip(questions, range(0, len(choices), votes), strict=True):
        asked = choices[i : i + votes]
        count = (asked.count(0), asked.count(1))
        parsed = sum(count)
        shares = (count[0] / parsed, count[1] / parsed) if parsed else (0.5, 0.5)
        shown = tuple(texts[i : i + votes]) if reasoning else ()
        judgements.append(
            OrderJudgement(a_first, shares, votes=count, unparsed=votes - parsed, reasonings=shown)
        )
    return judgements


def _after_cue(text: str) -> str:
    """What follows the last answer cue; nothing where the reasoning never reached one."""
    at = text.lower().rfind(ANSWER_CUE.lower())
    return text[at + len(ANSWER_CUE) :] if at >= 0 else ""


# "(A)", "( b )": the option as offered.
_BRACKETED = re.compile(r"\(\s*([AB])\s*\)", re.IGNORECASE)
# A reply that is only the letter, perhaps after "Answer:", "Option", "The answer is".
_BARE = re.compile(
    r"^\W*(?:(?:the\s+)?(?:best\s+|better\s+)?(?:answer|option|reply|choice)(?:\s+is)?\W*)?"
    r"([AB])\W*$",
    re.IGNORECASE,
)


def parse_choice(text: str) -> int | None:
    """The option a reply chooses: 0 for (A), 1 for (B), None where it names neither or both."""
    letters = {m.upper() for m in _BRACKETED.findall(text)}
    if not letters:
        bare = _BARE.match(text.strip())
        letters = {bare.group(1).upper()} if bare else set()
    return "AB".index(letters.pop()) if len(letters) == 1 else None


def softmax2(x: float, y: float) -> tuple[float, float]:
    """(e^x, e^y) normalised, computed without overflow for any gap."""
    d = y - x
    p_x = 1 / (1 + math.exp(d)) if d <= 0 else math.exp(-d) / (1 + math.exp(-d))
    return p_x, 1 - p_x


# ---- shared ----


def as_conversation(prompt: Prompt) -> chat.Conversation:
    if isinstance(prompt, str):
        return chat.Conversation([_message("user", prompt)])
    if not prompt.messages or prompt.messages[-1].role != "user":
        raise ValueError("a prompt must be a conversation that ends with the user's turn")
    return prompt


def transcript(conversation: chat.Conversation) -> str:
    """The conversation as plain text, for a judge to read; text blocks only."""
    lines = [f"System: {conversation.system}"] if conversation.system else []
    for number, message in enumerate(conversation.messages, 1):
        for block in message.content:
            if block.type != "text":
                raise ValueError(
                    f"message {number} has a {block.type} block; a comparison shows text only"
                )
        text = chat.BLOCK_SEPARATOR.join(b.text for b in message.content)
        lines.append(f"{message.role.capitalize()}: {text}")
    return "\n\n".join(lines)


def _message(role: Literal["user", "assistant"], text: str) -> chat.Message:
    return chat.Message(role, [chat.TextBlock(text)])


def _one_each(principles: Principle | Sequence[Principle], n: int) -> list[Principle]:
    if isinstance(principles, Principle):
        return [principles] * n
    if len(principles) != n:
        raise ValueError(f"{len(principles)} principles for {n} requests: give one, or one each")
    return list(principles)


def _lists_each(
    principles: Sequence[Principle] | Sequence[Sequence[Principle]], n: int
) -> list[list[Principle]]:
    if not principles:
        raise ValueError("a comparison needs at least one principle")
    if all(isinstance(p, Principle) for p in principles):
        return [list(principles)] * n
    if len(principles) != n:
        raise ValueError(
            f"{len(principles)} lists of principles for {n} comparisons: give one list for all, "
            "or one list each"
        )
    lists = [list(ps) for ps in principles]
    for number, ps in enumerate(lists, 1):
        if not ps or not all(isinstance(p, Principle) for p in ps):
            raise ValueError(f"comparison {number}: give a non-empty list of principles")
    return lists
