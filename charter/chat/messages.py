"""Conversations as the Anthropic Messages API shapes them: a system prompt, tools, and
user/assistant messages made of content blocks (text, thinking, tool_use, tool_result); read from
and written to Anthropic-format JSON with errors that name the field."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from charter.chat.template import BLOCK_SEPARATOR

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
