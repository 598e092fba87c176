"""Conversations and Charter's chat format: the one renderer training, evaluation and serving
share, and the streaming parser that reads the model's output back.

    messages.py   the types (Anthropic Messages API shapes) and their JSON, errors naming the field
    template.py   the format's strings, and the Jinja template that writes them for Hugging Face
    render.py     conversation → ChatML ids + the assistant-only loss mask, and generation prompts
    parse.py      generated text → content blocks, as a stream of events
    format.py     how a checkpoint is prompted: Charter's format or its own template

Everything public is importable from `charter.chat` itself.
"""

from charter.chat.messages import (
    TOOL_NAME_PATTERN,
    Block,
    Conversation,
    Message,
    TextBlock,
    ThinkingBlock,
    Tool,
    ToolResultBlock,
    ToolUseBlock,
    content_to_json,
    conversation_from_dict,
    conversation_to_dict,
    tool_names_by_id,
)
from charter.chat.parse import (
    AssistantParser,
    BlockDelta,
    BlockStart,
    BlockStop,
    Event,
    new_tool_use_id,
)
from charter.chat.render import (
    Rendered,
    assistant_body,
    assistant_opening,
    render,
    render_prompt,
)
from charter.chat.template import BLOCK_SEPARATOR, CHAT_TEMPLATE

__all__ = [
    "BLOCK_SEPARATOR",
    "CHAT_TEMPLATE",
    "TOOL_NAME_PATTERN",
    "AssistantParser",
    "Block",
    "BlockDelta",
    "BlockStart",
    "BlockStop",
    "Conversation",
    "Event",
    "Message",
    "Rendered",
    "TextBlock",
    "ThinkingBlock",
    "Tool",
    "ToolResultBlock",
    "ToolUseBlock",
    "assistant_body",
    "assistant_opening",
    "content_to_json",
    "conversation_from_dict",
    "conversation_to_dict",
    "new_tool_use_id",
    "render",
    "render_prompt",
    "tool_names_by_id",
]
