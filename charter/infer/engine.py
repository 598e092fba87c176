"""The generation engine: batched decoding over a shared, pre-allocated KV cache.

Sequences occupy rows of one `KVCache`. A new sequence is prefilled alone into a free row (so
prompts of any lengths mix without padding); then every `step()` decodes one token for all active
rows at once, each row at its own position. Finished sequences leave at once and the last active
row moves into the hole, so the active rows are always `0..n-1` and a decode step is one batched
forward over a contiguous slice. Sequences can join between any two steps: this is continuous
batching, and `generate()` and the server run the same loop.

An engine shares its model's weights (no copy) and keeps its cache for its life, so one built on
a model being trained samples from the current weights after every optimizer step, with nothing
rebuilt: what RL's rollouts need. Its forward passes run in eval mode and give a model in
training mode its modes back afterwards (`eval_mode`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from charter.infer.detokenizer import TextStream
from charter.infer.frozen_step import FrozenDecodeStep
from charter.infer.sampling import SamplingParams, sample_next_token
from charter.model import KVCache, Transformer
from charter.tokenizer import Tokenizer

# Why a generation ended (the names of the Anthropic Messages API).
END_TURN, MAX_TOKENS, STOP_SEQUENCE = "end_turn", "max_tokens", "stop_sequence"
CONTEXT_WINDOW = "model_context_window_exceeded"

# Adjusts the next-token logits (V,) given the ids generated so far, before sampling: e.g. to
# force the tokens that close a thinking block once its budget is spent.
LogitsProcessor = Callable[[list[int], torch.Tensor], torch.Tensor]


@dataclass
class Completion:
    text: str
    token_ids: list[int]
    stop_reason: str
    stop_sequence: str | None
    prompt_tokens: int


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
    """Engine-side state of a request while it holds a KV cache row."""

    def __init__(self, request: GenerationRequest, tokenizer: Tokenizer, device: str) -> None:
        self.request = request
        self.stream = TextStream(tokenizer, request.params.stop)
        self.generator = request.params.make_generator(device)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """`model` in eval mode, and every submodule back in its own mode afterwards. A model already
    in eval mode (one being served) is left alone, at no cost."""
    if not model.training:
        yield
        return
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _forward_pass(method: Callable) -> Callable:
    """An engine method that runs the model: in inference mode, the model in eval mode."""

    @functools.wraps(method)
    def run(self: Engine, *args, **kwargs):
        with torch.inference_mode(), eval_mode(self.model):
            return method(self, *args, **kwargs)

    return run


class Engine:
    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer,
        max_batch_size: int = 8,
        max_len: int | None = None,
        eos_token_ids: Sequence[int] | None = None,
        compile: bool = False,
        frozen: bool = False,
        follow_weights: bool = False,
    ) -> None:
        """`compile=True` compiles the decode step with torch.compile (dynamic batch size and
        length: one compilation serves batch 1, one every larger batch): it removes most of the
        per-operation overhead that dominates decoding small models, at the price of compiling
        (tens of seconds) on the first step of each.

        `frozen=True` (with `compile`) compiles the step ahead of time instead, with the
        weights as constants (`FrozenDecodeStep`): neither guards nor Python between its kernels,
        and inductor's autotuned matrix kernels, which with bf16 weights on a CPU read them
        about three times as fast as PyTorch's bf16 matrix-vector products. Compiling then
        takes minutes, and weights changed after it are not seen: for serving and evaluation,
        not for sampling from a model being trained. A model whose linear layers are in int8
        (`quantize_int8`) runs them there as oneDNN's int8 products, half the bytes of bf16.

        Otherwise (eager, or `compile` alone) the engine follows its model: every forward pass
        reads the weights the model has then. `follow_weights=True` says the model will be
        trained while the engine samples from it, and refuses a frozen engine, which would
        silently sample from the weights it compiled. The model's modes are left as found."""
        if frozen and not compile:
            raise ValueError("frozen=True is a way of compiling: it needs compile=True")
        if frozen and follow_weights:
            raise ValueError(
                "a frozen engine compiles the weights in and cannot follow a model being "
                "trained: for follow_weights, use an eager engine or compile=True alone"
            )
        self.model = model
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.max_len = min(
            max_len or model.config.max_position_embeddings, model.config.max_position_embeddings
        )
        self.eos_token_ids = set(
            eos_token_ids
            if eos_token_ids is not None
            else model.config.eos_token_ids + tokenizer.eos_token_ids
        )
        self.vocab_size = model.config.vocab_size
        dtype = next(model.parameters()).dtype
        self.cache = KVCache(model.config, max_batch_size, self.max_len, dtype, self.device)
        self.rows: list[_Row] = []  # active rows, in cache-row order
        self._decode = self._decode_step
        if frozen:
            self._decode = FrozenDecodeStep(model, self.cache)
        elif compile:
            self._decode = torch.compile(self._decode_step, dynamic=True)
            # Only the batch and the attended length vary. The cache's tensors keep their shapes
            # for the engine's life: static, their sizes are constants in the compiled step and
            # their guards quick checks; dynamic, each step ran a Python function comparing every
            # layer's cache sizes and strides (0.5 ms of a step's guards for SmolLM2).
            cache = self.cache
            for tensor in (*cache.k, *cache.v, cache.lengths, cache.rope_cos, cache.rope_sin):
                torch._dynamo.mark_static(tensor)

    @property
    def free_rows(self) -> int:
        return self.cache.batch_size - len(self.rows)

    @property
    def max_batch_size(self) -> int:
        return self.cache.batch_size

    @property
    def active_requests(self) -> list[GenerationRequest]:
        """The requests holding a cache row, in row order."""
        return [row.request for row in self.rows]

    def drop_all(self) -> None:
        """Forget every active request (after a failed step: their rows are free again)."""
        self.rows.clear()

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
        unknown = [t for t in prompt if not 0 <= t < self.vocab_size]
        if unknown:
            raise ValueError(f"prompt token id(s) {unknown[:5]} outside the vocabulary")
        index = len(self.rows)
        logits = self._prefill(prompt, index)
        self.rows.append(_Row(request, self.tokenizer, self.device))
        self._accept(index, logits)

    def step(self) -> list[GenerationRequest]:
        """Decode one token for every active row; return the requests that finished, including
        any that ended on their first token when `add` prefilled them."""
        self._drop_cancelled()
        done = self._collect_finished()
        if self.rows:
            logits = self._next_token_logits([r.request.generated[-1] for r in self.rows])
            for index in range(len(self.rows)):
                self._accept(index, logits[index])
        return done + self._collect_finished()

    # ---- the forward passes (what a backend replaces) ----

    @_forward_pass
    def _prefill(self, prompt: list[int], index: int) -> torch.Tensor:
        """Logits (V,) of the token after `prompt`, whose keys and values fill row `index`."""
        self.cache.lengths[index] = 0
        ids = torch.tensor([prompt], device=self.device)  # (1, T)
        hidden = self.model.hidden_states(ids, cache=self.cache, rows=slice(index, index + 1))
        return self.model.logits(hidden[:, -1])[0]

    @_forward_pass
    def _next_token_logits(self, last_tokens: list[int]) -> Sequence[torch.Tensor]:
        """Logits (V,) of the next token of each of rows 0…B-1 (here one (B, V) tensor), whose
        last tokens are `last_tokens`; each row's cache grows by one token."""
        last = torch.tensor([[t] for t in last_tokens], device=self.device)  # (B, 1)
        attend_len = int(self.cache.lengths[: len(last_tokens)].max()) + 1
        return self._decode(last, attend_len)

    def _decode_step(self, last: torch.Tensor, attend_len: int) -> torch.Tensor:
        """Logits (B, V) of the next token of rows 0…B-1, whose last tokens are `last` (B, 1)."""
        return self.model.decode_step(last, self.cache, attend_len)

    # ---- sampling and bookkeeping ----

    def _accept(self, index: int, logits: torch.Tensor) -> None:
        row = self.rows[index]
        request, params = row.request, row.request.params
        for process in request.logits_processors:
            logits = process(request.generated, logits)
        token = sample_next_token(logits, params, row.generator)
        if token in self.eos_token_ids:
            return self._finish(row, END_TURN)
        request.generated.append(token)
        delta = row.stream.push(token)
        if delta and request.on_text:
            request.on_text(delta)
        if row.stream.stop_sequence is not None:
            self._finish(row, STOP_SEQUENCE)
        elif len(request.generated) >= params.max_new_tokens:
            self._finish(row, MAX_TOKENS)
        elif int(self.cache.lengths[index]) + 1 >= self.max_len:
            self._finish(row, CONTEXT_WINDOW)

    def _finish(self, row: _Row, reason: str) -> None:
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
        )

    def _drop_cancelled(self) -> None:
        for index in reversed(range(len(self.rows))):
            if self.rows[index].request.cancelled:
                self._remove(index)

    def _collect_finished(self) -> list[GenerationRequest]:
        done = []
        for index in reversed(range(len(self.rows))):
            if self.rows[index].request.finished:
                done.append(self.rows[index].request)
                self._remove(index)
        return done[::-1]

    def _remove(self, index: int) -> None:
        last = len(self.rows) - 1
        if index != last:
            self.cache.move_row(last, index)
            self.rows[index] = self.rows[last]
        self.rows.pop()

    # ---- loops ----

    def run(self, requests: Sequence[GenerationRequest]) -> Iterator[list[GenerationRequest]]:
        """Generate all `requests`, admitting waiting ones whenever a row is free; after every
        decode step, yield the requests that finished."""
        waiting = list(requests)[::-1]
        while waiting or self.rows:
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

    @_forward_pass
    def token_logprobs(
        self, sequences: Sequence[Sequence[int]], starts: Sequence[int], batch_size: int = 8
    ) -> list[list[float]]:
        """log p(token | the tokens before it) for the tokens of each sequence from its start
        index on: one forward pass per batch, right-padded (causal attention leaves the real
        tokens' logits untouched by padding after them)."""
        scores = []
        for first in range(0, len(sequences), batch_size):
            chunk = [list(s) for s in sequences[first : first + batch_size]]
            longest = max(len(s) for s in chunk)
            ids = torch.zeros(len(chunk), longest, dtype=torch.long, device=self.device)
            for i, sequence in enumerate(chunk):
                ids[i, : len(sequence)] = torch.tensor(sequence)
            logprobs = self.model(ids).float().log_softmax(-1)  # (B, T, V)
            for i, (sequence, start) in enumerate(zip(chunk, starts[first:], strict=False)):
                if not 0 < start < len(sequence):
                    raise ValueError(
                        f"score start {start} is outside the sequence (1…{len(sequence) - 1})"
                    )
                targets = ids[i, start : len(sequence)]  # (n,)
                picked = logprobs[i, start - 1 : len(sequence) - 1].gather(-1, targets[:, None])
                scores.append(picked[:, 0].tolist())
        return scores

    def stream(self, prompt: Sequence[int], params: SamplingParams) -> Iterator[str]:
        """Text pieces of one completion as they become final."""
        pieces: list[str] = []
        for _ in self.run([GenerationRequest(list(prompt), params, on_text=pieces.append)]):
            yield from pieces
            pieces.clear()
