"""The one ChatML renderer that training, evaluation and serving share.

Rendering (the strings come from `template.py`):

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
- Hugging Face users get the same text from `CHAT_TEMPLATE` (template.py), the Jinja template
  shipped in every Charter tokenizer: every block type, Anthropic- or OpenAI-shaped messages.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from charter.chat.messages import (
    Block,
    Conversation,
    Message,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    tool_names_by_id,
)
from charter.chat.template import (
    BLOCK_SEPARATOR,
    EMPTY_THINK,
    THINK_PROMPT,
    system_text,
    thinking_block,
    tool_call,
    tool_result,
)
from charter.tokenizer import IM_END, IM_START, Tokenizer

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
