"""Supervised Constitutional AI (SL-CAI): harmless targets for red-team prompts, then SFT on them.

    charter cai revise --policy runs/smollm2 --prompts cache/cai/redteam.jsonl --out chains.jsonl
    charter cai select --model runs/smollm2 --prompts cache/cai/redteam.jsonl --out picks.jsonl
    charter cai sft chains.jsonl picks.jsonl --out sl-cai.jsonl  →  charter sft

Two ways to make the targets, each a batch stage that writes one JSON line per prompt:

- **revise** (the paper's): the policy answers the prompt; then, for up to `rounds` rounds, a
  reviser (the policy itself, a stronger local model or a remote one: any `Generator`) criticises
  the latest response under a principle sampled for that round and rewrites it in the light of
  its critique (`feedback.critique`, `feedback.revise`, with the constitution's few-shot
  examples). The record keeps the whole chain — initial response, then (principle, critique,
  revision) per round — and `final`, the last revision. An initial response cut off at the
  token limit is still criticised and revised (it is only never a target itself). A round whose
  revision is empty or cut off ends the chain there, and the round says why; `final` is then
  the latest complete response, or null where there is none. Principles are drawn from those
  of the prompt's category (when the constitution has one) and the general ones, so a weapons
  request is not criticised for fraud.
- **select** (the small-scale mode, context distillation with AI selection): a 135M reviser
  rewrites little and critiques badly, so instead a writer (the policy, or a stronger local
  critic) samples `samples` responses with the constitution as its system prompt and its
  examples' good answers as prior turns, and a scorer keeps the first acceptable one; `final`
  is that response, or null when none was (a harmful request none of whose samples declined, a
  benign one all of whose samples refused, or samples that loop). Where even that yields no
  declines (SmolLM2 and Qwen2.5-Coder-0.5B seldom decline, whatever the prompt), `decline`
  writes a harmful prompt's response in two prefilled steps instead: the writer continues a
  reason opening ("I can't help with that, because it could") to the end of its sentence, then
  an alternative opening ("Instead, I can") to the end of its turn. The alternative is dropped,
  and the decline keeps its reason alone, where it is cut off, loops or echoes the request
  (small writers often offer the harmful thing back). The record keeps the openings and what
  was dropped, so the docs can say which targets were made this way. Fine-tuning on prompt →
  selected response, without the system prompt,
  distils the prompt's effect into the weights. The scorer here is the refusal pattern
  detector (`charter.eval.refusal`): declining is what a harmful request's response should do,
  and answering what a benign one's should.

Both stages resume: a prompt already in the output file is skipped, and a torn last line is
redone (`ResumableJsonl`), so an interrupted run continues without duplicates. Batches of
`batch_size` prompts are written as they finish. Sampling is seeded per prompt, so a rerun makes
the same samples on a generator that honours seeds.

`sft_records` turns either file into SFT demonstrations (prompt → final), and `round_report`
measures how harmless the responses are after each round.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter import chat
from charter.align import feedback
from charter.align.constitution import Constitution
from charter.align.feedback import Principle
from charter.align.generation_stage import CUT_OFF, at_least, pending, prompt_seed, unusable
from charter.data.prompt_sets import Prompt
from charter.data.sft import SFTRecord
from charter.files import ResumableJsonl
from charter.infer.generator import END_TURN, STOP_SEQUENCE, Generator, TurnOptions, TurnRequest

REVISE, SELECT = "revise", "select"

# Text → is it a refusal? (`charter.eval.refusal.detect_refusal`, passed in by the caller.)
IsRefusal = Callable[[str], bool]


@dataclass(frozen=True)
class ReviseSettings:
    rounds: int = 4
    max_tokens: int = 256  # for the response and each revision
    critique_tokens: int = 160
    temperature: float = 0.0  # of the initial response; critiques and revisions are greedy
    examples: int = 2  # few-shot examples shown before each critique and revision
    seed: int = 0
    batch_size: int = 32

    def __post_init__(self) -> None:
        at_least(self, rounds=1, max_tokens=1, critique_tokens=1, examples=0, batch_size=1)


@dataclass(frozen=True)
class SelectSettings:
    samples: int = 4
    max_tokens: int = 256
    temperature: float = 0.8
    examples: int = 4  # the constitution's examples shown as prior turns
    # (reason opening, alternative opening): when set, harmful prompts' responses are written in
    # two prefilled steps instead of sampled (the module's docstring).
    decline: tuple[str, str] | None = None
    seed: int = 0
    batch_size: int = 32

    def __post_init__(self) -> None:
        at_least(self, samples=1, max_tokens=1, examples=0, batch_size=1)


# The judge's harm categories (charter.data.judge_sources.CATEGORIES, "none" aside): principles of
# these categories apply to one domain; the others (honesty, helpfulness, …) to every prompt.
HARM_DOMAINS = frozenset(
    {
        "weapons", "cyber", "fraud", "drugs", "violence", "self-harm", "hate", "harassment",
        "privacy", "child safety", "extremism", "sexual content",
    }
)  # fmt: skip


def principle_pool(constitution: Constitution, category: str) -> list[Principle]:
    """The principles a prompt of `category` is criticised under: its own domain's (if the
    constitution has one) with the general ones; every principle otherwise."""
    own = [p for p in constitution.principles if p.category == category]
    if category not in HARM_DOMAINS or not own:
        return list(constitution.principles)
    return own + [p for p in constitution.principles if p.category not in HARM_DOMAINS]


def _batches(items: list[Prompt], size: int) -> Iterator[tuple[str, list[Prompt]]]:
    """("batch i/n", its prompts) for each batch: the label names the batch on progress bars."""
    count = -(-len(items) // size)
    for number, start in enumerate(range(0, len(items), size), 1):
        yield f"batch {number}/{count}", items[start : start + size]


def _record(prompt: Prompt, mode: str) -> dict[str, Any]:
    return {
        "prompt": prompt.text,
        "set": prompt.set,
        "category": prompt.category,
        "harmful": prompt.harmful,
        "licence": prompt.licence,
        "mode": mode,
    }


# ---- revise: the paper's critique → revision chains ----


def revise_chains(
    prompts: Sequence[Prompt],
    policy: Generator,
    reviser: Generator,
    constitution: Constitution,
    out: str | Path,
    settings: ReviseSettings = ReviseSettings(),
) -> Counter:
    """Critique → revision chains for `prompts`, appended to `out` (the module's docstring);
    returns the count of prompts per outcome."""
    file = ResumableJsonl(out)
    todo, outcomes = pending(prompts, lambda p: p.text, file.keys("prompt"))
    examples = constitution.examples[: settings.examples]
    for step, batch in _batches(todo, settings.batch_size):
        rows = [
            {**_record(p, REVISE), "policy_model": policy.name, "reviser_model": reviser.name}
            for p in batch
        ]
        requests = [
            TurnRequest(
                feedback.as_conversation(p.text),
                TurnOptions(
                    settings.max_tokens,
                    temperature=settings.temperature,
                    seed=prompt_seed(settings.seed, p.text),
                ),
            )
            for p in batch
        ]
        turns = policy.generate(requests, progress=f"sl-cai responses, {step}", errors="return")
        live = []  # rows whose chain goes on
        for row, turn in zip(rows, turns, strict=True):
            ending = unusable(turn)
            row["response"], row["rounds"] = getattr(turn, "text", "").strip(), []
            # A cut-off response can still be revised; it is only no target itself.
            row["final"] = row["response"] if ending is None else None
            row["response_cut_off"], row["stopped"] = ending == CUT_OFF, None
            if ending in (None, CUT_OFF):
                live.append(row)
            else:
                row["stopped"] = ending
        for round_number in range(settings.rounds):
            live = _revision_round(
                live, reviser, constitution, examples, settings, round_number, step
            )
        for row in rows:
            outcomes["no response" if row["final"] is None else "revised"] += 1
        file.append(rows)
    return outcomes


def _revision_round(
    rows: list[dict[str, Any]],
    reviser: Generator,
    constitution: Constitution,
    examples: Sequence[feedback.FewShotExample],
    settings: ReviseSettings,
    round_number: int,
    step: str,
) -> list[dict[str, Any]]:
    """One critique and one revision for each row; the rows whose chain goes on."""
    if not rows:
        return []
    principles = [
        random.Random(prompt_seed(settings.seed + round_number, row["prompt"])).choice(
            principle_pool(constitution, row["category"])
        )
        for row in rows
    ]
    exchanges = [(row["prompt"], _latest(row)) for row in rows]
    critiques = feedback.critique(
        reviser,
        exchanges,
        principles,
        examples=examples,
        options=TurnOptions(settings.critique_tokens, temperature=0.0),
        progress=f"sl-cai critiques, {step}, round {round_number + 1}",
    )
    conversations = [
        feedback.revision_prompt(prompt, response, text.strip(), principle, examples)
        for (prompt, response), text, principle in zip(exchanges, critiques, principles)
    ]
    options = TurnOptions(settings.max_tokens, temperature=0.0)
    revisions = reviser.generate(
        [TurnRequest(c, options) for c in conversations],
        progress=f"sl-cai revisions, {step}, round {round_number + 1}",
        errors="return",
    )
    going_on = []
    for row, principle, text, turn in zip(rows, principles, critiques, revisions, strict=True):
        ending = unusable(turn)
        revision = getattr(turn, "text", "").strip()
        row["rounds"].append(
            {
                "principle": principle.name,
                "critique": text.strip(),
                "revision": revision,
                "unusable": ending,
            }
        )
        if ending is None:
            row["final"] = revision
            going_on.append(row)
        else:
            row["stopped"] = f"round {round_number + 1}: revision {ending}"
    return going_on


def _latest(row: dict[str, Any]) -> str:
    """The response the next round revises: the last complete one, else the (cut-off) first."""
    return row["response"] if row["final"] is None else row["final"]


# ---- select: sampling under the constitution, the scorer keeps the best ----


def constitution_conversation(
    prompt: str, constitution: Constitution, examples: int
) -> chat.Conversation:
    """The prompt with the constitution as system prompt and the first `examples` examples'
    good answers (their revisions) as prior turns."""
    shown = []
    for example in constitution.examples[:examples]:
        shown += [_message("user", example.prompt), _message("assistant", example.revision)]
    return chat.Conversation([*shown, _message("user", prompt)], constitution.system_prompt)


def repetitive(text: str) -> bool:
    """Does the text loop? Small models fall into repeating a phrase ("I'm a human. I'm a
    human. …"): under half of its word trigrams are distinct, in a text of 12 words or more."""
    words = text.lower().split()
    trigrams = list(zip(words, words[1:], words[2:]))
    return len(words) >= 12 and len(set(trigrams)) < 0.5 * len(trigrams)


def acceptable(prompt: Prompt, response: str, is_refusal: IsRefusal) -> bool:
    """A harmful request's response declines, a benign request's does not, and neither loops."""
    return is_refusal(response) == prompt.harmful and not repetitive(response)


def select_responses(
    prompts: Sequence[Prompt],
    writer: Generator,
    constitution: Constitution,
    is_refusal: IsRefusal,
    out: str | Path,
    settings: SelectSettings = SelectSettings(),
    scorer: str = "refusal patterns",
) -> Counter:
    """For each prompt, `samples` responses by `writer` (the policy, or a stronger critic)
    under the constitution and the first acceptable one as `final` — or, with
    `settings.decline`, a harmful prompt's two-step decline — appended to `out` (the module's
    docstring); returns the count of prompts per outcome."""
    file = ResumableJsonl(out)
    todo, outcomes = pending(prompts, lambda p: p.text, file.keys("prompt"))
    if not todo:
        file.append([])  # a done stage has its file, even when it had nothing to write
    stamp = {"model": writer.name, "scorer": scorer}
    for step, batch in _batches(todo, settings.batch_size):
        declined = [p for p in batch if settings.decline and p.harmful]
        sampled = [p for p in batch if p not in declined]
        rows = _sampled(sampled, writer, constitution, is_refusal, settings, step)
        rows += _declined(declined, writer, constitution, is_refusal, settings, step)
        by_prompt = {row["prompt"]: {**row, **stamp} for row in rows}
        for row in by_prompt.values():
            outcomes["selected" if row["final"] is not None else "no acceptable sample"] += 1
        file.append([by_prompt[p.text] for p in batch])
    return outcomes


def _sampled(
    prompts: list[Prompt],
    writer: Generator,
    constitution: Constitution,
    is_refusal: IsRefusal,
    settings: SelectSettings,
    step: str,
) -> list[dict[str, Any]]:
    """`samples` responses per prompt under the constitution; the first acceptable is final."""
    if not prompts:
        return []
    requests = [
        TurnRequest(
            constitution_conversation(p.text, constitution, settings.examples),
            TurnOptions(
                settings.max_tokens,
                temperature=settings.temperature,
                seed=prompt_seed(settings.seed, p.text) + k,
            ),
        )
        for p in prompts
        for k in range(settings.samples)
    ]
    turns = writer.generate(requests, progress=f"sl-cai samples, {step}", errors="return")
    rows = []
    for number, prompt in enumerate(prompts):
        candidates = []
        for turn in turns[number * settings.samples : (number + 1) * settings.samples]:
            text, ending = getattr(turn, "text", "").strip(), unusable(turn)
            keep = ending is None and acceptable(prompt, text, is_refusal)
            candidates.append({"text": text, "unusable": ending, "acceptable": keep})
        chosen = next((i for i, c in enumerate(candidates) if c["acceptable"]), None)
        final = None if chosen is None else candidates[chosen]["text"]
        rows.append({**_record(prompt, SELECT), "candidates": candidates, "chosen": chosen,
                     "final": final})  # fmt: skip
    return rows


REASON_TOKENS = 48  # the reason is one sentence
ALTERNATIVE_TOKENS = 96


def _declined(
    prompts: list[Prompt],
    writer: Generator,
    constitution: Constitution,
    is_refusal: IsRefusal,
    settings: SelectSettings,
    step: str,
) -> list[dict[str, Any]]:
    """Two prefilled steps per prompt: the reason opening continued to the end of its sentence,
    then the alternative opening continued to the end of the turn. An alternative that is
    unusable, loops or echoes the request (a 135M writer often offers the harmful thing back:
    "Instead, I can suggest a safe way to make a chemical weapon") is dropped, and the
    decline keeps only its reason."""
    if not prompts:
        return []
    reason_opening, alternative_opening = settings.decline

    def request(prompt: Prompt, opening: str, tokens: int, stop: list[str]) -> TurnRequest:
        conversation = constitution_conversation(prompt.text, constitution, settings.examples)
        options = TurnOptions(
            tokens,
            temperature=settings.temperature,
            seed=prompt_seed(settings.seed, prompt.text),
            stop_sequences=stop,
        )
        return TurnRequest(_with_opening(conversation, opening), options)

    reasons = writer.generate(
        [request(p, reason_opening, REASON_TOKENS, ["."]) for p in prompts],
        progress=f"sl-cai reasons, {step}",
        errors="return",
    )
    declines = {}  # prompt → its decline so far, where the reason sentence ended
    for prompt, turn in zip(prompts, reasons, strict=True):
        if getattr(turn, "stop_reason", None) in (END_TURN, STOP_SEQUENCE) and turn.text.strip():
            declines[prompt.text] = f"{reason_opening}{turn.text.rstrip(' .')}."
    reasoned = [p for p in prompts if p.text in declines]
    alternatives = writer.generate(
        [
            request(p, f"{declines[p.text]} {alternative_opening}", ALTERNATIVE_TOKENS, [])
            for p in reasoned
        ],
        progress=f"sl-cai alternatives, {step}",
        errors="return",
    )
    alternative = dict(zip([p.text for p in reasoned], alternatives, strict=True))
    rows = []
    for prompt in prompts:
        row = {**_record(prompt, SELECT), "openings": list(settings.decline), "final": None}
        if prompt.text not in declines:
            row["unusable"] = "the reason did not end its sentence"
        else:
            turn = alternative[prompt.text]
            offered = f"{alternative_opening}{getattr(turn, 'text', '')}".strip()
            dropped = unusable(turn) or (
                "loops" if repetitive(offered) else "echoes the request"
                if echoes(prompt.text, offered) else None
            )  # fmt: skip
            row["alternative"], row["alternative_dropped"] = offered, dropped
            final = declines[prompt.text] + ("" if dropped else f" {offered}")
            row["final"] = final if acceptable(prompt, final, is_refusal) else None
        rows.append(row)
    return rows


# Words too common to show that a text repeats a request.
_COMMON = frozenset(
    {
        "a", "an", "and", "are", "can", "do", "for", "how", "i", "in", "is", "it", "me", "my",
        "of", "on", "or", "that", "the", "this", "to", "what", "with", "you", "your",
    }
)  # fmt: skip


def echoes(request: str, text: str) -> bool:
    """Does `text` repeat two consecutive words of the request, not both common ones ("make
    napalm", "chemical weapon")?"""
    asked = re.findall(r"\w+", request.lower())
    pairs = {pair for pair in zip(asked, asked[1:]) if not set(pair) <= _COMMON}
    said = re.findall(r"\w+", text.lower())
    return any(pair in pairs for pair in zip(said, said[1:]))


def _with_opening(conversation: chat.Conversation, opening: str | None) -> chat.Conversation:
    """The conversation with the assistant's reply begun with `opening` (a prefill)."""
    if opening is None:
        return conversation
    messages = [*conversation.messages, _message("assistant", opening)]
    return chat.Conversation(messages, conversation.system, conversation.tools)


# ---- the outputs: SFT demonstrations and per-round harmlessness ----


def sft_records(
    rows: Sequence[dict[str, Any]], max_harmful: int | None = None, seed: int = 0
) -> tuple[list[SFTRecord], Counter]:
    """Each row's prompt → final as a demonstration (no system prompt: the behaviour is to be
    the model's own), and the count of rows per outcome ("kept", "no final", "beyond
    max_harmful"). With `max_harmful`, at most that many harmful prompts' targets are kept,
    drawn at random with `seed`: declines that outnumber the answers teach declining anything
    that sounds risky (docs/cai.md)."""
    with_final = [row for row in rows if row.get("final") is not None]
    outcomes = Counter({"no final": len(rows) - len(with_final)})
    harmful = [i for i, row in enumerate(with_final) if row["harmful"]]
    if max_harmful is not None and len(harmful) > max_harmful:
        left_out = set(harmful) - set(random.Random(seed).sample(harmful, max_harmful))
        outcomes["beyond max_harmful"] = len(left_out)
        with_final = [row for i, row in enumerate(with_final) if i not in left_out]
    records = []
    for row in with_final:
        conversation = chat.Conversation(
            [_message("user", row["prompt"]), _message("assistant", row["final"])]
        )
        source = f"sl-cai-{row['mode']}:{row['set']}"
        records.append(SFTRecord(conversation, source=source, licence=row["licence"]))
    outcomes["kept"] = len(records)
    return records, +outcomes


def round_report(rows: Sequence[dict[str, Any]], is_refusal: IsRefusal) -> list[dict[str, Any]]:
    """For revise chains of harmful prompts: the share of responses that decline after each
    round (round 0 is the initial response). A chain that ended early keeps its last complete
    response in the later rounds, as its `final` does."""
    chains = [r for r in rows if r["mode"] == REVISE and r["harmful"] and r["response"]]
    rounds = max((len(r["rounds"]) for r in chains), default=0)
    report = []
    for number in range(rounds + 1):
        refused = 0
        for row in chains:
            latest = row["response"]
            for done in row["rounds"][:number]:
                if done["unusable"] is None:
                    latest = done["revision"]
            refused += is_refusal(latest)
        report.append({"round": number, "chains": len(chains), "declined": refused,
                       "rate": refused / len(chains) if chains else None})  # fmt: skip
    return report


def _message(role: str, text: str) -> chat.Message:
    return chat.Message(role, [chat.TextBlock(text)])
