"""A multi-turn conversation with a model in the terminal (`charter chat --model SPEC`).

Replies stream to stdout as the Generator releases text; the prompt marker and notices go to
stderr, so `charter chat … > transcript.txt` keeps only the model's words. Lines starting with
`/` are commands (`/help` lists them). Ctrl-D or Ctrl-C at the prompt ends the chat with status
0; Ctrl-C during a reply stops that reply, keeps what was shown, and returns to the prompt.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from typing import TextIO

from charter import chat
from charter.chat.parse import BlockDelta
from charter.infer.generator import (
    CONTEXT_WINDOW,
    MAX_TOKENS,
    REFUSAL,
    Generator,
    InvalidRequest,
    Turn,
    TurnOptions,
    TurnRequest,
)
from charter.infer.sampling import SamplingParams

PROMPT = "> "
HELP = """commands:
  /reset         forget the conversation (the system prompt stays)
  /system TEXT   set the system prompt (/system alone shows it)
  /temp X        set the sampling temperature (0 = greedy)
  /help          this list
  /quit          leave (as do Ctrl-D and Ctrl-C at the prompt)"""


@dataclass
class ChatSession:
    """The conversation state and the Generator that continues it."""

    generator: Generator
    system: str | None = None
    temperature: float = 0.8
    max_new_tokens: int = 512
    history: list[chat.Message] = field(default_factory=list)

    def request(self) -> TurnRequest:
        """The next turn's request: the whole history, in the model's own chat format."""
        options = TurnOptions(max_tokens=self.max_new_tokens, temperature=self.temperature)
        return TurnRequest(chat.Conversation(list(self.history), self.system), options)

    def reply(self, user_text: str, out: TextIO, err: TextIO) -> None:
        """Stream the assistant's answer to `user_text` to `out`, and add both turns."""
        self.history.append(chat.Message("user", [chat.TextBlock(user_text)]))
        shown: list[str] = []
        try:
            turn = asyncio.run(self._stream(out, shown))
        except InvalidRequest as e:  # the conversation no longer fits the context window
            self.history.pop()
            _notice(err, f"error: {e.message}; /reset starts a new conversation")
            return
        except KeyboardInterrupt:
            out.write("\n")
            _notice(err, "[reply stopped]")
            self.history.append(chat.Message("assistant", _text_blocks("".join(shown))))
            return
        out.write("\n")
        out.flush()
        self.history.append(chat.Message("assistant", turn.content))
        if turn.stop_reason == MAX_TOKENS:
            _notice(err, f"[reply cut at {self.max_new_tokens} tokens (--max-new-tokens)]")
        elif turn.stop_reason == CONTEXT_WINDOW:
            _notice(err, "[context window full; /reset starts a new conversation]")
        elif turn.stop_reason == REFUSAL:
            _notice(err, "[reply stopped by the safety guard]")

    async def _stream(self, out: TextIO, shown: list[str]) -> Turn:
        stream = await self.generator.open(self.request())
        try:
            async for event in stream.events():
                if isinstance(event, BlockDelta) and event.kind == "text":
                    out.write(event.text)
                    out.flush()
                    shown.append(event.text)
        except BaseException:  # Ctrl-C (or a failure) mid-reply: free the model's row
            stream.cancel()
            raise
        return stream.turn


def _text_blocks(text: str) -> list[chat.Block]:
    return [chat.TextBlock(text)] if text else []


def _notice(err: TextIO, message: str) -> None:
    err.write(message + "\n")
    err.flush()


def run_command(session: ChatSession, line: str, err: TextIO) -> bool:
    """Apply one `/command`; return False when the chat should end."""
    name, _, argument = line[1:].partition(" ")
    argument = argument.strip()
    if name in ("quit", "exit"):
        return False
    if name == "reset":
        session.history.clear()
        _notice(err, "[conversation cleared]")
    elif name == "system":
        if argument:
            session.system = argument
            _notice(err, "[system prompt set]")
        else:
            _notice(err, f"[system prompt: {session.system!r}]")
    elif name == "temp":
        try:
            session.temperature = SamplingParams(temperature=float(argument)).temperature
            _notice(err, f"[temperature {session.temperature:g}]")
        except ValueError as e:
            _notice(err, f"error: /temp needs a number ≥ 0 ({e})")
    elif name == "help":
        _notice(err, HELP)
    else:
        _notice(err, f"error: unknown command /{name}; /help lists the commands")
    return True


def _read_line(stdin: TextIO, err: TextIO) -> str:
    """The next input line without its newline; EOFError at the end of input (Ctrl-D)."""
    if stdin is sys.stdin and stdin.isatty():
        import readline  # noqa: F401  (line editing and history for input())

        return input(PROMPT)
    err.write(PROMPT)
    err.flush()
    line = stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


def chat_loop(session: ChatSession, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> None:
    """Read lines until end of input, `/quit` or Ctrl-C at the prompt."""
    while True:
        try:
            line = _read_line(stdin, stderr).strip()
        except (EOFError, KeyboardInterrupt):
            stderr.write("\n")
            return
        if not line:
            continue
        if line.startswith("/"):
            if not run_command(session, line, stderr):
                return
            continue
        session.reply(line, stdout, stderr)
