"""Synthetic demonstrations with checkable answers, for SFT and its held-out evaluation.

Tasks (the `task` field of each record; `answer` is what its checker in `charter.tasks.checks`
compares the final response to):

    arithmetic     two-step arithmetic, with the worked steps as thinking
    calculator     3-digit multiplication through a `calculator` tool call, result fed back
    units          unit conversion
    definitions    word definitions from WordNet glosses
    format_list    a bulleted list in a required format
    format_json    a JSON object with required keys, and nothing else
    format_word    a one-word answer
    multi_turn     a question about something the user said turns earlier

Each task has train and held-out prompt templates, disjoint, so held-out accuracy measures the
skill rather than memory of the wording; words for `definitions` are split between the two as
well. Every demonstration carries short thinking; `thinking_fraction` keeps it in that share of
the records and removes it from the rest, so the model learns both sides of the thinking toggle.
"""

from __future__ import annotations

import json
import random
import re
import string
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from charter.chat import (
    Conversation,
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
)
from charter.data.sft import CHARTER_LICENCE, SFTRecord, jsonl_lines
from charter.tasks.tools import CALCULATOR

SPLITS = ("train", "heldout")

# ---- building conversations ----


def _tool_use_id(rng: random.Random) -> str:
    return "toolu_" + "".join(rng.choices(string.ascii_letters + string.digits, k=24))


def _demonstration(
    question: str, thinking: str, answer_text: str, history: list[Message] | None = None
) -> Conversation:
    messages = list(history or [])
    messages.append(Message("user", [TextBlock(question)]))
    messages.append(Message("assistant", [ThinkingBlock(thinking), TextBlock(answer_text)]))
    return Conversation(messages)


def _times(a: int, b: int) -> str:
    """`a * b` worked out by place value, for thinking: 68 * 7 = 60 * 7 + 8 * 7 = 420 + 56 = 476."""
    if a < 10 or b >= 10:
        return f"{a} * {b} = {a * b}"
    tens, ones = a - a % 10, a % 10
    return f"{a} * {b} = {tens} * {b} + {ones} * {b} = {tens * b} + {ones * b} = {a * b}"


# ---- tasks ----


@dataclass
class Task:
    name: str
    templates: dict[str, list]  # split → prompt templates (disjoint between splits)
    build: Callable[[random.Random, object, list[tuple[str, str]]], tuple[Conversation, str]]


def _arithmetic(rng: random.Random, template: str, glossary) -> tuple[Conversation, str]:
    a, b, c = rng.randint(10, 99), rng.randint(10, 99), rng.randint(2, 9)
    form = rng.randrange(3)
    if form == 0:
        expression, first, result = f"({a} + {b}) * {c}", a + b, (a + b) * c
        steps = f"First, {a} + {b} = {first}.\nThen, {_times(first, c)}."
    elif form == 1:
        expression, first, result = f"{a} * {c} + {b}", a * c, a * c + b
        steps = f"Multiplication comes first: {_times(a, c)}.\nThen, {first} + {b} = {result}."
    else:
        a, b = max(a, b), min(a, b)
        expression, first, result = f"({a} - {b}) * {c}", a - b, (a - b) * c
        steps = f"First, {a} - {b} = {first}.\nThen, {_times(first, c)}."
    question = template.format(expr=expression)
    return _demonstration(question, steps, f"{expression} = {result}."), str(result)


def _calculator(rng: random.Random, template: str, glossary) -> tuple[Conversation, str]:
    a, b = rng.randint(100, 999), rng.randint(100, 999)
    product, call_id = a * b, _tool_use_id(rng)
    call = ToolUseBlock(call_id, "calculator", {"expression": f"{a} * {b}"})
    messages = [
        Message("user", [TextBlock(template.format(a=a, b=b))]),
        Message(
            "assistant",
            [ThinkingBlock("Two 3-digit numbers: the calculator gives the exact product."), call],
        ),
        Message("user", [ToolResultBlock(call_id, str(product))]),
        Message(
            "assistant",
            [
                ThinkingBlock(f"The calculator returned {product}."),
                TextBlock(f"{a} * {b} = {product}."),
            ],
        ),
    ]
    return Conversation(messages, tools=[CALCULATOR]), str(product)


# (plural, singular, target unit, factor)
_CONVERSIONS = [
    ("kilometres", "kilometre", "metres", 1000),
    ("metres", "metre", "centimetres", 100),
    ("kilograms", "kilogram", "grams", 1000),
    ("tonnes", "tonne", "kilograms", 1000),
    ("litres", "litre", "millilitres", 1000),
    ("hours", "hour", "minutes", 60),
    ("minutes", "minute", "seconds", 60),
    ("days", "day", "hours", 24),
    ("weeks", "week", "days", 7),
    ("feet", "foot", "inches", 12),
    ("yards", "yard", "feet", 3),
    ("gallons", "gallon", "quarts", 4),
]


