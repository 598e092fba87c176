"""The streaming parser: render → parse round trips however the text is split, tags split across
deltas are held back, and malformed tool calls come back as text, flagged."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charter.chat import (
    AssistantParser,
    BlockDelta,
    BlockStart,
    BlockStop,
    Conversation,
    Message,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    assistant_body,
    assistant_opening,
    render,
)
from charter.chat.template import THINK_PROMPT
from charter.tokenizer import IM_END
from tests.test_chat import assistant_contents, assistant_runs


def parse(chunks: list[str], starts_in_thinking: bool = False) -> tuple[AssistantParser, list]:
    parser = AssistantParser(starts_in_thinking=starts_in_thinking)
    events = [event for chunk in chunks for event in parser.feed(chunk)] + parser.finish()
    return parser, events


def split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    return [text[a:b] for a, b in zip(points, points[1:])]


def without_ids(blocks: list) -> list:
    return [dataclasses.replace(b, id="") if isinstance(b, ToolUseBlock) else b for b in blocks]


def blocks_from_events(events: list) -> list:
    """Rebuild the blocks from the event stream alone, checking its shape as a client would."""
    blocks, open_index = [], None
    for event in events:
        if isinstance(event, BlockStart):
            assert open_index is None and event.index == len(blocks)
            blocks.append(dataclasses.replace(event.block))
            open_index = event.index
        elif isinstance(event, BlockDelta):
            assert event.index == open_index
            block = blocks[open_index]
            if event.kind == "input_json":
                block.input = json.loads(event.text)
            else:
                setattr(block, event.kind, getattr(block, event.kind) + event.text)
        else:
            assert isinstance(event, BlockStop) and event.index == open_index
            open_index = None
    assert open_index is None
    return blocks


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    content=assistant_contents(),
    thinking=st.booleans(),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_render_then_parse_gives_back_the_blocks(tokenizer, content, thinking, cuts):
    conversation = Conversation([Message("user", [TextBlock("q")]), Message("assistant", content)])
    rendered = render(conversation, tokenizer, thinking=thinking)
    trained = tokenizer.decode(assistant_runs(rendered.ids, rendered.loss_mask)[0])
    assert trained.endswith(IM_END)
    # The whole turn: the opening the prompt supplies, then what the model is trained to write.
    text = assistant_opening(content, thinking) + trained.removesuffix(IM_END)
    for chunks in ([text], split(text, cuts), list(text)):
        parser, events = parse(chunks)
        assert without_ids(parser.blocks) == without_ids(content)
        assert without_ids(blocks_from_events(events)) == without_ids(content)
        assert parser.malformed_tool_calls == 0
        assert parser.tool_calls == sum(isinstance(b, ToolUseBlock) for b in content)


@settings(max_examples=100, deadline=None)
@given(content=assistant_contents(), cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_parsing_a_generation_that_started_inside_the_think_block(content, cuts):
    """With thinking on the prompt ends with `<think>\\n`: the model's text starts mid-block."""
    if not isinstance(content[0], ThinkingBlock):
        content.insert(0, ThinkingBlock("plan"))
    generated = assistant_body(content, thinking=True).removeprefix(THINK_PROMPT)
    parser, events = parse(split(generated, cuts), starts_in_thinking=True)
    assert without_ids(parser.blocks) == without_ids(content)
    assert without_ids(blocks_from_events(events)) == without_ids(content)


def test_tags_split_across_deltas_are_held_back():
    parser = AssistantParser()
    assert parser.feed("Sure <to") == [BlockStart(0, TextBlock("")), BlockDelta(0, "text", "Sure ")]
    assert parser.feed('ol_call>{"name": "f", ') == []
    events = parser.feed('"input": {"a": 1}}</tool')
    assert events == []
    events = parser.feed("_call>Done <b")
    start = events[1]
    assert events[0] == BlockStop(0)
    assert isinstance(start, BlockStart) and start.block.name == "f" and start.block.input == {}
    assert re.fullmatch(r"toolu_[A-Za-z0-9]{24}", start.block.id)
    assert events[2:] == [
        BlockDelta(1, "input_json", '{"a": 1}'),
        BlockStop(1),
        BlockStart(2, TextBlock("")),
        BlockDelta(2, "text", "Done <b"),  # "<b" cannot start a tag: released at once
    ]
    assert parser.feed("<t") == []  # may start <tool_call>
    assert parser.feed("hink") == [BlockDelta(2, "text", "<think")]  # <think> only at the start
    assert parser.feed("<tool_c") == []
    assert parser.finish() == [BlockDelta(2, "text", "<tool_c"), BlockStop(2)]
    assert parser.blocks == [
        TextBlock("Sure "),
        ToolUseBlock(start.block.id, "f", {"a": 1}),
        TextBlock("Done <b<think<tool_c"),
    ]


def test_thinking_then_answer_and_the_empty_think_block():
    parser, _ = parse(["<think>\nLet me", " see.\n</think>\n\n  42"])
    assert parser.blocks == [ThinkingBlock("Let me see."), TextBlock("42")]
    parser, _ = parse(["<think>\n\n</think>\n\nHello"])  # thinking off: no thinking block
    assert parser.blocks == [TextBlock("Hello")]
    parser, _ = parse(["step 1\nstep 2\n</think>\n\nDone"], starts_in_thinking=True)
    assert parser.blocks == [ThinkingBlock("step 1\nstep 2"), TextBlock("Done")]
    parser, _ = parse(["Say <think> aloud"])  # not at the start: literal text
    assert parser.blocks == [TextBlock("Say <think> aloud")]
    parser, _ = parse(["<think>\ncut off mid-thought"])
    assert parser.blocks == [ThinkingBlock("cut off mid-thought")]


@pytest.mark.parametrize(
    "call",
    [
        "<tool_call>{not json}</tool_call>",
        '<tool_call>{"name": "f"}</tool_call>',  # no input
        '<tool_call>{"name": "f", "input": [1]}</tool_call>',  # input not an object
        '<tool_call>{"name": "two words", "input": {}}</tool_call>',
        '<tool_call>{"name": "f", "input": {}, "extra": 1}</tool_call>',
        '<tool_call>["f", {}]</tool_call>',
    ],
)
def test_malformed_tool_calls_come_back_as_text_and_are_counted(call):
    parser, events = parse(["Result: ", call[:9], call[9:], " end"])
    assert parser.blocks == [TextBlock(f"Result: {call} end")]
    assert (parser.tool_calls, parser.malformed_tool_calls) == (1, 1)
    assert blocks_from_events(events) == parser.blocks


def test_a_tool_call_cut_off_by_the_token_limit_is_text_and_counted():
    parser, _ = parse(['<tool_call>{"name": "f", "inp'])
    assert parser.blocks == [TextBlock('<tool_call>{"name": "f", "inp')]
    assert parser.malformed_tool_calls == 1


def test_whitespace_between_tool_calls_is_not_a_block_and_feed_after_finish_fails():
    call = '<tool_call>{"name": "f", "input": {}}</tool_call>'
    parser, events = parse([call, "\n", call, "\n"])
    assert [b.type for b in parser.blocks] == ["tool_use", "tool_use"]
    assert [e.index for e in events if isinstance(e, BlockStart)] == [0, 1]
    assert parser.blocks[0].id != parser.blocks[1].id
    with pytest.raises(RuntimeError, match="after finish"):
        parser.feed("more")
