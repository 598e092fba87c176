"""Self-distillation: which prompts are used and what is kept and why (on scripted replies), how
prompts are rendered and which the context cannot take (on a micro model), and end to end
through the CLI on a micro checkpoint."""

from __future__ import annotations

from collections import Counter

import torch

from charter.chat import Conversation, Message, TextBlock, render_prompt
from charter.chat.format import CharterFormat
from charter.checkpoint import save_checkpoint
from charter.cli import main
from charter.data.distill import distill, question_key
from charter.data.sft import SFTRecord, read_sft, write_sft
from charter.infer.backends import load_engine
from charter.infer.engine import END_TURN, MAX_TOKENS, Engine
from charter.infer.generator import TurnOptions
from charter.infer.local import LocalGenerator
from charter.infer.sampling import SamplingParams
from charter.infer.spec import load_generator
from charter.infer.torch_backend import TorchBackend
from charter.model import Transformer
from charter.tokenizer import Tokenizer
from tests.generator_helpers import ScriptedGenerator, recorded_jobs
from tests.helpers import micro


def record(*turns: str, source: str | None = "corpus:trivia") -> SFTRecord:
    roles = ["user", "assistant"] * len(turns)
    messages = [Message(role, [TextBlock(t)]) for role, t in zip(roles, turns)]
    return SFTRecord(Conversation(messages), source=source, licence="BSD-3-Clause")


def by_question(replies: dict[str, tuple[str, str]]):
    """A script that answers each request by its last user question."""
    return lambda request: replies[request.conversation.messages[-1].content[0].text]


REPLIES = {
    "What is two plus two?": (" Two plus two is four.\n", END_TURN),
    "Tell me a long story.": ("Once upon a time", MAX_TOKENS),
    "Say nothing.": ("  \n", END_TURN),
    "And you?": ("I am well, thank you.", END_TURN),
    "Name a colour.": ("Blue.", END_TURN),
}
RECORDS = [
    record("What is two plus two?", "4"),
    record("  what is TWO plus two ", "four", source=None),  # the same question again
    record("Name a colour.", "Red."),  # in the evaluation set
    record("Tell me a long story.", "…"),
    record("Say nothing.", "…"),
    record("Hello!", "Hi, how are you?", "And you?", "Fine."),
]


def test_keeps_complete_replies_and_counts_every_prompt_left_out(tokenizer):
    generator = ScriptedGenerator(CharterFormat(tokenizer), by_question(REPLIES))
    options = TurnOptions(max_tokens=32, temperature=0)
    exclude = [record("Name a colour", "Blue")]
    distilled, outcomes = distill(RECORDS, generator, options, exclude=exclude, source="smol")
    assert outcomes == {"kept": 2, "duplicate": 1, "excluded": 1, "max_tokens": 1, "empty": 1}
    assert sum(outcomes.values()) == len(RECORDS)
    # Duplicates and excluded questions are never generated; the others with the options given.
    assert [r.conversation for r in generator.requests] == [
        RECORDS[i].prompt() for i in (0, 3, 4, 5)
    ]
    assert all(r.options is options for r in generator.requests)
    first, multi_turn = distilled
    assert first.conversation.messages[-1] == Message(
        "assistant", [TextBlock("Two plus two is four.")]
    )
    assert first.source == "smol:corpus:trivia" and first.licence == "BSD-3-Clause"
    # The earlier turns stay; only the reply to the last question is the model's.
    assert [m.content[0].text for m in multi_turn.conversation.messages] == [
        "Hello!",
        "Hi, how are you?",
        "And you?",
        "I am well, thank you.",
    ]


def test_prompts_longer_than_the_context_are_counted_as_too_long(tokenizer, monkeypatch):
    torch.manual_seed(0)
    engine = Engine(TorchBackend(Transformer(micro()).eval()), tokenizer)  # 256 positions
    records = [record("Why? " * 300, "Because."), record("Name a colour.", "Red.")]
    with LocalGenerator(engine, "micro") as generator:
        jobs = recorded_jobs(generator, monkeypatch)
        _, outcomes = distill(records, generator, TurnOptions(max_tokens=4, temperature=0))
    assert outcomes["too_long"] == 1 and sum(outcomes.values()) == 2
    assert len(jobs) == 1  # the long prompt never reached the engine


# A model's own template that differs from Charter's: ChatML without the empty think block.
PLAIN_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{{ '<|im_start|>assistant\n' }}"
)


def test_prompts_in_the_models_own_template_unless_the_spec_says_charter(
    tokenizer, tmp_path, monkeypatch
):
    plain = Tokenizer(tokenizer.backend, {**tokenizer.config, "chat_template": PLAIN_CHATML})
    torch.manual_seed(0)
    model_dir = save_checkpoint(Transformer(micro()), tmp_path / "plain", plain)
    prompt = RECORDS[5].prompt()
    own = plain.encode(
        "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\nHi, how are you?<|im_end|>\n"
        "<|im_start|>user\nAnd you?<|im_end|>\n<|im_start|>assistant\n"
    )
    charter = render_prompt(prompt, plain, thinking=False)
    assert own != charter
    options = TurnOptions(max_tokens=4, temperature=0)
    for spec, expected in (
        (f"torch:{model_dir}", own),
        (f"torch:{model_dir},format=charter", charter),
    ):
        with load_generator(spec) as generator:
            jobs = recorded_jobs(generator, monkeypatch)
            distill([RECORDS[5]], generator, options)
        assert [job.request.prompt_ids for job in jobs] == [expected]


def test_question_key_ignores_case_spacing_and_end_punctuation():
    assert question_key(record("What is  TWO plus two?!", "4")) == "what is two plus two"
    assert question_key(record("Hello", "Hi", "And you?", "Fine")) == "and you"


def test_cli_writes_the_models_greedy_replies(tmp_path, tokenizer, capsys):
    torch.manual_seed(0)
    model_dir = save_checkpoint(Transformer(micro()), tmp_path / "micro", tokenizer)
    prompts = tmp_path / "prompts.jsonl"
    write_sft([record(f"Question number {i}?", "answer") for i in range(6)], prompts)
    out = tmp_path / "distilled.jsonl"
    main(
        [
            "data",
            "distill",
            "--model",
            str(model_dir),
            "--prompts",
            str(prompts),
            "--out",
            str(out),
            "--max-new-tokens",
            "4",
            "--backend",
            "torch",
        ]
    )
    written = list(read_sft([out]))
    engine = load_engine(model_dir, "torch")
    expected = engine.generate(
        [render_prompt(r.prompt(), tokenizer, thinking=False) for r in read_sft([prompts])],
        SamplingParams(max_new_tokens=4, temperature=0),
    )
    kept = [c.text.strip() for c in expected if c.stop_reason == END_TURN and c.text.strip()]
    assert [r.conversation.messages[-1].content[0].text for r in written] == kept
    outcomes = Counter(
        ("kept" if c.text.strip() else "empty") if c.stop_reason == END_TURN else c.stop_reason
        for c in expected
    )
    summary = ", ".join(f"{name} {n}" for name, n in sorted(outcomes.items()))
    assert capsys.readouterr().out == f"6 prompts: {summary}; {len(kept)} replies -> {out}\n"
