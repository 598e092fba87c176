"""Linear layers in int8, weights and activations (W8A8, activations quantised as they come).

Decoding one token at a time reads every weight once per token, so on a CPU a step lasts about
the weights' bytes over the memory bandwidth: 270 MB per token for SmolLM2 in bf16, 135 MB in
int8. The weights are quantised once, each output channel with its own scale (max |w| / 127);
each token's activations are quantised the same way on every call. The product of the two is an
integer matrix product, exact in int32, rescaled by both scales in fp32.

Why the activations too, not only the weights: PyTorch's weight-only int8 product converts each
weight to bf16 before multiplying, which on this CPU ran at about 16 GB/s, bound by the
conversion, barely faster than bf16. An int8 × int8 product runs on the CPU's integer matrix
units (oneDNN) and is bound by memory again. Compiled with frozen weights
(`TorchBackend(compile=True, frozen=True)`), inductor rewrites exactly the sequence in
`Int8Linear.forward` (product, conversion, activation scale, weight scale) into oneDNN's int8
linear over prepacked weights.
Quantising costs accuracy: `bench/int8_quality.py` measures how much. For CPUs: on a GPU,
`torch._int_mm` takes only products of more than 16 rows, which a decode step is not.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

INT8_MAX = 127  # symmetric: -127…127, so that negating a value never overflows


def _scales(x: Tensor) -> Tensor:
    """One fp32 scale per row of `x` (N, K): the row's largest magnitude maps to 127 (N, 1)."""
    # An all-zero row (a padding token's) gets a tiny scale, not a division by zero.
    return x.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / INT8_MAX


def _quantize(x: Tensor, scales: Tensor) -> Tensor:
    return (x.float() / scales).round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8)


class Int8Linear(nn.Module):
    """A bias-free `nn.Linear` with int8 weights, computing in int8 on each token's activations
    quantised on the fly; it returns the input's dtype."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        if linear.bias is not None:
            raise ValueError("Int8Linear takes bias-free linear layers (as in Llama)")
        weight = linear.weight.detach()  # (out, in)
        scales = _scales(weight)  # (out, 1)
        # (in, out): the layout of the integer product's second operand.
        self.register_buffer("weight_t", _quantize(weight, scales).t().contiguous())
        self.register_buffer("weight_scales", scales[:, 0])  # (out,) fp32
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: Tensor) -> Tensor:
        """x (..., in) → (..., out)."""
        rows = x.reshape(-1, self.in_features)  # (N, in)
        scales = _scales(rows)  # (N, 1)
        product = torch._int_mm(_quantize(rows, scales), self.weight_t)  # (N, out) int32
        # The conversion written as the primitive, not `.to()`: torch.export records `.to()`
        # with a check of its input's metadata, a second use of the product that keeps inductor
        # from recognising the sequence and rewriting it into oneDNN's int8 linear.
        product = torch.ops.prims.convert_element_type.default(product, torch.float32)
        out = product * scales * self.weight_scales  # (N, out) fp32
        return out.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def dequantized_weight(self) -> Tensor:
        """The weight these int8 values stand for (out, in), in fp32."""
        return self.weight_t.t().float() * self.weight_scales[:, None]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def quantize_int8(model: nn.Module) -> nn.Module:
    """Replace every `nn.Linear` of `model` (attention, MLP, output layer) by an `Int8Linear`,
    in place, for inference: the float weights of those layers are dropped (a tied output
    layer keeps the embedding table, which is only looked up). Returns `model`."""
    if isinstance(model, nn.Linear):  # it cannot replace itself in place
        raise TypeError("quantize_int8 replaces the layers inside a module: use Int8Linear(layer)")
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, nn.Linear):
                setattr(module, name, Int8Linear(child))
    return model
