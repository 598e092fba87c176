"""The generation engine: continuous batching of sequences over the rows of a backend's cache.

A `Backend` runs one model's forward passes and holds a cache of `batch_size` rows (the PyTorch
model and its `KVCache` in `torch_backend.py`, a GGUF file on llama.cpp in
`llamacpp_backend.py`); the `Engine` schedules sequences onto its rows and does everything else:
prompt checks, sampling, logits processors, stop sequences, EOS, the context window,
cancellation, and the `run`, `generate` and `stream` loops.

A new sequence is prefilled alone into a free row (so prompts of any lengths mix without
padding); then every `step()` decodes one token for all active rows at once, each row at its own
position. Finished sequences leave at once and the last active row moves into the hole, so the
active rows are always `0..n-1` and a decode step is one batched forward over a contiguous
slice. Sequences can join between any two steps: this is continuous batching, and `generate()`
and the server run the same loop.

    engine = Engine(TorchBackend(model, max_batch_size=4), tokenizer)
    engine = Engine(LlamaCppBackend("model.gguf", max_batch_size=4), tokenizer)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from charter.infer.detokenizer import TextStream
from charter.infer.sampling import SamplingParams, sample_next_token
from charter.tokenizer import Tokenizer

# Why a generation ended (the names of the Anthropic Messages API).
END_TURN, MAX_TOKENS, STOP_SEQUENCE = "end_turn", "max_tokens", "stop_sequence"
CONTEXT_WINDOW = "model_context_window_exceeded"

# Adjusts the next-token logits (V,) given the ids generated so far, before sampling: e.g. to
# force the tokens that close a thinking block once its budget is spent.
LogitsProcessor = Callable[[list[int], torch.Tensor], torch.Tensor]


class Backend(ABC):
    """What an engine runs on: one model's forward passes, and a cache of `batch_size` rows of
    up to `max_len` tokens each, one sequence per row.

    The engine keeps its sequences in rows 0…n-1: it prefills a new one into row n, decodes rows
    0…n-1 together, and closes a gap by moving the last row into it (`move_row`)."""

    batch_size: int  # rows of the cache
    max_len: int  # tokens each row holds: the context window
    vocab_size: int
    eos_token_ids: Sequence[int]  # the model's own end-of-turn ids: the engine adds its tokenizer's
    device: torch.device  # where the logits are (and the samplers' random generators)

    @abstractmethod
    def prefill(self, prompt: list[int], row: int) -> torch.Tensor:
        """Logits (V,) of the token after `prompt`, which replaces whatever row `row` held."""

    @abstractmethod
    def decode(self, last_tokens: list[int]) -> Sequence[torch.Tensor]:
        """Logits (V,) of the next token of each of rows 0…B-1, whose last tokens (not yet
        cached) are `last_tokens`; each row's cache grows by its token. The logits may be
        views valid only until the next forward pass: the engine samples from them at once."""

    @abstractmethod
    def move_row(self, src: int, dst: int) -> None:
        """Move row `src`'s sequence into row `dst` (whose own sequence has left)."""

    @abstractmethod
    def token_logprobs(
        self, sequences: Sequence[Sequence[int]], starts: Sequence[int], batch_size: int = 8
    ) -> list[list[float]]:
        """`Engine.token_logprobs`; a backend that cannot score raises NotImplementedError,
        saying what can."""

    def close(self) -> None:  # noqa: B027 (optional: most backends hold nothing to free)
        """Free what the backend holds outside Python's memory."""


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    stop_reason: str
    stop_sequence: str | None
    prompt_tokens: int
    end_token_id: int | None = None  # the end-of-turn token sampled (not in token_ids)


@dataclass
class GenerationRequest:
    """One sequence being generated. `on_text` receives each piece of released text;
    `logits_processors` run in order on every next-token distribution of this sequence."""

    prompt_ids: list[int]
    params: SamplingParams
    on_text: Callable[[str], None] | None = None
    logits_processors: list[LogitsProcessor] = field(default_factory=list)
    # filled in by the engine
    generated: list[int] = field(default_factory=list)
    completion: Completion | None = None
    cancelled: bool = False

    @property
    def finished(self) -> bool:
        return self.completion is not None


class _Row:
    """Engine-side state of a request while it holds a row of the backend's cache."""

    def __init__(
        self, request: GenerationRequest, tokenizer: Tokenizer, device: torch.device
    ) -> None:
        self.request = request
        self.stream = TextStream(tokenizer, request.params.stop)
        self.generator = request.params.make_generator(device)