def _units(rng: random.Random, template: str, glossary) -> tuple[Conversation, str]:
    unit, singular, target, factor = rng.choice(_CONVERSIONS)
    n = rng.randint(2, 99)
    result = n * factor
    thinking = f"1 {singular} = {factor} {target}, so {n} {unit} = {n} * {factor} = {result}."
    question = template.format(n=n, unit=unit, target=target)
    answer_text = f"{n} {unit} is {result} {target}."
    return _demonstration(question, thinking, answer_text), str(result)


def _definitions(rng: random.Random, template: str, glossary) -> tuple[Conversation, str]:
    word, definition = rng.choice(glossary)
    thinking = f'The user wants the meaning of "{word}".'
    answer_text = f"{word[0].upper()}{word[1:]}: {definition}."
    return _demonstration(template.format(word=word), thinking, answer_text), definition


# (what the list is of, its items in order)
_SEQUENCES = [
    (
        "months of the year",
        [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ],
    ),
    (
        "days of the week, starting on Monday",
        ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    ),
    (
        "planets of the solar system, in order from the Sun",
        ["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn", "Uranus", "Neptune"],
    ),
    ("colours of the rainbow", ["red", "orange", "yellow", "green", "blue", "indigo", "violet"]),
    ("letters of the English alphabet", list(string.ascii_uppercase)),
    (
        "whole numbers written as words, starting at one",
        [
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
        ],
    ),
]


def _format_list(rng: random.Random, template: str, glossary) -> tuple[Conversation, str]:
    things, items = rng.choice(_SEQUENCES)
    k = rng.randint(2, 6)
    answer = "\n".join(f"- {item}" for item in items[:k])
    thinking = f'{k} items, one per line, each after "- ": {", ".join(items[:k])}.'
    return _demonstration(template.format(k=k, things=things), thinking, answer), answer


_NAMES = "Ada Omar Mei Lars Priya Tomas Amara Kenji Sofia Yusuf Elena Diego Nia Ivan Lucia Sam"
_CITIES = "Oslo Lima Porto Nairobi Hanoi Quito Dublin Tunis Perth Bergen Cusco Leeds Accra Riga"


def _format_json(rng: random.Random, template: str, glossary) -> tuple[Conversation, str]:
    person = {
        "name": rng.choice(_NAMES.split()),
        "age": rng.randint(18, 90),
        "city": rng.choice(_CITIES.split()),
    }
    keys = rng.choice([("name", "age"), ("name", "city"), ("name", "age", "city")])
    description = f"{person['name']}, {person['age']} years old, from {person['city']}"
    value = {key: person[key] for key in keys}
    key_list = ", ".join(f'"{key}"' for key in keys)
    answer = json.dumps(value)
    thinking = f"A JSON object with exactly the keys {key_list}, and nothing else."
    if "age" in keys:
        thinking += " The age is a number, not a string."
    question = template.format(keys=key_list, description=description)
    return _demonstration(question, thinking, answer), answer


_OPPOSITES = [
    ("hot", "cold"),
    ("big", "small"),
    ("fast", "slow"),
    ("up", "down"),
    ("open", "closed"),
    ("happy", "sad"),
    ("light", "dark"),
    ("early", "late"),
    ("full", "empty"),
    ("hard", "soft"),
    ("wet", "dry"),
    ("high", "low"),
    ("strong", "weak"),
    ("rich", "poor"),
    ("thick", "thin"),
    ("loud", "quiet"),
    ("inside", "outside"),
    ("first", "last"),
    ("win", "lose"),
    ("buy", "sell"),
    ("true", "false"),
    ("north", "south"),
    ("east", "west"),
    ("push", "pull"),
    ("old", "new"),
    ("long", "short"),
    ("clean", "dirty"),
    ("day", "night"),
    ("alive", "dead"),
    ("near", "far"),
]


def _format_word(rng: random.Random, template: str, glossary) -> tuple[Conversation, str]:
    word, opposite = rng.choice(_OPPOSITES)
    if rng.random() < 0.5:
        word, opposite = opposite, word
    thinking = f"The opposite of {word} is {opposite}. One word only."
    return _demonstration(template.format(word=word), thinking, opposite), opposite


