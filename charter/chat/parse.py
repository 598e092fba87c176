"""The streaming parser: assistant text, as it is generated, back into content blocks.

Deltas may be any size and split anywhere, even inside a tag, so text that might be the start of
a tag is held back until the next delta settles it. What the parser recognises:

- `<think>` at the very start (or the prompt already opened it: `starts_in_thinking=True`) up
  to `</think>`: a thinking block. The newline after `<think>` and before `</think>` is the
  format's, not the thinking's; whitespace between `</think>` and the answer is dropped.
- `<tool_call>{"name": …, "input": {…}}</tool_call>`: a tool_use block with a fresh `toolu_` id.
  A call is only known to be valid when it is complete, so it is emitted whole (start, one
  `input_json` delta, stop). A malformed or unfinished call never raises: its raw text comes back
  as text, and `malformed_tool_calls` counts it (`tool_calls` counts all calls, for validity
  rates).
- Everything else: text blocks. A run of only whitespace (say, between two tool calls) is not a
  block.

Events follow the Anthropic streaming protocol's shape: `BlockStart` (the block, still empty),
`BlockDelta`s, `BlockStop`, with indices consecutive from 0.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass
from typing import Any, Literal

from charter.chat.messages import (
    TOOL_NAME_PATTERN,
    Block,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
)
from charter.chat.template import THINK_CLOSE, THINK_OPEN, TOOL_CALL_CLOSE, TOOL_CALL_OPEN

_ID_ALPHABET = string.ascii_letters + string.digits


def new_tool_use_id() -> str:
    return "toolu_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


@dataclass
class BlockStart:
    index: int
    block: Block


@dataclass
class BlockDelta:
    index: int
    kind: Literal["text", "thinking", "input_json"]
    text: str


@dataclass
class BlockStop:
    index: int


Event = BlockStart | BlockDelta | BlockStop

_TEXT, _THINKING, _TOOL_CALL = "text", "thinking", "tool_call"
_THINK_ENDS = [f"\n{THINK_CLOSE}", THINK_CLOSE]


class AssistantParser:
    def __init__(self, starts_in_thinking: bool = False) -> None:
        self._mode = _THINKING if starts_in_thinking else _TEXT
        self._pending = ""  # received but not yet settled
        self._blocks: list[Block] = []
        self._open_index: int | None = None  # the block receiving deltas
        self._at_start = not starts_in_thinking  # `<think>` opens thinking only here
        self._skip_newline = False  # the newline right after `<think>`
        self._skip_whitespace = False  # between `</think>` and the answer
        self._whitespace = ""  # leading whitespace of a text run that may yet be empty
        self._events: list[Event] = []
        self._finished = False
        self.tool_calls = 0
        self.malformed_tool_calls = 0

    @property
    def blocks(self) -> list[Block]:
        return list(self._blocks)

    def feed(self, delta: str) -> list[Event]:
        if self._finished:
            raise RuntimeError("feed() after finish()")
        self._pending += delta
        self._settle(final=False)
        return self._take_events()

    def finish(self) -> list[Event]:
        """The end of the generation: release what was held back and close the last block."""
        if self._finished:
            return []
        self._settle(final=True)
        if self._mode == _TOOL_CALL:  # cut off inside a call
            self.malformed_tool_calls += 1
            self._text(TOOL_CALL_OPEN + self._pending)
            self._pending = ""
        self._close()
        self._finished = True
        return self._take_events()

    # ---- the state machine ----

    def _settle(self, final: bool) -> None:
        """Consume as much of the pending text as is settled (all of it when `final`)."""
        while True:
            if self._mode == _TEXT:
                tags = [TOOL_CALL_OPEN, THINK_OPEN] if self._at_start else [TOOL_CALL_OPEN]
                found = [(at, tag) for tag in tags if (at := self._pending.find(tag)) >= 0]
                if not found:
                    keep = 0 if final else _partial_tag_length(self._pending, tags)
                    self._text(self._consume(len(self._pending) - keep))
                    return
                at, tag = min(found)
                if tag == THINK_OPEN and self._pending[:at].strip():
                    self._at_start = False  # text came first, so this `<think>` is literal
                    continue
                self._text(self._consume(at))
                self._consume(len(tag))
                self._whitespace = ""  # whitespace before a tag is not a block
                self._at_start = self._skip_whitespace = False
                if tag == THINK_OPEN:
                    self._mode, self._skip_newline = _THINKING, True
                else:
                    self._mode = _TOOL_CALL
                    self.tool_calls += 1
            elif self._mode == _THINKING:
                if self._skip_newline:
                    if not self._pending:
                        return
                    if self._pending.startswith("\n"):
                        self._consume(1)
                    self._skip_newline = False
                at = self._pending.find(THINK_CLOSE)
                if at < 0:
                    keep = 0 if final else _partial_tag_length(self._pending, _THINK_ENDS)
                    self._thinking(self._consume(len(self._pending) - keep))
                    return
                thinking = self._consume(at)
                self._thinking(thinking.removesuffix("\n"))
                self._consume(len(THINK_CLOSE))
                self._close()
                self._mode, self._skip_whitespace = _TEXT, True
            else:
                at = self._pending.find(TOOL_CALL_CLOSE)
                if at < 0:
                    return  # a call is settled only when complete; `finish` handles a cut-off
                body = self._consume(at)
                self._consume(len(TOOL_CALL_CLOSE))
                self._end_tool_call(body)
                self._mode = _TEXT

    def _consume(self, n: int) -> str:
        head, self._pending = self._pending[:n], self._pending[n:]
        return head

    def _text(self, text: str) -> None:
        if not text:
            return
        if not isinstance(self._open, TextBlock):
            text = self._whitespace + text
            if not text.strip():  # may still turn out to be an empty block
                self._whitespace = text
                return
            if self._skip_whitespace:
                text = text.lstrip()
            self._whitespace = ""
            self._at_start = self._skip_whitespace = False
            self._start(TextBlock(""), TextBlock(""))
        self._open.text += text
        self._events.append(BlockDelta(self._open_index, "text", text))

    def _thinking(self, thinking: str) -> None:
        if not thinking:
            return
        if not isinstance(self._open, ThinkingBlock):
            self._start(ThinkingBlock(""), ThinkingBlock(""))
        self._open.thinking += thinking
        self._events.append(BlockDelta(self._open_index, "thinking", thinking))

    def _end_tool_call(self, body: str) -> None:
        call = _parse_tool_call(body)
        if call is None:
            self.malformed_tool_calls += 1
            self._text(TOOL_CALL_OPEN + body + TOOL_CALL_CLOSE)
            return
        name, tool_input = call
        self._close()
        block = ToolUseBlock(new_tool_use_id(), name, tool_input)
        self._start(block, ToolUseBlock(block.id, name, {}))
        tool_json = json.dumps(tool_input, ensure_ascii=False)
        self._events.append(BlockDelta(self._open_index, "input_json", tool_json))
        self._close()

    @property
    def _open(self) -> Block | None:
        """The block that has started and not yet stopped."""
        return None if self._open_index is None else self._blocks[self._open_index]

    def _start(self, block: Block, announced: Block) -> None:
        """Open `block`; the event carries `announced`, its empty twin, since `block` grows."""
        self._close()
        self._open_index = len(self._blocks)
        self._events.append(BlockStart(self._open_index, announced))
        self._blocks.append(block)

    def _close(self) -> None:
        if self._open_index is not None:
            self._events.append(BlockStop(self._open_index))
            self._open_index = None

    def _take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events


def _parse_tool_call(body: str) -> tuple[str, dict[str, Any]] | None:
    """(name, input) of a well-formed call: a JSON object with exactly a tool name and an input
    object; None otherwise."""
    try:
        call = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(call, dict) or set(call) != {"name", "input"}:
        return None
    name, tool_input = call["name"], call["input"]
    if not isinstance(name, str) or not TOOL_NAME_PATTERN.match(name):
        return None
    if not isinstance(tool_input, dict):
        return None
    return name, tool_input


def _partial_tag_length(text: str, tags: list[str]) -> int:
    """Length of the longest tail of `text` that is a proper prefix of one of `tags`."""
    longest = min(len(text), max(len(tag) for tag in tags) - 1)
    for n in range(longest, 0, -1):
        if any(tag.startswith(text[-n:]) for tag in tags):
            return n
    return 0
