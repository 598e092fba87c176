"""The one interface through which everything gets text from a model: `Generator`.

The server, `charter generate` and `charter chat`, evaluation, distillation, and the coming
alignment stages (critique and revision, AI feedback, red-teaming, PPO rollouts) all ask a
`Generator` for assistant turns. A request is shaped like an Anthropic Messages API request (a
`chat.Conversation` plus `TurnOptions`); a turn comes back as content blocks, a stop reason and
token usage. Two kinds implement it:

- `LocalGenerator` (`infer/local.py`): a checkpoint on Charter's engine (PyTorch or llama.cpp),
  which renders the conversation in the checkpoint's own chat format and parses the output back;
- `AnthropicGenerator` and `OpenAIGenerator` (`infer/remote.py`): any endpoint that speaks the
  Messages API or OpenAI chat completions, through the official SDKs.

`generate` answers a batch of requests concurrently and returns when all are done; `open` starts
one turn and streams its events (what the server needs); `score` gives the log-probabilities of
given assistant replies, which AI-feedback labels, DPO and PPO need (a backend that cannot say so
raises `ScoringUnsupported`). `load_generator` (`infer/spec.py`) makes either kind from a model
spec string.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

from charter import chat
from charter.chat.parse import Event

# The stop reasons of the Messages API: the engine's four, re-exported for Generator users, a
# turn that ends in tool calls, and one that a safety layer ended (`charter.safety.guard`).
from charter.infer.engine import (  # noqa: F401
    CONTEXT_WINDOW,
    END_TURN,
    MAX_TOKENS,
    STOP_SEQUENCE,
)

TOOL_USE = "tool_use"
REFUSAL = "refusal"

# The id of the request being served, for what a generator logs about it: the server sets it
# per HTTP request (`serve/app.py`); None outside a server.
REQUEST_ID: ContextVar[str | None] = ContextVar("charter_request_id", default=None)


class InvalidRequest(ValueError):
    """The request cannot be answered as given; `field` names the request field at fault."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class Overloaded(RuntimeError):
    """The generator has no room for another turn now; `retry_after` is a hint in seconds."""

    def __init__(self, message: str, retry_after: float = 2.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ScoringUnsupported(NotImplementedError):
    """This backend cannot give log-probabilities of given text."""


# `thinking_budget=ADAPTIVE`: the generator decides whether to think. A local model with a
# thinking format thinks, with at most half of `max_tokens` for it (so its answer always has
# room); one without thinks not; a remote Messages endpoint is sent `{"type": "adaptive"}`.
ADAPTIVE = "adaptive"


def adaptive_budget(max_tokens: int) -> int:
    return max(1, max_tokens // 2)


@dataclass
class TurnOptions:
    """Everything about a turn that is not the conversation (the Messages API's parameters)."""

    max_tokens: int = 256
    thinking_budget: int | Literal["adaptive"] | None = None  # None: thinking off
    tool_choice: Literal["auto", "any", "none", "tool"] = "auto"
    tool_name: str | None = None  # for tool_choice "tool"
    stop_sequences: list[str] = field(default_factory=list)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise InvalidRequest(f"must be ≥ 1, got {self.max_tokens}", "max_tokens")
        budget = self.thinking_budget
        if budget not in (None, ADAPTIVE) and (not isinstance(budget, int) or budget < 1):
            raise InvalidRequest(
                f"must be ≥ 1, got {self.thinking_budget}", "thinking.budget_tokens"
            )
        if any(not s for s in self.stop_sequences):
            raise InvalidRequest("stop sequences must be non-empty strings", "stop_sequences")


@dataclass
class TurnRequest:
    conversation: chat.Conversation
    options: TurnOptions = field(default_factory=TurnOptions)


def user_turn(text: str, system: str | None = None, **options) -> TurnRequest:
    """The common case: one user message (and an optional system prompt)."""
    message = chat.Message("user", [chat.TextBlock(text)])
    return TurnRequest(chat.Conversation([message], system), TurnOptions(**options))


@dataclass
class Turn:
    """One assistant turn: its content blocks, why it ended, and its token usage."""

    content: list[chat.Block]
    stop_reason: str
    stop_sequence: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def text(self) -> str:
        """The text blocks, joined as the renderer joins adjacent text blocks."""
        return chat.BLOCK_SEPARATOR.join(b.text for b in self.content if b.type == "text")


class TurnStream(ABC):
    """One turn being generated: `events()` yields parser events (block start, delta, stop) as
    text arrives; afterwards `turn` holds the finished turn. `input_tokens` is known from the
    start (the Messages API's `message_start` carries it)."""

    input_tokens: int

    @abstractmethod
    def events(self) -> AsyncIterator[Event]: ...

    @property
    @abstractmethod
    def blocks(self) -> list[chat.Block]:
        """The blocks so far (complete up to the last `BlockStop`)."""

    @property
    @abstractmethod
    def turn(self) -> Turn | None:
        """The finished turn; None until `events()` is exhausted."""

    @abstractmethod
    def cancel(self) -> None:
        """Stop generating (the client went away); `events()` may end early."""


@dataclass
class ScoreRequest:
    """A conversation and an assistant reply to it, whose tokens are scored."""

    conversation: chat.Conversation
    reply: list[chat.Block]
    thinking: bool = False


@dataclass
class TokenScores:
    token_ids: list[int]  # the reply's tokens, its end-of-turn token included
    logprobs: list[float]  # log p(token | everything before it), one per token

    @property
    def total(self) -> float:
        return sum(self.logprobs)


class Generator(ABC):
    """A model that answers Messages-API-shaped requests (see the module docstring)."""

    name: str

    @property
    @abstractmethod
    def context_window(self) -> int | None:
        """Tokens of prompt and output per turn, when known."""

    @abstractmethod
    def generate(
        self,
        requests: Sequence[TurnRequest],
        progress: str | None = None,
        errors: Literal["raise", "return"] = "raise",
    ) -> list[Turn] | list[Turn | InvalidRequest]:
        """Turns for `requests`, in order, generated concurrently. With `progress`, a bar of
        that name counts finished turns. A request that cannot be answered (a prompt too long
        for the context, a block the model's format cannot hold) raises `InvalidRequest` before
        anything is generated; with `errors="return"` its place in the result holds that error
        instead, and the others are answered (what batch stages over thousands of prompts
        want)."""

    @abstractmethod
    async def open(self, request: TurnRequest) -> TurnStream:
        """Start one turn (call on an event loop). Raises `InvalidRequest` (or `Overloaded`)
        before generating anything."""

    @abstractmethod
    async def count_tokens(self, request: TurnRequest) -> int:
        """Prompt tokens the request would take."""

    def score(self, requests: Sequence[ScoreRequest]) -> list[TokenScores]:
        """Per-token log-probabilities of each request's reply under the model."""
        raise ScoringUnsupported(f"{type(self).__name__} {self.name!r} cannot score given text")

    @property
    def base(self) -> Generator:
        """The generator that runs the model, under any wrappers (a safety guard's is its inner
        one's): what the server's /health reports on."""
        return self

    def describe(self) -> dict[str, Any]:
        """What this generator is, for reports: its kind, name and settings."""
        return {"kind": type(self).__name__, "name": self.name}

    def close(self) -> None:  # noqa: B027 (optional: most generators hold nothing to release)
        """Release threads, connections and memory."""

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