def _multi_turn(rng: random.Random, template: tuple, glossary) -> tuple[Conversation, str]:
    introduction, question, asked = template
    facts = {
        "name": rng.choice(_NAMES.split()),
        "city": rng.choice(_CITIES.split()),
        "number": str(rng.randint(10, 99)),
    }
    history = [
        Message("user", [TextBlock(introduction.format(**facts))]),
        Message("assistant", [TextBlock(f"Nice to meet you, {facts['name']}! Noted.")]),
    ]
    answer = facts[asked]
    thinking = f"Earlier in this conversation the user said their {asked} is {answer}."
    replies = {
        "name": f"Your name is {answer}.",
        "city": f"You said you live in {answer}.",
        "number": f"The number you gave me is {answer}.",
    }
    return _demonstration(question, thinking, replies[asked], history), answer


_INTRODUCTIONS = [
    "Hi! I'm {name}, I live in {city}, and my lucky number is {number}.",
    "Hello, my name is {name}. I'm from {city} and my favourite number is {number}.",
]


def _multi_turn_templates(questions: dict[str, list[str]]) -> list[tuple[str, str, str]]:
    return [
        (introduction, question, asked)
        for introduction in _INTRODUCTIONS
        for asked, asked_questions in questions.items()
        for question in asked_questions
    ]


TASKS = {
    task.name: task
    for task in [
        Task(
            "arithmetic",
            {
                "train": [
                    "What is {expr}?",
                    "Compute {expr}.",
                    "Calculate {expr}.",
                    "Evaluate {expr}.",
                    "What does {expr} equal?",
                ],
                "heldout": ["Work out {expr}.", "Find the value of {expr}.", "How much is {expr}?"],
            },
            _arithmetic,
        ),
        Task(
            "calculator",
            {
                "train": [
                    "What is {a} * {b}?",
                    "Multiply {a} by {b}.",
                    "Compute the product of {a} and {b}.",
                    "I need {a} times {b}.",
                ],
                "heldout": [
                    "What do you get when you multiply {a} and {b}?",
                    "Calculate {a} x {b}.",
                    "What's {a} times {b}?",
                ],
            },
            _calculator,
        ),
        Task(
            "units",
            {
                "train": [
                    "Convert {n} {unit} to {target}.",
                    "How many {target} are in {n} {unit}?",
                    "{n} {unit} is how many {target}?",
                ],
                "heldout": ["Express {n} {unit} in {target}.", "What is {n} {unit} in {target}?"],
            },
            _units,
        ),
        Task(
            "definitions",
            {
                "train": [
                    'What does the word "{word}" mean?',
                    'Define "{word}".',
                    "Give a short definition of {word}.",
                ],
                "heldout": [
                    'What is the meaning of "{word}"?',
                    'Explain what "{word}" means in one sentence.',
                ],
            },
            _definitions,
        ),
        Task(
            "format_list",
            {
                "train": [
                    'List the first {k} {things}, one per line, each starting with "- ".',
                    'Write the first {k} {things} as a list, one per line, with "- " before each.',
                ],
                "heldout": [
                    "Give me the first {k} {things} as a list with one item per line, "
                    'each beginning with "- ".'
                ],
            },
            _format_list,
        ),
        Task(
            "format_json",
            {
                "train": [
                    "Write a JSON object with the keys {keys} for this person: "
                    "{description}. Reply with the JSON only.",
                    "Give {description} as JSON with the keys {keys}, and nothing else.",
                ],
                "heldout": [
                    "Encode this person as a JSON object (keys: {keys}): {description}. "
                    "Output only the JSON."
                ],
            },
            _format_json,
        ),
        Task(
            "format_word",
            {
                "train": [
                    'What is the opposite of "{word}"? Answer with one word.',
                    "One word only: what is the opposite of {word}?",
                ],
                "heldout": ['Reply with a single word: what is the antonym of "{word}"?'],
            },
            _format_word,
        ),
        Task(
            "multi_turn",
            {
                "train": _multi_turn_templates(
                    {
                        "name": ["What's my name?"],
                        "city": ["Which city do I live in?"],
                        "number": ["What number did I mention?"],
                    }
                ),
                "heldout": _multi_turn_templates(
                    {
                        "name": ["Do you remember what I'm called?"],
                        "city": ["Remind me: where did I say I live?"],
                        "number": ["Which number did I tell you earlier?"],
                    }
                ),
            },
            _multi_turn,
        ),
    ]
}


# ---- definitions: WordNet glosses ----

