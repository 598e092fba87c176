"""The decode step compiled ahead of time, with the model's weights frozen in (AOTInductor).

A function compiled by torch.compile pays two costs on every call besides its kernels:
TorchDynamo checks its guards (for SmolLM2, about 2,200 checks of the types, sizes and values of
everything the step reads from the model: 0.8 ms) and inductor's Python wrapper launches the
step's few hundred kernels one Python call at a time (1.2 ms in a profile). An engine whose
weights never change needs neither: `torch.export` traces the step once, AOTInductor compiles the
trace, weights included, into a shared library whose C++ runner launches the kernels, and each
step is one call into it.

The step is compiled on its first call, for any batch of 1…max_batch_size rows and any attended
length (at batch 1 as fast as a graph made for one row, in our measurement).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.export import Dim

from charter.model import KVCache, Transformer

# Inductor's settings for the frozen step: weights as constants (freezing), its own C++ matrix
# template (the CPU's) or PyTorch's kernels, whichever its benchmark finds faster for each
# product; and products of one input by several weights (q, k, v; gate, up) concatenated.
FROZEN_SETTINGS = {
    "freezing": True,
    "max_autotune": True,
    "max_autotune_gemm_backends": "CPP,ATEN",
    "cpp.enable_concat_linear": True,
}


class _StepOverTensors(nn.Module):
    """The decode step as a function of tensors only, the form torch.export traces: the
    KV cache's tensors are inputs (updated in place), and the attended length is the length of
    `key_slots`, a tensor that is never read, because export traces shapes, not ints."""

    def __init__(self, model: Transformer) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        last: Tensor,  # (B, 1) each row's last token
        key_slots: Tensor,  # (S,)
        lengths: Tensor,
        rope_cos: Tensor,
        rope_sin: Tensor,
        keys: list[Tensor],
        values: list[Tensor],
    ) -> Tensor:
        cache = KVCache.over(keys, values, lengths, rope_cos, rope_sin)
        # Attention as products and sums, the form inductor fuses (see `decode_attention`).
        attend_len = key_slots.shape[0]
        return self.model.decode_step(last, cache, attend_len, as_sums=True)  # (B, V)


class FrozenDecodeStep:
    """`model.decode_step` over `cache`, compiled with the weights frozen in; called as the
    torch backend calls its decode step, with `(last, attend_len)`."""

    def __init__(self, model: Transformer, cache: KVCache) -> None:
        self.step = _StepOverTensors(model)
        self.cache = cache
        self.inputs = (cache.lengths, cache.rope_cos, cache.rope_sin, cache.k, cache.v)
        self.key_slots = torch.empty(cache.max_len, dtype=torch.bool, device=cache.lengths.device)
        self.runner: Callable | None = None

    def __call__(self, last: Tensor, attend_len: int) -> Tensor:
        if self.runner is None:
            self.runner = self._compile()
        return self.runner(last, self.key_slots[:attend_len], *self.inputs)

    def _compile(self) -> Callable:
        rows, most_attended = self.cache.batch_size, self.cache.max_len - 1
        # A row leaves the batch once its sequence fills the window, so a step attends to at
        # most max_len - 1 positions.
        dynamic_shapes = (
            {0: _one_to("batch", rows)},
            {0: _one_to("attended", most_attended)},
            None,  # the cache's tensors: their shapes are fixed
            None,
            None,
            [None] * len(self.cache.k),
            [None] * len(self.cache.v),
        )
        # Example sizes of 2 where a size varies: torch.export takes an example size of 1 for
        # one that is always 1. (Tracing reads only the inputs' shapes: the cache is untouched.)
        last = torch.zeros((min(2, rows), 1), dtype=torch.long, device=self.key_slots.device)
        args = (last, self.key_slots[: min(2, most_attended)], *self.inputs)
        # Traced outside inference mode (the backend steps in it): the trace must see the cache
        # as ordinary tensors that it updates in place.
        with torch.inference_mode(False), torch.no_grad():
            program = torch.export.export(self.step, args, dynamic_shapes=dynamic_shapes)
        # The package (weights included) is only needed until loaded, which unpacks it.
        # Inductor freezes the weights only where gradients are off.
        with tempfile.TemporaryDirectory(prefix="charter-frozen-step-") as directory:
            package = str(Path(directory) / "decode_step.pt2")
            with torch._inductor.config.patch(FROZEN_SETTINGS), torch.no_grad():
                torch._inductor.aoti_compile_and_package(program, package_path=package)
            return torch._inductor.aoti_load_package(package)


def _one_to(name: str, most: int) -> Dim | None:
    """A dimension of any size from 1 to `most` (None, a fixed one, if that is only 1)."""
    return Dim(name, min=1, max=most) if most > 1 else None
