"""The text of Charter's chat format: the tags inside assistant turns, the tools section of the
system turn, and `CHAT_TEMPLATE`, the Jinja template that writes the same text for Hugging Face.

This module imports nothing from Charter, so `tokenizer.py` can ship the template without an import
cycle. `render.py` is the format; the template exists only for Hugging Face users'
`tokenizer.apply_chat_template(messages, tools=..., enable_thinking=..., add_generation_prompt=...)`
on a saved Charter tokenizer, and tests/test_chat_template.py proves that it writes exactly the
renderer's text, through Charter's `Tokenizer.apply_chat_template` and through transformers'.
It reads messages the way Hugging Face users give them:

- `content` is a string or a list of blocks, Anthropic-style: text, thinking and tool_use
  (`id`, `name`, `input`) in assistant messages; text and tool_result (`tool_use_id`, `content` a
  string or text blocks, `is_error`) in user messages.
- The OpenAI shape: an assistant's `tool_calls` (`{"function": {"name", "arguments"}}`) are
  tool_use blocks after its content, and its `reasoning_content` (or the `thinking`/`reasoning`
  transformers also accepts) a thinking block before it. A `{"role": "tool", "content"}` message
  is a tool_result; a run of them, with the tool results that end the message before, is one
  tool turn. A result names the tool of the earlier call whose id it gives (`tool_use_id`, or the
  tool message's `tool_call_id`), else the tool message's own `name`; with neither it is an error.
- System and developer messages, wherever they are, make the system prompt, joined by a blank
  line, as Charter's OpenAI endpoint reads them. Tools are Anthropic-style (`name`,
  `description`, `input_schema`) or OpenAI-style (`{"type": "function", "function": {"name",
  "description", "parameters"}}`).
- `enable_thinking` (default off) is the renderer's `thinking`; `add_generation_prompt` opens the
  assistant turn as `render_prompt` does. To continue a final assistant message (the renderer's
  prefill), use transformers' `continue_final_message`; `add_generation_prompt` closes it instead.

JSON: the template writes tool inputs given as objects, and input schemas, with `tojson`, which
Charter's environment and transformers' both define as `json.dumps(value, ensure_ascii=False)`,
the renderer's call (key order kept, `", "` and `": "`, non-ASCII as is, no HTML escaping). An
OpenAI `arguments` string is written as it is, because Jinja cannot parse JSON: the text equals
the renderer's only when the string is what `json.dumps(arguments, ensure_ascii=False)` writes
(OpenAI's compact `{"a":1}` stays compact). The template raises where the renderer does (a block
where it cannot be, a result for no earlier call) but does not check that tool_use ids are
unique (a result names the latest earlier call with its id). Token ids from tokenising the
template's text equal the renderer's except when a turn's body starts with a line break
(`render.py`).
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


# The constants are set at the top as literals (a template must stand alone). Every tag strips
# the whitespace before it (`{%-`, `{{-`, `{#-`), so the template's own layout never reaches the
# text, whatever the environment's trim settings. Pass 1 turns the messages into Charter's
# conversation (a system prompt, user/assistant messages of content blocks); pass 2 renders that
# as `render.py` does.
_TEMPLATE = r"""
{%- set BLOCK_SEPARATOR = <BLOCK_SEPARATOR> %}
{%- set TOOLS_PREAMBLE = <TOOLS_PREAMBLE> %}
{%- set THINK_PROMPT = <THINK_PROMPT> %}
{%- set THINK_END = <THINK_END> %}
{%- set EMPTY_THINK = <EMPTY_THINK> %}
{%- set TOOL_CALL_OPEN = <TOOL_CALL_OPEN> %}
{%- set TOOL_CALL_CLOSE = <TOOL_CALL_CLOSE> %}
{%- set thinking = enable_thinking is defined and enable_thinking %}

