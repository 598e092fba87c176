"""How a checkpoint is prompted: the chat format it carries, chosen once from its tokenizer.

- `CharterFormat`: a model trained in Charter's format (its tokenizer ships Charter's template,
  as `charter sft` writes it) is rendered by Charter's renderer (`chat.render_prompt`), with
  thinking, tools and prefill, and its output parsed by `AssistantParser`.
- `TemplateFormat`: an imported instruct model (SmolLM2, a Hugging Face directory) keeps the
  format it was trained in, its own Jinja chat template: text-only conversations, no thinking
  block, output taken as plain text. Asked for thinking or tools, it says it has no such format.

The server, `charter generate`, `charter chat` and the evaluations all render through the format
of the model they talk to, so one model and one conversation give the same prompt tokens
everywhere. A template renders a string; the parts of it that are message content are encoded
with special tokens off (as Charter's renderer does), so a literal `<|im_end|>` in a message
stays text instead of ending the turn.
"""

from __future__ import annotations

import hashlib
import secrets
from abc import ABC, abstractmethod
from dataclasses import dataclass

from charter import chat
from charter.chat.parse import AssistantParser, BlockDelta, BlockStart, BlockStop, Event
from charter.tokenizer import Tokenizer

CHARTER, TEMPLATE = "charter", "template"
FORMATS = (CHARTER, TEMPLATE)


class FormatError(ValueError):
    """The conversation uses something the model's chat format cannot express."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass
class Scored:
    ids: list[int]  # prompt and reply
    reply_start: int  # ids[reply_start:] are the reply's tokens, its end-of-turn token included


class ChatFormat(ABC):
    name: str
    has_thinking: bool  # can the model think in a block of its own before answering?
    has_tools: bool

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer

    @abstractmethod
    def prompt(
        self, conversation: chat.Conversation, *, thinking: bool, assistant_prefix: str = ""
    ) -> list[int]:
        """Ids to generate the next assistant turn from (see `chat.render_prompt`)."""

    @abstractmethod
    def scored(
        self, conversation: chat.Conversation, reply: list[chat.Block], *, thinking: bool
    ) -> Scored:
        """Ids of `conversation` followed by `reply` as the assistant's turn."""

    @abstractmethod
    def parser(self, *, starts_in_thinking: bool) -> AssistantParser | PlainTextParser:
        """A parser of the generated text back into content blocks."""


class CharterFormat(ChatFormat):
    name, has_thinking, has_tools = CHARTER, True, True

    def prompt(self, conversation, *, thinking, assistant_prefix=""):
        return chat.render_prompt(
            conversation, self.tokenizer, thinking=thinking, assistant_prefix=assistant_prefix
        )

    def scored(self, conversation, reply, *, thinking):
        answered = chat.Conversation(
            [*conversation.messages, chat.Message("assistant", reply)],
            conversation.system,
            conversation.tools,
        )
        rendered = chat.render(answered, self.tokenizer, thinking=thinking)
        # The mask's last run of True is the reply (and its <|im_end|>); the newline after it
        # belongs to no turn.
        end = len(rendered.loss_mask) - rendered.loss_mask[::-1].index(True)
        start = end
        while start > 0 and rendered.loss_mask[start - 1]:
            start -= 1
        return Scored(rendered.ids[:end], start)

    def parser(self, *, starts_in_thinking):
        return AssistantParser(starts_in_thinking=starts_in_thinking)


