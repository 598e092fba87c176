"""The text of Charter's chat format: the tags inside assistant turns, the tools section of the
system turn, and the Jinja chat template that writes the same strings for Hugging Face users.

This module imports nothing from Charter, so `tokenizer.py` can ship the template without an import
cycle. The renderer in `chat.py` builds its strings from the same pieces; a test proves that the
template and the renderer agree on every text-only conversation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
# What a prompt ends with when thinking is on, so the model starts by thinking.
THINK_PROMPT = f"{THINK_OPEN}\n"
# Paragraphs of a user turn, a system prompt or a tool result given as several text blocks.
BLOCK_SEPARATOR = "\n\n"

TOOLS_PREAMBLE = (
    "# Tools\n\n"
    "You can call the tools below. To call one, write\n"
    '<tool_call>{"name": "TOOL_NAME", "input": {...}}</tool_call>\n'
    "where the input is a JSON object that follows the tool's input schema. You may make several "
    "calls in a row. Each result comes back in a tool turn as "
    '<tool_result name="TOOL_NAME">...</tool_result>; then continue your answer.'
)


# How a think block ends. One line break after it, not two: a prompt ending in a single "\n"
# tokenises the same as that "\n" followed by the answer under both GPT-2-style and
# Llama-3-style pre-tokenisers, while "\n\n" is one token at the end of a prompt but two before
# a word.
THINK_END = f"\n{THINK_CLOSE}\n"


def thinking_block(thinking: str) -> str:
    return f"{THINK_OPEN}\n{thinking}{THINK_END}"


# What the model reads when thinking is off: an empty think block, then the answer directly.
EMPTY_THINK = thinking_block("")


def tool_call(name: str, tool_input: dict[str, Any]) -> str:
    body = json.dumps({"name": name, "input": tool_input}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}{body}{TOOL_CALL_CLOSE}"


def tool_result(name: str, content: str, is_error: bool) -> str:
    error = ' error="true"' if is_error else ""
    return f'<tool_result name="{name}"{error}>{content}</tool_result>'


def system_text(system: str | None, tools: Sequence[tuple[str, str, dict[str, Any]]]) -> str:
    """The body of the system turn: the system prompt, then a section describing the tools given
    as (name, description, input schema)."""
    sections = [system] if system else []
    if tools:
        entries = [TOOLS_PREAMBLE]
        for name, description, schema in tools:
            lines = [f"## {name}"] + ([description] if description else [])
            lines.append(f"Input schema: {json.dumps(schema, ensure_ascii=False)}")
            entries.append("\n".join(lines))
        sections.append("\n\n".join(entries))
    return "\n\n".join(sections)


def _literal(text: str) -> str:
    """`text` as a Jinja string literal (Jinja reads JSON's escapes the way Python does)."""
    return json.dumps(text)


# Every line starts with `{%-` or `{{-`, so the template's own layout is stripped whatever the
# environment's trim settings. Messages are Hugging Face style: {"role", "content"} with content
# a string or a list of {"type": "text", "text"} blocks; `tools` may be Anthropic-style
# ({"name", "description", "input_schema"}) or OpenAI-style ({"type": "function", "function":
# {"name", "description", "parameters"}}); `enable_thinking` (default false) is the toggle.
_TEMPLATE = r"""
{%- set thinking = enable_thinking is defined and enable_thinking %}
{%- macro text(content) %}
{%- if content is string %}{{- content }}
{%- else %}{{- content | map(attribute='text') | join(BLOCK_SEPARATOR) }}
{%- endif %}
{%- endmacro %}
{%- set ns = namespace(system='', first=0) %}
{%- if messages and messages[0]['role'] == 'system' %}
{%- set ns.system = text(messages[0]['content']) %}
{%- set ns.first = 1 %}
{%- endif %}
{%- if ns.system or tools %}
{{- '<|im_start|>system\n' + ns.system }}
{%- if tools %}
{%- if ns.system %}{{- '\n\n' }}{%- endif %}
{{- TOOLS_PREAMBLE }}
{%- for tool in tools %}
{%- set fn = tool['function'] if tool['function'] is defined else tool %}
{%- set schema = fn['parameters'] if fn['parameters'] is defined else fn['input_schema'] %}
{{- '\n\n## ' + fn['name'] }}
{%- if fn['description'] %}{{- '\n' + fn['description'] }}{%- endif %}
{{- '\nInput schema: ' + schema | tojson }}
{%- endfor %}
{%- endif %}
{{- '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages[ns.first:] %}
{%- if message['role'] == 'user' %}
{{- '<|im_start|>user\n' + text(message['content']) + '<|im_end|>\n' }}
{%- elif message['role'] == 'assistant' %}
{{- '<|im_start|>assistant\n' }}
{%- if not thinking %}{{- EMPTY_THINK }}{%- endif %}
{{- text(message['content']) + '<|im_end|>\n' }}
{%- else %}
{{- raise_exception('role ' + message['role'] + ' is not supported by this template: a system '
    + 'message must come first, and tool use needs charter.chat') }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
{{- '<|im_start|>assistant\n' }}
{{- THINK_PROMPT if thinking else EMPTY_THINK }}
{%- endif %}"""

# The constants are written into the template as literals: a template must stand alone.
CHAT_TEMPLATE = _TEMPLATE.strip()
for _name, _value in {
    "BLOCK_SEPARATOR": BLOCK_SEPARATOR,
    "TOOLS_PREAMBLE": TOOLS_PREAMBLE,
    "EMPTY_THINK": EMPTY_THINK,
    "THINK_PROMPT": THINK_PROMPT,
}.items():
    CHAT_TEMPLATE = CHAT_TEMPLATE.replace(_name, _literal(_value))
