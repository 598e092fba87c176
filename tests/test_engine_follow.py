"""An engine on a model being trained: it samples from the current weights after every optimizer
step, keeps its KV cache, and leaves the trainer's modes alone."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from charter.infer.engine import Engine
from charter.infer.sampling import SamplingParams
from charter.infer.torch_backend import TorchBackend
from charter.model import Transformer
from charter.train.optimizer import make_adamw
from tests.helpers import micro

GREEDY = SamplingParams(max_new_tokens=12, temperature=0)
PROMPTS = [[5, 6, 7], [9]]


def optimizer_step(model: Transformer, optimizer: torch.optim.Optimizer) -> None:
    tokens = torch.arange(2 * 17).reshape(2, 17) % 512  # (B, T + 1)
    logits = model(tokens[:, :-1])
    F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
    optimizer.step()
    optimizer.zero_grad()


@pytest.fixture
def trained_model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(micro())  # in training mode, as a trainer holds it


def greedy(engine: Engine) -> list[list[int]]:
    return [c.token_ids for c in engine.generate(PROMPTS, GREEDY)]


def test_the_engine_samples_from_the_weights_after_each_optimizer_step(trained_model, tokenizer):
    engine = Engine(TorchBackend(trained_model, follow_weights=True), tokenizer, eos_token_ids=[])
    cache, keys = engine.backend.cache, engine.backend.cache.k[0].data_ptr()
    optimizer = make_adamw(trained_model, lr=3e-2, weight_decay=0.0, betas=(0.9, 0.95))
    outputs = [greedy(engine)]
    for _ in range(2):
        optimizer_step(trained_model, optimizer)
        outputs.append(greedy(engine))
        rebuilt = Engine(TorchBackend(copy.deepcopy(trained_model)), tokenizer, eos_token_ids=[])
        assert outputs[-1] == greedy(rebuilt)  # as an engine built on the new weights
    assert outputs[0] != outputs[1] != outputs[2]  # each step changed what it generates
    assert engine.backend.model is trained_model  # shared, not copied
    assert engine.backend.cache is cache and cache.k[0].data_ptr() == keys  # never reallocated


def test_generation_runs_in_eval_mode_and_gives_the_modes_back(trained_model, tokenizer):
    trained_model.layers[0].eval()  # a submodule a trainer keeps in eval mode stays so
    seen = []
    trained_model.layers[1].register_forward_hook(lambda module, *_: seen.append(module.training))
    Engine(TorchBackend(trained_model), tokenizer, eos_token_ids=[]).generate(PROMPTS, GREEDY)
    assert seen and not any(seen)
    modes = {name: m.training for name, m in trained_model.named_modules()}
    assert modes.pop("") and not modes.pop("layers.0") and modes.pop("layers.1")
    assert all(training == (not name.startswith("layers.0.")) for name, training in modes.items())

    served = trained_model.eval()
    Engine(TorchBackend(served), tokenizer, eos_token_ids=[]).generate(PROMPTS, GREEDY)
    assert not any(m.training for m in served.modules())


def test_a_frozen_engine_refuses_to_follow_weights(trained_model, tokenizer):
    with pytest.raises(ValueError, match="a frozen engine compiles the weights in"):
        Engine(
            TorchBackend(trained_model, compile=True, frozen=True, follow_weights=True), tokenizer
        )


@pytest.mark.slow
def test_a_compiled_engine_follows_the_weights_without_recompiling(trained_model, tokenizer):
    from torch._dynamo.utils import counters

    engine = Engine(
        TorchBackend(trained_model, compile=True, follow_weights=True), tokenizer, eos_token_ids=[]
    )
    optimizer = make_adamw(trained_model, lr=3e-2, weight_decay=0.0, betas=(0.9, 0.95))
    greedy(engine)
    compiled = counters["stats"]["unique_graphs"]
    assert compiled >= 1
    optimizer_step(trained_model, optimizer)
    after_step = greedy(engine)
    assert after_step == greedy(
        Engine(TorchBackend(copy.deepcopy(trained_model)), tokenizer, eos_token_ids=[])
    )
    assert counters["stats"]["unique_graphs"] == compiled  # the same graphs, new weights
