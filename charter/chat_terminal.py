"""`charter chat --model DIR`: a multi-turn conversation with a checkpoint in the terminal.

Replies stream to stdout as the engine releases text; the prompt marker and notices go to
stderr, so `charter chat … > transcript.txt` keeps only the model's words. Lines starting with
`/` are commands (`/help` lists them). Ctrl-D or Ctrl-C at the prompt ends the chat with status
0; Ctrl-C during a reply stops that reply, keeps what was shown, and returns to the prompt.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import TextIO

from charter.infer.engine import CONTEXT_WINDOW, MAX_TOKENS, Engine, GenerationRequest
from charter.infer.sampling import SamplingParams
from charter.tokenizer import Tokenizer

PROMPT = "> "
HELP = """commands:
  /reset         forget the conversation (the system prompt stays)
  /system TEXT   set the system prompt (/system alone shows it)
  /temp X        set the sampling temperature (0 = greedy)
  /help          this list
  /quit          leave (as do Ctrl-D and Ctrl-C at the prompt)"""


def render_prompt(tokenizer: Tokenizer, system: str | None, history: list[dict]) -> list[int]:
    """Token ids of the conversation so far, ending in an open assistant turn.

    The one place the chat is rendered. It uses the checkpoint's own chat template rather than
    `charter.chat.render_prompt`: for Charter's models the two give the same text (chat.py's
    template is written to match its renderer), and an imported model gets the format it was
    trained on (SmolLM2's template adds its default system prompt and no think blocks).
    """
    messages = ([{"role": "system", "content": system}] if system else []) + history
    return tokenizer.encode(tokenizer.apply_chat_template(messages, add_generation_prompt=True))


@dataclass
class ChatSession:
    """The conversation state and the engine that continues it."""

    engine: Engine
    system: str | None = None
    temperature: float = 0.8
    max_new_tokens: int = 512
    history: list[dict] = field(default_factory=list)

    def prompt_ids(self) -> list[int]:
        return render_prompt(self.engine.tokenizer, self.system, self.history)

    def reply(self, user_text: str, out: TextIO, err: TextIO) -> None:
        """Stream the assistant's answer to `user_text` to `out`, and add both turns."""
        self.history.append({"role": "user", "content": user_text})
        params = SamplingParams(max_new_tokens=self.max_new_tokens, temperature=self.temperature)
        shown: list[str] = []

        def show(text: str) -> None:
            out.write(text)
            out.flush()
            shown.append(text)

        request = GenerationRequest([], params, on_text=show)
        try:
            request.prompt_ids = self.prompt_ids()
            for _ in self.engine.run([request]):
                pass
        except ValueError as e:  # the conversation no longer fits the context window
            self.history.pop()
            _notice(err, f"error: {e}; /reset starts a new conversation")
            return
        except KeyboardInterrupt:
            request.cancelled = True
            self.engine.step()  # frees the request's cache row
            out.write("\n")
            _notice(err, "[reply stopped]")
            self.history.append({"role": "assistant", "content": "".join(shown)})
            return
        out.write("\n")
        out.flush()
        completion = request.completion
        self.history.append({"role": "assistant", "content": completion.text})
        if completion.stop_reason == MAX_TOKENS:
            _notice(err, f"[reply cut at {self.max_new_tokens} tokens (--max-new-tokens)]")
        elif completion.stop_reason == CONTEXT_WINDOW:
            _notice(err, "[context window full; /reset starts a new conversation]")


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


def cmd_chat(args: argparse.Namespace) -> None:
    from charter.checkpoint import load_tokenizer
    from charter.infer.backends import load_engine

    try:
        tokenizer = load_tokenizer(args.model)
        if not tokenizer.chat_template:
            raise SystemExit(
                f"{args.model} has no chat template; use `charter generate --raw` for plain text"
            )
        session = ChatSession(
            load_engine(args.model, args.backend, max_batch_size=1),
            system=args.system,
            temperature=SamplingParams(temperature=args.temperature).temperature,
            max_new_tokens=SamplingParams(max_new_tokens=args.max_new_tokens).max_new_tokens,
        )
        print(f"chatting with {args.model}; /help lists commands", file=sys.stderr)
        chat_loop(session, sys.stdin, sys.stdout, sys.stderr)
    except KeyboardInterrupt:  # while loading
        print(file=sys.stderr)


def register(verbs: argparse._SubParsersAction) -> None:
    from charter.infer.backends import add_backend_argument

    chat = verbs.add_parser("chat", help="chat with a model in the terminal")
    chat.add_argument("--model", required=True, help="a checkpoint directory with a chat template")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    chat.add_argument("--max-new-tokens", type=int, default=512)
    add_backend_argument(chat)
    chat.set_defaults(func=cmd_chat)