class Engine:
    def __init__(
        self,
        backend: Backend,
        tokenizer: Tokenizer,
        eos_token_ids: Sequence[int] | None = None,
    ) -> None:
        """Generation on `backend` with `tokenizer` (the model's). A sequence's turn ends on
        any of `eos_token_ids`: by default the backend's model's and the tokenizer's.
        `max_len`, the context window, is the backend's; lowering it shortens every sequence."""
        self.backend = backend
        self.tokenizer = tokenizer
        self.max_len = backend.max_len
        self.eos_token_ids = set(
            eos_token_ids
            if eos_token_ids is not None
            else [*backend.eos_token_ids, *tokenizer.eos_token_ids]
        )
        self._rows: list[_Row] = []  # active rows, in the backend's row order

    @property
    def free_rows(self) -> int:
        return self.backend.batch_size - len(self._rows)

    @property
    def max_batch_size(self) -> int:
        return self.backend.batch_size

    @property
    def active_requests(self) -> list[GenerationRequest]:
        """The requests holding a row, in row order."""
        return [row.request for row in self._rows]

    def drop_all(self) -> None:
        """Forget every active request (after a failed step: their rows are free again)."""
        self._rows.clear()

    def close(self) -> None:
        """Free the backend's resources now (llama.cpp's; otherwise when garbage collected)."""
        self.backend.close()

    # ---- the continuous-batching core ----

    def add(self, request: GenerationRequest) -> None:
        """Prefill `request`'s prompt into a free row and choose its first token."""
        if not self.free_rows:
            raise RuntimeError("no free row in the KV cache")
        prompt = request.prompt_ids
        if not prompt:
            raise ValueError("prompt is empty")
        if len(prompt) >= self.max_len:
            raise ValueError(
                f"prompt is {len(prompt)} tokens; the context window is {self.max_len} tokens"
            )
        unknown = [t for t in prompt if not 0 <= t < self.backend.vocab_size]
        if unknown:
            raise ValueError(f"prompt token id(s) {unknown[:5]} outside the vocabulary")
        index = len(self._rows)
        logits = self.backend.prefill(prompt, index)
        self._rows.append(_Row(request, self.tokenizer, self.backend.device))
        self._accept(index, logits)

    def step(self) -> list[GenerationRequest]:
        """Decode one token for every active row; return the requests that finished, including
        any that ended on their first token when `add` prefilled them."""
        self._drop_cancelled()
        done = self._collect_finished()
        if self._rows:
            logits = self.backend.decode([r.request.generated[-1] for r in self._rows])
            for index in range(len(self._rows)):
                self._accept(index, logits[index])
        return done + self._collect_finished()

    # ---- sampling and bookkeeping ----

    def _accept(self, index: int, logits: torch.Tensor) -> None:
        row = self._rows[index]
        request, params = row.request, row.request.params
        for process in request.logits_processors:
            logits = process(request.generated, logits)
        token = sample_next_token(logits, params, row.generator)
        if token in self.eos_token_ids:
            return self._finish(row, END_TURN, token)
        request.generated.append(token)
        delta = row.stream.push(token)
        if delta and request.on_text:
            request.on_text(delta)
        if row.stream.stop_sequence is not None:
            self._finish(row, STOP_SEQUENCE)
        elif len(request.generated) >= params.max_new_tokens:
            self._finish(row, MAX_TOKENS)
        elif len(request.prompt_ids) + len(request.generated) >= self.max_len:  # window full
            self._finish(row, CONTEXT_WINDOW)

    def _finish(self, row: _Row, reason: str, end_token_id: int | None = None) -> None:
        tail = row.stream.finish()
        if tail and row.request.on_text:
            row.request.on_text(tail)
        request = row.request
        request.completion = Completion(
            text=row.stream.text,
            token_ids=list(request.generated),
            stop_reason=reason,
            stop_sequence=row.stream.stop_sequence,
            prompt_tokens=len(request.prompt_ids),
            end_token_id=end_token_id,
        )

    def _drop_cancelled(self) -> None:
        for index in reversed(range(len(self._rows))):
            if self._rows[index].request.cancelled:
                self._remove(index)

    def _collect_finished(self) -> list[GenerationRequest]:
        done = []
        for index in reversed(range(len(self._rows))):
            if self._rows[index].request.finished:
                done.append(self._rows[index].request)
                self._remove(index)
        return done[::-1]

    def _remove(self, index: int) -> None:
        last = len(self._rows) - 1
        if index != last:
            self.backend.move_row(last, index)
            self._rows[index] = self._rows[last]
        self._rows.pop()

    # ---- loops ----

    def run(self, requests: Sequence[GenerationRequest]) -> Iterator[list[GenerationRequest]]:
        """Generate all `requests`, admitting waiting ones whenever a row is free; after every
        decode step, yield the requests that finished."""
        waiting = list(requests)[::-1]
        while waiting or self._rows:
            while waiting and self.free_rows:
                self.add(waiting.pop())
            yield self.step()

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams | Sequence[SamplingParams],
        progress: str | None = None,
        logits_processors: Sequence[list[LogitsProcessor]] | None = None,
    ) -> list[Completion]:
        """Completions of token-id prompts, in order; `logits_processors`, if given, holds each
        prompt's own. With `progress`, a bar of that name counts finished completions."""
        params_list = [params] * len(prompts) if isinstance(params, SamplingParams) else params
        processors = logits_processors or [[] for _ in prompts]
        requests = [
            GenerationRequest(list(p), sp, logits_processors=list(lp))
            for p, sp, lp in zip(prompts, params_list, processors, strict=True)
        ]
        with tqdm(
            total=len(requests), desc=progress, unit="completion", disable=progress is None
        ) as bar:
            for finished in self.run(requests):
                bar.update(len(finished))
        return [r.completion for r in requests]

    def stream(self, prompt: Sequence[int], params: SamplingParams) -> Iterator[str]:
        """Text pieces of one completion as they become final."""
        pieces: list[str] = []
        for _ in self.run([GenerationRequest(list(prompt), params, on_text=pieces.append)]):
            yield from pieces
            pieces.clear()

    def token_logprobs(
        self, sequences: Sequence[Sequence[int]], starts: Sequence[int], batch_size: int = 8
    ) -> list[list[float]]:
        """log p(token | the tokens before it) for the tokens of each sequence from its start
        index on, `batch_size` sequences per forward pass; NotImplementedError from a backend
        that cannot score."""
        return self.backend.token_logprobs(sequences, starts, batch_size)