# Used when no WordNet documents are given (`charter data fetch wordnet` writes them).
FALLBACK_GLOSSARY = [
    ("anchor", "a heavy object dropped from a ship to keep it from drifting"),
    ("bridge", "a structure that carries a road or path across a river or valley"),
    ("candle", "a stick of wax with a wick that gives light as it burns"),
    ("desert", "a dry region with little rain and few plants"),
    ("engine", "a machine that turns fuel into motion"),
    ("forest", "a large area covered mostly with trees"),
    ("glacier", "a slowly moving mass of ice on land"),
    ("harbor", "a sheltered stretch of water where ships can stay safely"),
    ("island", "a piece of land surrounded by water"),
    ("journal", "a written record of daily events"),
    ("kettle", "a metal pot with a spout for boiling water"),
    ("ladder", "a frame of two rails joined by rungs, used for climbing"),
    ("magnet", "a piece of metal that attracts iron"),
    ("needle", "a thin pointed tool with an eye, used for sewing"),
    ("orchard", "a piece of land planted with fruit trees"),
    ("pillow", "a soft cushion that supports the head in bed"),
    ("quarry", "a pit from which stone is dug"),
    ("river", "a large natural stream of flowing water"),
    ("saddle", "a seat fastened on the back of a horse for a rider"),
    ("telescope", "an instrument that makes distant objects look nearer"),
    ("umbrella", "a folding canopy that protects from rain"),
    ("valley", "a long low area of land between hills"),
    ("wallet", "a small flat case for carrying money and cards"),
    ("volcano", "a mountain through which lava and gas erupt"),
    ("whistle", "a small instrument that makes a high sound when blown"),
]

# "lash, thong (noun): leather strip…. For example: …" — one line per WordNet synset.
_WORDNET_LINE = re.compile(r"^(?P<words>[^()]+?) \((?P<pos>[a-z ]+)\): (?P<gloss>.+)$")


def wordnet_glossary(
    path: str | Path, max_length: int = 90, min_mentions: int = 20
) -> list[tuple[str, str]]:
    """(word, definition) pairs from the WordNet documents of `charter data fetch wordnet`: nouns
    that are one plain word, first sense only, with a short definition. WordNet has no word
    frequencies, so a word counts as common if other definitions use it `min_mentions` times."""
    entries: dict[str, str] = {}
    mentions: Counter[str] = Counter()
    for where, document in jsonl_lines(path):
        if not isinstance(document, dict) or not isinstance(document.get("text"), str):
            raise ValueError(f"{where}: expected a document with a string 'text'")
        for line in document["text"].splitlines():
            match = _WORDNET_LINE.match(line)
            if not match:
                continue
            definition = match["gloss"].split(". For example:")[0].rstrip(".").split("; ")[0]
            mentions.update(re.findall(r"[a-z]+", definition))
            word = match["words"].split(", ")[0]
            short = 10 <= len(definition) <= max_length
            if match["pos"] == "noun" and word.isalpha() and word.islower() and short:
                entries.setdefault(word, definition)
    glossary = sorted((w, d) for w, d in entries.items() if mentions[w] >= min_mentions)
    if not glossary:
        raise ValueError(f"{path}: no common WordNet nouns found")
    return glossary


def split_glossary(glossary: list[tuple[str, str]], split: str) -> list[tuple[str, str]]:
    """One word in five is held out, by a stable hash of the word."""
    held_out = [entry for entry in glossary if zlib.crc32(entry[0].encode()) % 5 == 0]
    return held_out if split == "heldout" else [e for e in glossary if e not in held_out]


# ---- generation ----


def without_thinking(conversation: Conversation) -> Conversation:
    messages = [
        Message(m.role, [b for b in m.content if not isinstance(b, ThinkingBlock)])
        for m in conversation.messages
    ]
    return Conversation(messages, conversation.system, conversation.tools)


def generate(
    split: str,
    n: int,
    seed: int = 0,
    tasks: list[str] | None = None,
    thinking_fraction: float = 0.5,
    glossary: list[tuple[str, str]] | None = None,
) -> list[SFTRecord]:
    """`n` demonstrations of `split`, cycling through `tasks` (default: all)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 <= thinking_fraction <= 1:
        raise ValueError(f"thinking_fraction must be in [0, 1], got {thinking_fraction}")
    names = tasks or list(TASKS)
    unknown = [name for name in names if name not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; choose from {sorted(TASKS)}")
    words = split_glossary(glossary or FALLBACK_GLOSSARY, split)
    rng = random.Random(f"{seed}:{split}")  # the two splits draw different numbers too
    records = []
    for i in range(n):
        task = TASKS[names[i % len(names)]]
        conversation, answer = task.build(rng, rng.choice(task.templates[split]), words)
        if rng.random() >= thinking_fraction:
            conversation = without_thinking(conversation)
        records.append(
            SFTRecord(
                conversation,
                task=task.name,
                answer=answer,
                source="synthetic",
                licence=CHARTER_LICENCE,
            )
        )
    return records
