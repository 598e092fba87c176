"""Self-distillation: a model's own replies to a set of prompts, written as SFT demonstrations.

Fine-tuning on a narrow synthetic mix teaches its format everywhere: after the first SmolLM2 run,
the model answered general questions in the terse "term: gloss." shape of the definitions task
(docs/sft.md). Mixing in replies the model wrote itself, before fine-tuning, to other questions
keeps its own voice on general questions, and what it knows with it.

    charter data distill --model runs/smollm2 \
        --prompts cache/sft/chatterbot.jsonl --exclude benign-qa.jsonl --out distilled.jsonl

Each prompt is a record's conversation up to its last user question (`SFTRecord.prompt`); the
record's own reply is replaced by the model's, asked through a `Generator` (so an imported model
answers in its own chat template; greedy unless a temperature is given). Prompts
whose question repeats an earlier one, or one in the excluded (evaluation) files, are left out;
so are replies that hit the token limit (a cut-off reply would teach stopping mid-sentence),
empty ones, and prompts the model cannot take (longer than its context). Every left-out prompt
is counted in the returned report.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

from charter.chat import Conversation, Message, TextBlock
from charter.data.sft import SFTRecord
from charter.infer.generator import END_TURN, Generator, InvalidRequest, TurnOptions, TurnRequest


def question_key(record: SFTRecord) -> str:
    """The last user question, lowercased, spaces collapsed, end punctuation dropped: two
    prompts with the same key ask the same thing."""
    question = record.prompt().messages[-1]
    text = " ".join(b.text for b in question.content if isinstance(b, TextBlock))
    return re.sub(r"\s+", " ", text.lower()).strip(" ?.!")


def distill(
    records: Iterable[SFTRecord],
    generator: Generator,
    options: TurnOptions,
    *,
    exclude: Sequence[SFTRecord] = (),
    source: str = "distilled",
) -> tuple[list[SFTRecord], Counter]:
    """The model's replies to the prompts of `records` as new records (`source` + ":" + the
    prompt's source), and the count of prompts per outcome: "kept", "duplicate", "excluded",
    "max_tokens" (or another stop reason than end_turn), "empty", "too_long"."""
    excluded = {question_key(r) for r in exclude}
    outcomes: Counter = Counter()
    chosen: dict[str, SFTRecord] = {}
    for record in records:
        key = question_key(record)
        if key in excluded:
            outcomes["excluded"] += 1
        elif key in chosen:
            outcomes["duplicate"] += 1
        else:
            chosen[key] = record
    prompts = [r.prompt() for r in chosen.values()]
    turns = generator.generate(
        [TurnRequest(p, options) for p in prompts], progress="distil", errors="return"
    )
    distilled = []
    for record, prompt, turn in zip(chosen.values(), prompts, turns, strict=True):
        if isinstance(turn, InvalidRequest):
            if turn.field != "messages":  # not the context: the model cannot take the prompt
                raise turn
            outcomes["too_long"] += 1
            continue
        reply = turn.text.strip()
        if turn.stop_reason != END_TURN:
            outcomes[turn.stop_reason] += 1
        elif not reply:
            outcomes["empty"] += 1
        else:
            outcomes["kept"] += 1
            answer = Message("assistant", [TextBlock(reply)])
            distilled.append(
                SFTRecord(
                    Conversation([*prompt.messages, answer], prompt.system, prompt.tools),
                    source=f"{source}:{record.source}" if record.source else source,
                    licence=record.licence,
                )
            )
    return distilled, outcomes