{#- A system prompt or tool result: a string, or text blocks joined by a blank line. #}
{%- macro text(content) %}
{%- if content is string %}{{- content }}
{%- else %}
{%- for block in content or [] %}
{%- if block.type != 'text' %}
{{- raise_exception('expected text blocks, got a block of type ' ~ block.type) }}
{%- endif %}
{%- if not loop.first %}{{- BLOCK_SEPARATOR }}{%- endif %}
{{- block.text }}
{%- endfor %}
{%- endif %}
{%- endmacro %}

{#- `input` is a dict, written as json.dumps(..., ensure_ascii=False) writes it, or an OpenAI
    `arguments` string, written as it is (Jinja cannot parse JSON). #}
{%- macro tool_call(block) %}
{{- TOOL_CALL_OPEN + '{"name": ' + (block.name | tojson) + ', "input": ' }}
{%- if block.input is string %}{{- block.input or '{}' }}
{%- elif block.input is none or block.input is undefined %}{{- '{}' }}
{%- else %}{{- block.input | tojson }}
{%- endif %}
{{- '}' + TOOL_CALL_CLOSE }}
{%- endmacro %}

{#- A result names its tool: the tool of the earlier call whose id it gives (tool_use_id, or an
    OpenAI tool message's tool_call_id), else the tool message's `name`. #}
{%- macro tool_result(block, earlier) %}
{%- set found = namespace(name=block.name) %}
{%- if block.tool_use_id %}
{%- set found.name = none %}
{%- for message in earlier if message.role == 'assistant' %}
{%- for call in message.content if call.type == 'tool_use' and call.id == block.tool_use_id %}
{%- set found.name = call.name %}
{%- endfor %}
{%- endfor %}
{%- if found.name is none %}
{{- raise_exception('no earlier tool call has id ' ~ block.tool_use_id) }}
{%- endif %}
{%- elif not found.name %}
{{- raise_exception('a tool message needs tool_call_id or name') }}
{%- endif %}
{{- '<tool_result name="' + found.name + '"' + (' error="true"' if block.is_error else '') }}
{{- '>' + text(block.content) + '</tool_result>' }}
{%- endmacro %}

{#- Pass 1. Content is a string (one text block) or a list of blocks. System and developer
    messages make the system prompt; an assistant's reasoning (`reasoning_content`, or the
    `thinking`/`reasoning` transformers also accepts) is a thinking block before its content, and
    its OpenAI `tool_calls` are tool_use blocks after it; each `tool` message is a tool_result
    block, joining a user message that ends in tool results, so a run of them is one tool turn. #}
{%- set ns = namespace(system=[], messages=[]) %}
{%- for message in messages %}
{%- set content = message.content if message.content is defined and message.content is not none
    else '' %}
{%- if content is string %}
{%- set content = [{'type': 'text', 'text': content}] if content else [] %}
{%- endif %}
{%- if message.role in ['system', 'developer'] %}
{%- set ns.system = ns.system + [text(content)] %}
{%- elif message.role == 'user' %}
{%- set ns.messages = ns.messages + [{'role': 'user', 'content': content}] %}
{%- elif message.role == 'assistant' %}
{%- set turn = namespace(blocks=content) %}
{%- set reasoning = [message.reasoning_content, message.thinking, message.reasoning]
    | select('string') | first %}
{%- if reasoning %}
{%- set turn.blocks = [{'type': 'thinking', 'thinking': reasoning}] + turn.blocks %}
{%- endif %}
{%- for call in message.tool_calls or [] %}
{%- set function = call.function if call.function is defined else call %}
{%- set turn.blocks = turn.blocks + [{'type': 'tool_use', 'id': call.id, 'name': function.name,
    'input': function.arguments}] %}
{%- endfor %}
{%- set ns.messages = ns.messages + [{'role': 'assistant', 'content': turn.blocks}] %}
{%- elif message.role == 'tool' %}
{%- set result = {'type': 'tool_result', 'tool_use_id': message.tool_call_id,
    'name': message.name, 'content': content} %}
{%- set last = ns.messages[-1] if ns.messages else none %}
{%- if last and last.role == 'user' and last.content and last.content[-1].type == 'tool_result' %}
{%- set ns.messages = ns.messages[:-1] + [{'role': 'user', 'content': last.content + [result]}] %}
{%- else %}
{%- set ns.messages = ns.messages + [{'role': 'user', 'content': [result]}] %}
{%- endif %}
{%- else %}
{{- raise_exception('role ' ~ message.role ~ ' is not supported: expected system, developer, '
    ~ 'user, assistant or tool') }}
{%- endif %}
{%- endfor %}

{#- Pass 2: the system turn, the system prompt then the tools section. Tools are Anthropic-style
    ({"name", "description", "input_schema"}) or OpenAI-style ({"type": "function", "function":
    {"name", "description", "parameters"}}). #}
{%- set system = ns.system | join(BLOCK_SEPARATOR) %}
{%- if system or tools %}
{{- '<|im_start|>system\n' + system }}
{%- if tools %}
{%- if system %}{{- BLOCK_SEPARATOR }}{%- endif %}
{{- TOOLS_PREAMBLE }}
{%- for tool in tools %}
{%- set fn = tool.function if tool.function is defined else tool %}
{%- set schema = fn.parameters if fn.parameters is defined else fn.input_schema %}
{{- '\n\n## ' + fn.name }}
{%- if fn.description %}{{- '\n' + fn.description }}{%- endif %}
{{- '\nInput schema: ' + schema | tojson }}
{%- endfor %}
{%- endif %}
{{- '<|im_end|>\n' }}
{%- endif %}

{#- Each user message: a user turn per run of text blocks (joined by a blank line), a tool turn
    per run of tool results (one per line). Each assistant message: its blocks in order, after an
    empty think block when thinking is off and it has no thinking block. #}
{%- for message in ns.messages %}
{%- set index = loop.index0 %}
{%- if message.role == 'user' %}
{%- for block in message.content %}
{%- set is_result = block.type == 'tool_result' %}
{%- if loop.first or (loop.previtem.type == 'tool_result') != is_result %}
{{- '<|im_start|>' + ('tool' if is_result else 'user') + '\n' }}
{%- else %}{{- '\n' if is_result else BLOCK_SEPARATOR }}
{%- endif %}
{%- if is_result %}{{- tool_result(block, ns.messages[:index]) }}
{%- elif block.type == 'text' %}{{- block.text }}
{%- else %}{{- raise_exception('a user message cannot hold a block of type ' ~ block.type) }}
{%- endif %}
{%- if loop.last or (loop.nextitem.type == 'tool_result') != is_result %}
{{- '<|im_end|>\n' }}
{%- endif %}
{%- endfor %}
{%- if not message.content %}{{- '<|im_start|>user\n<|im_end|>\n' }}{%- endif %}
{%- else %}
{{- '<|im_start|>assistant\n' }}
{%- if not thinking and not message.content | selectattr('type', 'equalto', 'thinking') | list %}
{{- EMPTY_THINK }}
{%- endif %}
{%- for block in message.content %}
{%- if block.type == 'text' %}
{%- if not loop.first and loop.previtem.type == 'text' %}{{- BLOCK_SEPARATOR }}{%- endif %}
{{- block.text }}
{%- elif block.type == 'thinking' %}{{- THINK_PROMPT + block.thinking + THINK_END }}
{%- elif block.type == 'tool_use' %}{{- tool_call(block) }}
{%- else %}
{{- raise_exception('an assistant message cannot hold a block of type ' ~ block.type) }}
{%- endif %}
{%- endfor %}
{{- '<|im_end|>\n' }}
{%- endif %}
{%- endfor %}

{#- The generation prompt opens the assistant turn as `render_prompt` does. #}
{%- if add_generation_prompt %}
{{- '<|im_start|>assistant\n' + (THINK_PROMPT if thinking else EMPTY_THINK) }}
{%- endif %}"""

CHAT_TEMPLATE = _TEMPLATE.strip()
for _name, _value in {
    "BLOCK_SEPARATOR": BLOCK_SEPARATOR,
    "TOOLS_PREAMBLE": TOOLS_PREAMBLE,
    "THINK_PROMPT": THINK_PROMPT,
    "THINK_END": THINK_END,
    "EMPTY_THINK": EMPTY_THINK,
    "TOOL_CALL_OPEN": TOOL_CALL_OPEN,
    "TOOL_CALL_CLOSE": TOOL_CALL_CLOSE,
}.items():
    CHAT_TEMPLATE = CHAT_TEMPLATE.replace(f"<{_name}>", _literal(_value))
