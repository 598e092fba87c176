"""Int8 linear layers: the quantised weights, the integer product against a reference, a whole
model quantised. (The frozen engine over int8 layers: tests/test_generation.py.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from charter.infer.int8_linear import Int8Linear, quantize_int8
from charter.model import Transformer
from tests.helpers import micro


def linear(in_features: int, out_features: int, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features, bias=False)


def test_weights_lie_within_half_a_step_of_the_originals():
    original = linear(64, 24)
    layer = Int8Linear(original)
    weight = original.weight.detach()
    step = weight.abs().amax(dim=1, keepdim=True) / 127  # (out, 1): one step per channel
    assert layer.weight_t.dtype == torch.int8 and layer.weight_t.shape == (64, 24)
    error = (layer.dequantized_weight() - weight).abs()
    assert bool((error <= step / 2 + 1e-7).all())
    # each channel's largest weight is exactly ±127 steps
    assert layer.weight_t.abs().amax(dim=0).tolist() == [127] * 24


def test_output_is_the_integer_product_rescaled():
    original = linear(64, 24)
    layer = Int8Linear(original)
    x = torch.randn(3, 5, 64)
    rows = x.reshape(-1, 64)
    x_scales = rows.abs().amax(dim=1, keepdim=True) / 127  # (15, 1)
    x_int = (rows / x_scales).round()
    # Integer values with sums below 2^24 are exact in fp32: this is the int32 product.
    reference = (x_int @ layer.weight_t.float()) * x_scales * layer.weight_scales
    out = layer(x)
    assert out.shape == (3, 5, 24) and out.dtype == torch.float32
    torch.testing.assert_close(out, reference.reshape(3, 5, 24), rtol=1e-6, atol=1e-6)
    # and it stays close to the float layer it replaces
    exact = original(x).detach()
    assert float((out - exact).abs().max()) < 0.02 * float(exact.abs().max())


def test_keeps_the_input_dtype_and_maps_a_zero_row_to_zeros():
    layer = Int8Linear(linear(32, 8))
    x = torch.randn(2, 32, dtype=torch.bfloat16)
    x[1] = 0
    out = layer(x)
    assert out.dtype == torch.bfloat16
    assert out[1].tolist() == [0.0] * 8


def test_a_layer_with_bias_is_refused():
    with pytest.raises(ValueError, match="bias-free"):
        Int8Linear(nn.Linear(8, 4, bias=True))


def test_a_lone_linear_layer_is_refused_by_quantize_int8():
    with pytest.raises(TypeError, match="Int8Linear"):
        quantize_int8(linear(8, 4))


def test_quantizing_a_model_replaces_every_linear_and_keeps_its_predictions():
    torch.manual_seed(0)
    model = Transformer(micro()).eval()
    ids = torch.randint(0, 512, (2, 12))
    with torch.no_grad():
        expected = model(ids)
        quantize_int8(model)
        got = model(ids)
    assert not any(type(m) is nn.Linear for m in model.modules())
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == 7 * len(model.layers) + 1
    assert model.embed_tokens.weight.dtype == torch.float32  # the table of the tied head stays
    similarity = torch.cosine_similarity(got.flatten(0, 1), expected.flatten(0, 1), dim=-1)
    assert float(similarity.min()) > 0.999