class TemplateFormat(ChatFormat):
    name, has_thinking, has_tools = TEMPLATE, False, False

    def prompt(self, conversation, *, thinking, assistant_prefix=""):
        self._check(conversation, thinking)
        messages = conversation.messages
        prefill = ""
        if messages[-1].role == "assistant":  # continue the assistant's own words
            prefill, messages = _text(messages[-1].content), messages[:-1]
        ids = self._encode_template(conversation.system, messages)
        return ids + self.tokenizer.encode(prefill + assistant_prefix, special_tokens=False)

    def scored(self, conversation, reply, *, thinking):
        self._check(conversation, thinking)
        if any(block.type != "text" for block in reply):
            raise FormatError("the model's own chat template holds text only", "reply")
        prompt = self.prompt(conversation, thinking=False)
        end_of_turn = self.tokenizer.eos_token_ids[-1:]  # <|im_end|> for ChatML templates
        reply_ids = self.tokenizer.encode(_text(reply), special_tokens=False) + end_of_turn
        return Scored(prompt + reply_ids, len(prompt))

    def parser(self, *, starts_in_thinking):
        return PlainTextParser()

    def _check(self, conversation: chat.Conversation, thinking: bool) -> None:
        if thinking:
            raise FormatError(
                "this model's own chat template has no thinking block (it was not fine-tuned "
                "in Charter's format)",
                "thinking",
            )
        if conversation.tools:
            raise FormatError("this model's own chat template has no tool format", "tools")
        for i, message in enumerate(conversation.messages):
            for j, block in enumerate(message.content):
                if block.type != "text":
                    raise FormatError(
                        f"a {block.type} block: the model's own chat template holds text only",
                        f"messages[{i}].content[{j}]",
                    )

    def _encode_template(self, system: str | None, messages: list[chat.Message]) -> list[int]:
        """The template's rendering, with each message's text encoded as plain text: the
        template is rendered with a random marker in place of every text, the pieces between
        markers are encoded with special tokens, the texts without. If the template changes
        the texts it is given (say, trims them), the marked rendering differs from the real
        one, and the real one is encoded whole instead."""
        texts = ([system] if system else []) + [_text(m.content) for m in messages]
        markers = [f"\x00{secrets.token_hex(8)}\x00" for _ in texts]
        marked = self._render(bool(system), markers, messages)
        real = self._render(bool(system), texts, messages)
        pieces = marked
        for marker, text in zip(markers, texts):
            pieces = pieces.replace(marker, text, 1)
        if pieces != real:
            return self.tokenizer.encode(real)
        ids: list[int] = []
        rest = marked
        for marker, text in zip(markers, texts):
            before, _, rest = rest.partition(marker)
            ids += self.tokenizer.encode(before) + self.tokenizer.encode(text, special_tokens=False)
        return ids + self.tokenizer.encode(rest)

    def _render(self, has_system: bool, texts: list[str], messages: list[chat.Message]) -> str:
        turns = [{"role": "system", "content": texts[0]}] if has_system else []
        contents = texts[1:] if has_system else texts
        turns += [{"role": m.role, "content": t} for m, t in zip(messages, contents)]
        return self.tokenizer.apply_chat_template(turns, add_generation_prompt=True)


def _text(content: list[chat.Block]) -> str:
    return chat.BLOCK_SEPARATOR.join(block.text for block in content)


class PlainTextParser:
    """The `AssistantParser` interface for a model without tags: everything is one text block."""

    tool_calls = malformed_tool_calls = 0

    def __init__(self) -> None:
        self._text: str | None = None  # None until the first non-empty delta
        self._finished = False

    @property
    def blocks(self) -> list[chat.Block]:
        return [chat.TextBlock(self._text)] if self._text else []

    def feed(self, delta: str) -> list[Event]:
        if not delta:
            return []
        events: list[Event] = []
        if self._text is None:
            self._text = ""
            events.append(BlockStart(0, chat.TextBlock("")))
        self._text += delta
        return [*events, BlockDelta(0, "text", delta)]

    def finish(self) -> list[Event]:
        if self._finished or self._text is None:
            self._finished = True
            return []
        self._finished = True
        return [BlockStop(0)]


# SHA-256 of every template Charter has shipped in its tokenizers (`template.CHAT_TEMPLATE`, as
# of the commits named): a checkpoint saved by an older Charter still carries its own version.
# When the template changes, add the new one's hash and keep the old ones.
CHARTER_TEMPLATES = {
    "df7f70d250cb0a3743b6d42ceaabc7808d930392f4e46d3dc31f235f7df800c9",  # 6822bb0, 2026-11-29
    "fd2124e6858c09f1378fd9b14b40f1431e6b9554dc31673f0433b7891d49c57c",  # d6d701e, 2026-11-29
    "334dff921b3f8489bf8611e1136f689aa7c337468fee0fcee7286a31e9276d01",  # 391418e, 2026-12-04
}


def is_charter_template(template: str | None) -> bool:
    return (
        template is not None and hashlib.sha256(template.encode()).hexdigest() in CHARTER_TEMPLATES
    )


def chat_format(tokenizer: Tokenizer, name: str | None = None) -> ChatFormat:
    """The checkpoint's format: Charter's when its tokenizer carries a template Charter shipped
    (or when `name` says so), else its own template. A tokenizer without a template has none."""
    if name is not None and name not in FORMATS:
        raise ValueError(f"chat format {name!r} is not one of {', '.join(FORMATS)}")
    if name == CHARTER or (name is None and is_charter_template(tokenizer.chat_template)):
        return CharterFormat(tokenizer)
    if not tokenizer.chat_template:
        raise ValueError(
            "the tokenizer has no chat template (tokenizer_config.json): not a chat model"
        )
    return TemplateFormat(tokenizer)
