"""Conversations, and the one ChatML renderer that training, evaluation and serving share.

Types mirror the Anthropic Messages API: a conversation is an optional system prompt, tools, and
user/assistant messages made of content blocks (text, thinking, tool_use, tool_result).

Rendering (the strings come from `chat_template.py`):

    <|im_start|>system
    {system prompt}

    # Tools ... one section per tool: name, description, JSON input schema<|im_end|>
    <|im_start|>user
    What is 12 × 34?<|im_end|>
    <|im_start|>assistant
    <think>
    {thinking}
    </think>
    {text}<tool_call>{"name": "calculator", "input": {"expression": "12*34"}}</tool_call><|im_end|>
    <|im_start|>tool
    <tool_result name="calculator">408</tool_result><|im_end|>
    <|im_start|>assistant
    <think>

    </think>
    12 × 34 = 408.<|im_end|>

- Blocks are rendered in order. Adjacent text blocks are joined by a blank line, as are the text
  blocks of a system prompt or tool result.
- Tool results are their own `tool` turn. They name the tool rather than repeat the call's random
  `toolu_…` id, which would be noise to the model; results follow the order of the calls, and each
  `tool_use_id` must refer to an earlier call. `error="true"` marks an `is_error` result.
- With thinking off, an assistant turn without a thinking block gets an empty one, so the model
  learns to answer directly after it (the hybrid-reasoning toggle); with thinking on it gets none.
  Thinking blocks that are present are always rendered. SFT renders with thinking off
  (`charter.data.sft.to_training_example`), so a model sees every turn open with a think block.
- The loss mask is True on what the model generates of each assistant turn, and its
  `<|im_end|>`. False: the `assistant\\n` header and the turn's opening that a generation prompt
  supplies (the empty think block, or `<think>\\n` before thinking: `assistant_opening`), every
  other turn, and the newline after `<|im_end|>`. Training the opening would teach the model to
  pick an empty think block by itself, and the thinking toggle would stop working.
- Only the renderer's markers are special tokens: all content is encoded with
  `special_tokens=False`, so a literal `<|im_end|>` in a message stays text. Each turn's
  `role\\n` header, and an assistant turn's opening, are encoded apart from the body, so the ids
  trained on are the ids the model produces after the prompt; whole-string tokenisation (Hugging
  Face's `apply_chat_template`) agrees except when a body starts with a line break.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from charter.chat_template import (
    BLOCK_SEPARATOR,
    CHAT_TEMPLATE,  # noqa: F401 (part of the chat API: the template we ship)
    EMPTY_THINK,
    THINK_PROMPT,
    system_text,
    thinking_block,
    tool_call,
    tool_result,
)
from charter.tokenizer import IM_END, IM_START, Tokenizer

# The Anthropic API's rule for tool names; it also keeps a name safe inside `name="…"`.
TOOL_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


# ---- types ----


@dataclass
class TextBlock:
    text: str
    type: Literal["text"] = field(default="text", init=False, repr=False)


@dataclass
class ThinkingBlock:
    thinking: str
    signature: str = ""
    type: Literal["thinking"] = field(default="thinking", init=False, repr=False)


@dataclass
class ToolUseBlock:
    id: str
    name: str
    input: dict[str, Any]
    type: Literal["tool_use"] = field(default="tool_use", init=False, repr=False)


@dataclass
class ToolResultBlock:
    tool_use_id: str
    content: str | list[TextBlock]
    is_error: bool = False
    type: Literal["tool_result"] = field(default="tool_result", init=False, repr=False)

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return BLOCK_SEPARATOR.join(block.text for block in self.content)


Block = TextBlock | ThinkingBlock | ToolUseBlock | ToolResultBlock


@dataclass
class Message:
    role: Literal["user", "assistant"]
    content: list[Block]


@dataclass
class Tool:
    name: str
    description: str
    input_schema: dict[str, Any]


@dataclass
class Conversation:
    messages: list[Message]
    system: str | None = None
    tools: list[Tool] = field(default_factory=list)


# ---- Anthropic-format JSON ----

# Block fields per type: (required, optional). `cache_control` is a caching hint that changes
# nothing the model reads, so it is accepted and ignored.
_BLOCK_FIELDS = {
    "text": ({"text"}, {"cache_control"}),
    "thinking": ({"thinking"}, {"signature", "cache_control"}),
    "tool_use": ({"id", "name", "input"}, {"cache_control"}),
    "tool_result": ({"tool_use_id"}, {"content", "is_error", "cache_control"}),
}
_BLOCKS_BY_ROLE = {"user": ("text", "tool_result"), "assistant": ("text", "thinking", "tool_use")}


class _Reader:
    """Checks JSON values, raising `ValueError("{where}: {path}: {problem}")`."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, path: str, problem: str) -> ValueError:
        return ValueError(
            f"{self.where}: {path}: {problem}" if path else f"{self.where}: {problem}"
        )

    def object(self, value: Any, path: str, required: set[str], optional: set[str]) -> dict:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected an object, got {_json_type(value)}")
        for key in sorted(required):
            if key not in value:
                raise self.fail(_field(path, key), "missing")
        for key in value:
            if key not in required | optional:
                raise self.fail(_field(path, key), "unknown field")
        return value

    def string(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise self.fail(path, f"expected a string, got {_json_type(value)}")
        return value

    def array(self, value: Any, path: str) -> list:
        if not isinstance(value, list):
            raise self.fail(path, f"expected an array, got {_json_type(value)}")
        return value

    def text_or_blocks(self, value: Any, path: str) -> str:
        """A string, or text blocks joined into one (system prompts, tool results)."""
        if isinstance(value, str):
            return value
        return BLOCK_SEPARATOR.join(block.text for block in self.text_blocks(value, path))

    def block(self, value: Any, path: str, allowed: tuple[str, ...]) -> Block:
        kind = value.get("type") if isinstance(value, dict) else None
        if kind not in allowed:
            if not isinstance(value, dict):
                raise self.fail(path, f"expected an object, got {_json_type(value)}")
            expected = ", ".join(repr(k) for k in allowed)
            raise self.fail(_field(path, "type"), f"expected one of {expected}, got {kind!r}")
        required, optional = _BLOCK_FIELDS[kind]
        self.object(value, path, required | {"type"}, optional)
        if kind == "text":
            return TextBlock(self.string(value["text"], f"{path}.text"))
        if kind == "thinking":
            signature = value.get("signature") or ""
            return ThinkingBlock(
                self.string(value["thinking"], f"{path}.thinking"),
                self.string(signature, f"{path}.signature"),
            )
        if kind == "tool_use":
            tool_input = value["input"]
            if not isinstance(tool_input, dict):
                raise self.fail(
                    f"{path}.input", f"expected an object, got {_json_type(tool_input)}"
                )
            return ToolUseBlock(
                self.identifier(value["id"], f"{path}.id"),
                self.tool_name(value["name"], f"{path}.name"),
                tool_input,
            )
        is_error = value.get("is_error") or False
        if not isinstance(is_error, bool):
            raise self.fail(f"{path}.is_error", f"expected a boolean, got {_json_type(is_error)}")
        content = value.get("content") or ""
        return ToolResultBlock(
            self.identifier(value["tool_use_id"], f"{path}.tool_use_id"),
            content if isinstance(content, str) else self.text_blocks(content, f"{path}.content"),
            is_error,
        )

    def text_blocks(self, value: Any, path: str) -> list[TextBlock]:
        return [
            self.block(b, f"{path}[{i}]", ("text",)) for i, b in enumerate(self.array(value, path))
        ]

    def identifier(self, value: Any, path: str) -> str:
        if not self.string(value, path):
            raise self.fail(path, "expected a non-empty string")
        return value

    def tool_name(self, value: Any, path: str) -> str:
        if not TOOL_NAME_PATTERN.match(self.string(value, path)):
            raise self.fail(path, f"{value!r} is not a tool name (1-64 letters, digits, _ or -)")
        return value


def _field(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    return names.get(type(value), "a number")


def conversation_from_dict(data: Any, where: str) -> Conversation:
    """A conversation from Anthropic-format JSON: `{"system"?, "messages", "tools"?}`.

    Other top-level keys belong to the caller (request parameters, a data record's task name)
    and are not read. Errors name `where` and the field, e.g.
    `data.jsonl:12: messages[3].content[0].input: expected an object, got a string`.
    """
    reader = _Reader(where)
    if not isinstance(data, dict):
        raise reader.fail("", f"expected an object, got {_json_type(data)}")
    if "messages" not in data:
        raise reader.fail("messages", "missing")
    raw_messages = reader.array(data["messages"], "messages")
    if not raw_messages:
        raise reader.fail("messages", "expected at least one message")
    messages = []
    for i, raw in enumerate(raw_messages):
        path = f"messages[{i}]"
        reader.object(raw, path, {"role", "content"}, set())
        role = raw["role"]
        if role not in _BLOCKS_BY_ROLE:
            raise reader.fail(f"{path}.role", f"expected 'user' or 'assistant', got {role!r}")
        content = raw["content"]
        if isinstance(content, str):
            blocks = [TextBlock(content)] if content else []
        else:
            items = enumerate(reader.array(content, f"{path}.content"))
            blocks = [
                reader.block(b, f"{path}.content[{j}]", _BLOCKS_BY_ROLE[role]) for j, b in items
            ]
        is_prefill = role == "assistant" and i == len(raw_messages) - 1
        if not blocks and not is_prefill:
            raise reader.fail(f"{path}.content", "empty (only a final assistant message may be)")
        messages.append(Message(role, blocks))
    system = data.get("system")
    tools = [] if data.get("tools") is None else _read_tools(reader, data["tools"])
    conversation = Conversation(
        messages, None if system is None else reader.text_or_blocks(system, "system"), tools
    )
    try:
        tool_names_by_id(conversation)
    except ValueError as e:
        raise reader.fail("", str(e)) from None
    return conversation


def _read_tools(reader: _Reader, value: Any) -> list[Tool]:
    tools = []
    for i, raw in enumerate(reader.array(value, "tools")):
        path = f"tools[{i}]"
        reader.object(raw, path, {"name", "input_schema"}, {"description", "type", "cache_control"})
        if raw.get("type") not in (None, "custom"):
            raise reader.fail(f"{path}.type", f"{raw['type']!r}: only custom tools are supported")
        name = reader.tool_name(raw["name"], f"{path}.name")
        if any(tool.name == name for tool in tools):
            raise reader.fail(f"{path}.name", f"{name!r} is defined twice")
        schema = raw["input_schema"]
        if not isinstance(schema, dict):
            raise reader.fail(
                f"{path}.input_schema", f"expected an object, got {_json_type(schema)}"
            )
        description = raw.get("description") or ""
        tools.append(Tool(name, reader.string(description, f"{path}.description"), schema))
    return tools


def conversation_to_dict(conversation: Conversation) -> dict[str, Any]:
    """Anthropic-format JSON; `conversation_from_dict` reads it back to an equal conversation."""
    data: dict[str, Any] = {}
    if conversation.system is not None:
        data["system"] = conversation.system
    data["messages"] = [
        {"role": m.role, "content": content_to_json(m.content)} for m in conversation.messages
    ]
    if conversation.tools:
        data["tools"] = [dataclasses.asdict(tool) for tool in conversation.tools]
    return data


def content_to_json(content: list[Block]) -> str | list[dict[str, Any]]:
    """A message's content as the Messages API writes it: a string for one text block."""
    if len(content) == 1 and isinstance(content[0], TextBlock) and content[0].text:
        return content[0].text  # the common case, written as Anthropic's shorthand
    return [_block_to_json(block) for block in content]


def _block_to_json(block: Block) -> dict[str, Any]:
    fields = dataclasses.asdict(block)
    return {"type": fields.pop("type"), **fields}


def tool_names_by_id(conversation: Conversation) -> dict[str, str]:
    """The tool name of every tool_use id, checking that ids are unique and that each
    tool_result answers an earlier call. Errors name the field (`messages[3].content[0]…`)."""
    names: dict[str, str] = {}
    for i, message in enumerate(conversation.messages):
        for j, block in enumerate(message.content):
            path = f"messages[{i}].content[{j}]"
            if isinstance(block, ToolUseBlock):
                if block.id in names:
                    raise ValueError(f"{path}.id: tool_use id {block.id!r} is used twice")
                names[block.id] = block.name
            elif isinstance(block, ToolResultBlock) and block.tool_use_id not in names:
                raise ValueError(
                    f"{path}.tool_use_id: no earlier tool_use has id {block.tool_use_id!r}"
                )
    return names


# ---- rendering ----


@dataclass
class Rendered:
    ids: list[int]
    loss_mask: list[bool]  # True on the tokens the model is trained to produce


class _Encoder:
    """Accumulates token ids and the loss mask, turn by turn."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.im_start, self.im_end = (
            _special_id(tokenizer, IM_START),
            _special_id(tokenizer, IM_END),
        )
        self.ids: list[int] = []
        self.loss_mask: list[bool] = []

    def add(self, ids: list[int], trained: bool) -> None:
        self.ids += ids
        self.loss_mask += [trained] * len(ids)

    def text(self, text: str, trained: bool = False) -> None:
        self.add(self.tokenizer.encode(text, special_tokens=False), trained)

    def open_turn(self, role: str) -> None:
        self.add([self.im_start], False)
        self.text(f"{role}\n")

    def turn(self, role: str, body: str, trained: bool = False, opening: str = "") -> None:
        """A whole turn; `opening` is untrained text encoded apart, between header and body."""
        self.open_turn(role)
        self.text(opening)
        self.text(body, trained)
        self.add([self.im_end], trained)
        self.text("\n")


def _special_id(tokenizer: Tokenizer, token: str) -> int:
    token_id = tokenizer.token_id(token)
    if token_id is None:
        raise ValueError(f"the tokenizer has no {token} token, so it cannot render ChatML")
    return token_id


def render(conversation: Conversation, tokenizer: Tokenizer, *, thinking: bool) -> Rendered:
    """Token ids of the whole conversation, and the loss mask over the assistant's tokens."""
    encoder = _Encoder(tokenizer)
    _render_turns(encoder, conversation, conversation.messages, thinking)
    return Rendered(encoder.ids, encoder.loss_mask)


def render_prompt(
    conversation: Conversation, tokenizer: Tokenizer, *, thinking: bool, assistant_prefix: str = ""
) -> list[int]:
    """Ids to generate the next assistant turn from.

    The open assistant turn starts with `<think>\n` (thinking on: the model thinks first) or
    the empty think block (off), then `assistant_prefix`. If the last message is the assistant's,
    it is continued (prefill) instead: its blocks, unclosed, then `assistant_prefix`. Feed
    `assistant_prefix` to the `AssistantParser` before the generated text; the parser starts in
    thinking mode exactly when thinking is on and there is no prefill.
    """
    messages = conversation.messages
    prefill = messages[-1] if messages and messages[-1].role == "assistant" else None
    encoder = _Encoder(tokenizer)
    _render_turns(encoder, conversation, messages[:-1] if prefill else messages, thinking)
    encoder.open_turn("assistant")
    if prefill is not None:
        opening = assistant_body(prefill.content, thinking)
    else:
        opening = THINK_PROMPT if thinking else EMPTY_THINK
    encoder.text(opening + assistant_prefix)
    return encoder.ids


def _render_turns(
    encoder: _Encoder, conversation: Conversation, messages: list[Message], thinking: bool
) -> None:
    names = tool_names_by_id(conversation)
    tools = [(tool.name, tool.description, tool.input_schema) for tool in conversation.tools]
    system = system_text(conversation.system, tools)
    if system:
        encoder.turn("system", system)
    for message in messages:
        if message.role == "assistant":
            body = assistant_body(message.content, thinking)
            opening = assistant_opening(message.content, thinking)
            # The opening is what `render_prompt` supplies at inference, so it is context, not
            # a target: trained, the model would learn to choose an empty think block by itself
            # and ignore the thinking toggle. Encoded apart, its ids are the prompt's ids.
            encoder.turn("assistant", body.removeprefix(opening), trained=True, opening=opening)
        else:
            for role, body in _user_turns(message.content, names):
                encoder.turn(role, body)


def assistant_opening(content: list[Block], thinking: bool) -> str:
    """The start of an assistant turn that a generation prompt supplies (`render_prompt`): the
    empty think block when thinking is off and the turn has none, `<think>\n` when the turn
    starts with thinking, else nothing."""
    if content and isinstance(content[0], ThinkingBlock):
        return THINK_PROMPT
    return EMPTY_THINK if _gets_empty_think(content, thinking) else ""


def _gets_empty_think(content: list[Block], thinking: bool) -> bool:
    """Thinking off and no thinking block: the turn opens with an empty one."""
    return not thinking and not any(isinstance(block, ThinkingBlock) for block in content)


def assistant_body(content: list[Block], thinking: bool) -> str:
    """The text of an assistant turn: its blocks in order, after an empty think block when
    thinking is off and the turn has none."""
    parts = [EMPTY_THINK] if _gets_empty_think(content, thinking) else []
    for previous, block in zip([None, *content], content):
        if isinstance(block, TextBlock):
            separator = BLOCK_SEPARATOR if isinstance(previous, TextBlock) else ""
            parts.append(separator + block.text)
        elif isinstance(block, ThinkingBlock):
            parts.append(thinking_block(block.thinking))
        elif isinstance(block, ToolUseBlock):
            parts.append(tool_call(block.name, block.input))
        else:
            raise ValueError(f"a {block.type} block cannot be in an assistant message")
    return "".join(parts)


def _user_turns(content: list[Block], names: dict[str, str]) -> list[tuple[str, str]]:
    """(role, body) of the turns a user message becomes: each run of tool results is one `tool`
    turn, each run of text blocks one `user` turn."""
    turns = []
    for is_result, run in itertools.groupby(content, key=lambda b: isinstance(b, ToolResultBlock)):
        blocks = list(run)
        if is_result:
            results = [tool_result(names[b.tool_use_id], b.text, b.is_error) for b in blocks]
            turns.append(("tool", "\n".join(results)))
            continue
        for block in blocks:
            if not isinstance(block, TextBlock):
                raise ValueError(f"a {block.type} block cannot be in a user message")
        turns.append(("user", BLOCK_SEPARATOR.join(block.text for block in blocks)))
    return turns or [("user", "")]


# The streaming parser lives in chat_parser.py (it imports the block types above); its names are
# importable from here too, as the chat API promises.
_PARSER_NAMES = {"AssistantParser", "BlockStart", "BlockDelta", "BlockStop", "Event"}


def __getattr__(name: str) -> Any:
    if name in _PARSER_NAMES:
        return getattr(importlib.import_module("charter.chat_parser"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
