"""A small benign general-knowledge QA set: does fine-tuning keep what the model already knew?

Forty short questions with one-word or one-number answers, written for Charter. A response is
correct when it contains the answer (case-insensitive; `check_contains`), so the set measures
knowledge, not formatting. `charter eval sft --data` takes the JSONL this writes
(`charter data benign-qa --out FILE`), before and after fine-tuning.
"""

from __future__ import annotations

from charter.chat import Conversation, Message, TextBlock
from charter.data.sft import CHARTER_LICENCE, SFTRecord

TASK = "benign_qa"

QUESTIONS = [
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Italy?", "Rome"),
    ("What is the capital of Germany?", "Berlin"),
    ("What is the capital of Spain?", "Madrid"),
    ("What is the capital of the United Kingdom?", "London"),
    ("What is the capital of Egypt?", "Cairo"),
    ("What is the capital of Russia?", "Moscow"),
    ("Which planet is known as the Red Planet?", "Mars"),
    ("What is the largest planet in our solar system?", "Jupiter"),
    ("Which planet is closest to the Sun?", "Mercury"),
    ("What star is at the centre of our solar system?", "Sun"),
    ("What is the chemical symbol for gold?", "Au"),
    ("What is the chemical symbol for water?", "H2O"),
    ("What gas do plants take in from the air to make food?", "carbon dioxide"),
    ("What gas do humans need to breathe to live?", "oxygen"),
    ("At what temperature in degrees Celsius does water freeze?", "0"),
    ("At what temperature in degrees Celsius does water boil at sea level?", "100"),
    ("How many days are in a week?", "7"),
    ("How many months are in a year?", "12"),
    ("How many legs does a spider have?", "8"),
    ("How many sides does a triangle have?", "3"),
    ("How many minutes are in an hour?", "60"),
    ("How many continents are there on Earth?", "7"),
    ("What is the largest ocean on Earth?", "Pacific"),
    ("What is the longest river in Africa?", "Nile"),
    ("What is the tallest mountain on Earth?", "Everest"),
    ("What is the largest mammal in the world?", "whale"),
    ("Which animal is known as the king of the jungle?", "lion"),
    ("What do bees make?", "honey"),
    ("What colour do you get by mixing blue and yellow?", "green"),
    ("What colour is the sky on a clear day?", "blue"),
    ("Who wrote the play Romeo and Juliet?", "Shakespeare"),
    ("Who painted the Mona Lisa?", "Leonardo"),
    ("Who developed the theory of relativity?", "Einstein"),
    ("What language is mainly spoken in Brazil?", "Portuguese"),
    ("What is the freezing point of water in degrees Fahrenheit?", "32"),
    ("What is the square root of 81?", "9"),
    ("What is 12 multiplied by 12?", "144"),
    ("What is the opposite of hot?", "cold"),
]


def benign_qa_records() -> list[SFTRecord]:
    """The questions as evaluation records (the answer recorded, no demonstration)."""
    return [
        SFTRecord(
            Conversation(
                [Message("user", [TextBlock(question)]), Message("assistant", [TextBlock(answer)])]
            ),
            task=TASK,
            answer=answer,
            source="charter-benign-qa",
            licence=CHARTER_LICENCE,
        )
        for question, answer in QUESTIONS
    ]
