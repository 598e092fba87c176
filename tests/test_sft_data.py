"""SFT data: JSONL validation with file/line/field errors, the HH-RLHF importer and pairs reader,
and the real conversational sources' parsers (on small fixtures; the downloads are slow tests)."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import pytest

from charter.chat import Conversation, Message, TextBlock, ToolResultBlock, ToolUseBlock
from charter.chat.template import EMPTY_THINK
from charter.data.conversation_sources import (
    chatterbot,
    pod_inline,
    pod_sections,
    pod_to_markdown,
    rst_sections,
)
from charter.data.hh import import_hh, parse_transcript, read_hh_pairs
from charter.data.sft import SFTRecord, read_sft, to_training_example, write_sft
from charter.tokenizer import IM_END

HH_FILE = Path("/work/shared/data/hh-rlhf-harmless-base-test.jsonl.gz")


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


# ---- SFT JSONL ----


def test_records_round_trip_through_jsonl(tmp_path):
    call = ToolUseBlock("toolu_1", "calculator", {"expression": "2+2"})
    conversation = Conversation(
        [
            Message("user", [TextBlock("2+2?")]),
            Message("assistant", [call]),
            Message("user", [ToolResultBlock("toolu_1", "4")]),
            Message("assistant", [TextBlock("4")]),
        ],
        system="Be brief.",
    )
    records = [
        SFTRecord(conversation, task="calculator", answer="4", source="synthetic"),
        SFTRecord(Conversation([Message("user", [TextBlock("hi")]), Message("assistant", [])])),
    ]
    records[1].conversation.messages[1].content.append(TextBlock("hello"))
    path = tmp_path / "sft.jsonl"
    assert write_sft(records, path) == 2
    read = list(read_sft([path]))
    assert [r.conversation for r in read] == [r.conversation for r in records]
    assert (read[0].task, read[0].answer, read[0].source) == ("calculator", "4", "synthetic")
    assert read[1].where == f"{path}:2"
    # The prompt to answer afresh is everything up to the user's question, tool turns excluded.
    assert read[0].prompt().messages == conversation.messages[:1]
    assert read[0].prompt().system == "Be brief."


@pytest.mark.parametrize(
    "line, error",
    [
        ("{not json", ":3: invalid JSON at column 2"),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": [{"type": "text", "text": 5}]},
                ]
            },
            ":3: messages[1].content[0].text: expected a string, got a number",
        ),
        ({"mesages": []}, ":3: messages: missing"),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                ],
                "sytem": "typo",
            },
            ":3: sytem: unknown field",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                ],
                "answer": 4,
            },
            ":3: answer: expected a string",
        ),
        (
            {"messages": [{"role": "user", "content": "q"}]},
            ":3: messages[0]: a demonstration must end with the assistant's (non-empty) message",
        ),
        (
            {"messages": [{"role": "assistant", "content": "a"}]},
            ":3: messages: no user message with text",
        ),
    ],
)
def test_invalid_lines_are_errors_naming_file_line_and_field(tmp_path, line, error):
    good = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = write_lines(tmp_path / "data.jsonl", [good, "", line])
    with pytest.raises(ValueError) as raised:
        list(read_sft([path]))
    assert str(raised.value).startswith(f"{path}{error}")


def test_training_examples_read_the_empty_think_block_when_there_is_no_thinking(tokenizer):
    record = SFTRecord(
        Conversation([Message("user", [TextBlock("hi")]), Message("assistant", [TextBlock("yo")])])
    )
    example = to_training_example(record, tokenizer)
    trained = [t for t, m in zip(example.ids, example.loss_mask) if m]
    # The empty block is context (the prompt supplies it when thinking is off), not a target.
    assert tokenizer.decode(trained) == f"yo{IM_END}"
    first_trained = example.loss_mask.index(True)
    assert tokenizer.decode(example.ids[:first_trained]).endswith(f"assistant\n{EMPTY_THINK}")


# ---- HH-RLHF ----


def test_parse_transcript():
    text = "\n\nHuman: Hi there \n\nAssistant: Hello!\n\nHuman: Bye\n\nAssistant:  See you."
    conversation = parse_transcript(text, "f:1")
    assert [(m.role, m.content) for m in conversation.messages] == [
        ("user", [TextBlock("Hi there")]),
        ("assistant", [TextBlock("Hello!")]),
        ("user", [TextBlock("Bye")]),
        ("assistant", [TextBlock("See you.")]),
    ]
    with pytest.raises(ValueError, match=r"f:1: expected a transcript starting with"):
        parse_transcript("Human: hi\n\nAssistant: yo", "f:1")
    with pytest.raises(ValueError, match=r"f:1: the final response is empty"):
        parse_transcript("\n\nHuman: hi\n\nAssistant: ", "f:1")
    with pytest.raises(ValueError, match=r"f:1: turn 1 \(Human\) is empty"):
        parse_transcript("\n\nHuman: \n\nAssistant: yo", "f:1")


@pytest.fixture
def hh_file(tmp_path) -> Path:
    lines = [
        {
            "chosen": "\n\nHuman: How do I bake bread?\n\nAssistant: Mix flour, water and yeast.",
            "rejected": "\n\nHuman: How do I bake bread?\n\nAssistant: No idea.",
        },
        {
            "chosen": "\n\nHuman: Tell me something awful.\n\nAssistant:",
            "rejected": "\n\nHuman: Tell me something awful.\n\nAssistant: Something awful.",
        },
        {
            "chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d",
            "rejected": "\n\nHuman: a\n\nAssistant: x\n\nHuman: y\n\nAssistant: z",
        },
    ]
    path = tmp_path / "hh.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    return path


def test_import_hh_reports_what_it_leaves_out(hh_file):
    records, problems = import_hh(hh_file, "chosen")
    assert problems == [f"{hh_file}:2: chosen: the final response is empty"]
    assert [r.where for r in records] == [f"{hh_file}:1", f"{hh_file}:3"]
    assert records[0].conversation.messages[1].content == [TextBlock("Mix flour, water and yeast.")]
    assert (records[0].source, records[0].licence) == ("hh-rlhf:chosen", "MIT")
    rejected, problems = import_hh(hh_file, "rejected")
    assert problems == [] and len(rejected) == 3
    assert rejected[1].conversation.messages[-1].content == [TextBlock("Something awful.")]
    with pytest.raises(ValueError, match="field must be one of"):
        import_hh(hh_file, "both")


def test_hh_pairs_keep_empty_responses_and_give_the_shared_prompt(hh_file):
    pairs, problems = read_hh_pairs(hh_file)
    assert problems == [] and len(pairs) == 3
    assert pairs[0].prompt == Conversation([Message("user", [TextBlock("How do I bake bread?")])])
    assert pairs[1].chosen.messages[-1] == Message("assistant", [])  # silence was preferred
    assert pairs[2].prompt is None  # the transcripts differ before the final response


def test_hh_lines_that_are_not_comparisons_are_errors(tmp_path):
    path = write_lines(tmp_path / "hh.jsonl", [{"chosen": "\n\nHuman: a\n\nAssistant: b"}])
    with pytest.raises(ValueError, match=rf"{path}:1: rejected: expected a transcript string"):
        import_hh(path)


@pytest.mark.skipif(not HH_FILE.exists(), reason=f"{HH_FILE} is not on this machine")
def test_import_the_real_hh_rlhf_harmless_test_split():
    records, problems = import_hh(HH_FILE, "chosen")
    assert len(records) + len(problems) == 2312
    assert [p.split(":")[1] for p in problems] == ["87", "517", "926", "1104"]
    pairs, problems = read_hh_pairs(HH_FILE)
    assert len(pairs) == 2312 and problems == []
    assert sum(pair.prompt is None for pair in pairs) == 5


# ---- real conversational sources ----


def test_pod_inline_codes():
    assert pod_inline("Use C<printf> or I<sprintf>.") == "Use `printf` or sprintf."
    assert pod_inline("C<< $a <=> $b >>") == "`$a <=> $b`"
    assert pod_inline('See L<perlop/"Floating-point Arithmetic">.') == (
        'See "Floating-point Arithmetic" in perlop.'
    )
    assert pod_inline("L<the docs|perlfunc> and L<POSIX>") == "the docs and POSIX"
    assert pod_inline("1 E<lt> 2, B<C<nested>>X<index>") == "1 < 2, `nested`"
    assert pod_inline("a < b and c > d") == "a < b and c > d"


def test_pod_sections_become_markdown_answers():
    pod = (
        "=head1 Data\n\n=head2 How do I round?\n\n(contributed by someone)\n\n"
        "Use C<sprintf>:\n\n    printf '%.2f', $x;\n\n    # done\n\n"
        "=over 4\n\n=item *\n\nfirst point\n\n=item Second\n\n=back\n\n"
        "=begin html\n\n<b>hidden</b>\n\n=end html\n\n"
        "=head2 Why?\n\nBecause.\n\n=head1 AUTHOR\n\nSomeone.\n"
    )
    sections = pod_sections(pod)
    assert [title for title, _ in sections] == ["How do I round?", "Why?"]
    assert pod_to_markdown(sections[0][1]) == (
        "(contributed by someone)\n\nUse `sprintf`:\n\n"
        "```\nprintf '%.2f', $x;\n\n# done\n```\n\n- first point\n\n- Second"
    )
    assert pod_to_markdown(sections[1][1]) == "Because."


def test_rst_sections_take_the_dash_underlined_questions():
    rst = (
        "=====\nFAQ\n=====\n\nGeneral\n=======\n\nWhat is it?\n-----------\n\nA thing.\n\n"
        "Is it good?\n-----------\n\nYes.\n\nMore\n====\n\nNot a question.\n"
    )
    assert rst_sections(rst) == [("What is it?", "A thing."), ("Is it good?", "Yes.")]


def test_chatterbot_dialogues_alternate_turns(tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with zipfile.ZipFile(downloads / "chatterbot_corpus-9.9-py3-none-any.whl", "w") as wheel:
        wheel.writestr(
            "chatterbot_corpus-9.9.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: chatterbot-corpus\n"
            "Classifier: License :: OSI Approved :: BSD License\n",
        )
        wheel.writestr(
            "chatterbot_corpus/data/english/greetings.yml",
            "categories:\n- greetings\nconversations:\n- - Hello\n  - Hi\n"
            "- - How are you?\n  - Fine.\n  - Good to hear.\n",
        )
    records, notes = chatterbot(tmp_path)
    assert [[m.content[0].text for m in r.conversation.messages] for r in records] == [
        ["Hello", "Hi"],
        ["How are you?", "Fine."],
    ]
    assert records[0].source == "chatterbot-corpus:greetings"
    assert records[0].licence == "BSD License"
    assert notes == ["1 dialogues ended with an unanswered statement, which was left out"]


@pytest.mark.slow
def test_chatterbot_recipe_downloads_from_pypi(tmp_path):
    records, _ = chatterbot(tmp_path)
    assert len(records) > 500
    assert any(r.source == "chatterbot-corpus:computers" for r in records)
    assert all(r.conversation.messages[-1].role == "assistant" for r in records)
