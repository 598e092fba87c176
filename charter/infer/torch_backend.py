"""The engine's backend on PyTorch: Charter's `Transformer` and its pre-allocated `KVCache`.

Row b of the engine is row b of the cache. A prompt is prefilled alone into its row; a decode
step is one batched forward over rows 0…B-1, eager, compiled by torch.compile, or compiled
ahead of time with the weights frozen in (`frozen_step.py`).

The backend shares its model's weights (no copy) and keeps its cache for its life, so an engine
on a model being trained samples from the current weights after every optimizer step, with
nothing rebuilt: what RL's rollouts need. Its forward passes run in eval mode and give a model
in training mode its modes back afterwards (`eval_mode`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence

import torch

from charter.infer.engine import Backend
from charter.infer.frozen_step import FrozenDecodeStep
from charter.model import KVCache, Transformer


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
    """A backend method that runs the model: in inference mode, the model in eval mode."""

    @functools.wraps(method)
    def run(self: TorchBackend, *args, **kwargs):
        with torch.inference_mode(), eval_mode(self.model):
            return method(self, *args, **kwargs)

    return run


class TorchBackend(Backend):
    def __init__(
        self,
        model: Transformer,
        max_batch_size: int = 8,
        max_len: int | None = None,
        compile: bool = False,
        frozen: bool = False,
        follow_weights: bool = False,
    ) -> None:
        """`model` with a cache of `max_batch_size` rows of `max_len` tokens (default and at
        most the model's `max_position_embeddings`), on the model's device and in its dtype.

        `compile=True` compiles the decode step with torch.compile (dynamic batch size and
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

        Otherwise (eager, or `compile` alone) the backend follows its model: every forward pass
        reads the weights the model has then. `follow_weights=True` says the model will be
        trained while the engine samples from it, and refuses a frozen backend, which would
        silently sample from the weights it compiled. The model's modes are left as found."""
        if frozen and not compile:
            raise ValueError("frozen=True is a way of compiling: it needs compile=True")
        if frozen and follow_weights:
            raise ValueError(
                "a frozen engine compiles the weights in and cannot follow a model being "
                "trained: for follow_weights, use an eager engine or compile=True alone"
            )
        config = model.config
        self.model = model
        self.device = next(model.parameters()).device
        window = config.max_position_embeddings
        self.max_len = min(max_len or window, window)
        self.vocab_size = config.vocab_size
        self.eos_token_ids = config.eos_token_ids
        dtype = next(model.parameters()).dtype
        self.cache = KVCache(config, max_batch_size, self.max_len, dtype, self.device)
        self._decode = self._decode_step
        if frozen:
            self._decode = FrozenDecodeStep(model, self.cache)
        elif compile:
            # Single-query attention as products and sums, which inductor fuses into a few loops
            # (the matmuls' form is the faster one eagerly: see `decode_attention`).
            compiled = torch.compile(self._decode_step, dynamic=True)
            self._decode = functools.partial(compiled, as_sums=True)
            # Only the batch and the attended length vary. The cache's tensors keep their shapes
            # for the backend's life: static, their sizes are constants in the compiled step and
            # their guards quick checks; dynamic, each step ran a Python function comparing every
            # layer's cache sizes and strides (0.5 ms of a step's guards for SmolLM2).
            cache = self.cache
            for tensor in (*cache.k, *cache.v, cache.lengths, cache.rope_cos, cache.rope_sin):
                torch._dynamo.mark_static(tensor)

    @property
    def batch_size(self) -> int:
        return self.cache.batch_size

    @_forward_pass
    def prefill(self, prompt: list[int], row: int) -> torch.Tensor:
        """Logits (V,) of the token after `prompt`, whose keys and values fill cache row `row`."""
        self.cache.lengths[row] = 0
        ids = torch.tensor([prompt], device=self.device)  # (1, T)
        hidden = self.model.hidden_states(ids, cache=self.cache, rows=slice(row, row + 1))
        return self.model.logits(hidden[:, -1])[0]  # (V,)

    @_forward_pass
    def decode(self, last_tokens: list[int]) -> torch.Tensor:
        """Logits (B, V) of the next token of rows 0…B-1 (see `Backend.decode`)."""
        last = torch.tensor([[t] for t in last_tokens], device=self.device)  # (B, 1)
        attend_len = int(self.cache.lengths[: len(last_tokens)].max()) + 1
        return self._decode(last, attend_len)

    def _decode_step(
        self, last: torch.Tensor, attend_len: int, as_sums: bool = False
    ) -> torch.Tensor:
        """Logits (B, V) of the next token of rows 0…B-1, whose last tokens are `last` (B, 1)."""
        return self.model.decode_step(last, self.cache, attend_len, as_sums=as_sums)

    def move_row(self, src: int, dst: int) -> None:
        self.cache.move_row(src, dst)

    @_forward_pass
    def token_logprobs(
        self, sequences: Sequence[Sequence[int]], starts: Sequence[int], batch_size: int = 8
    ) -> list[list[float]]:
        """One forward pass per batch, right-padded (causal attention leaves the real tokens'
        logits untouched by padding after them)."""
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
