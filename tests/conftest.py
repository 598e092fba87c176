"""Shared fixtures: a small tokenizer trained once per session, micro model configs,
SmolLM2-135M-Instruct imported once per session, and a rigged micro model and judge."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from charter.chat import CHAT_TEMPLATE
from charter.checkpoint import save_checkpoint
from charter.cli import main
from charter.data.documents import python_docstrings
from charter.interop.gguf_import import smollm2_gguf_path
from charter.model import Transformer
from charter.tokenizer import Tokenizer
from charter.train.judge import OUTPUTS, judge_model, name_outputs
from tests.helpers import micro


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return [d.text for d in python_docstrings()]


@pytest.fixture(scope="session")
def tokenizer(corpus) -> Tokenizer:
    return Tokenizer.train(corpus, vocab_size=512, chat_template=CHAT_TEMPLATE)


@pytest.fixture(scope="session")
def tokenizer_dir(tokenizer, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save(directory)
    return directory


@pytest.fixture
def micro_model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(micro()).eval()


@pytest.fixture(scope="session", autouse=True)
def charter_cache(tmp_path_factory):
    """Caches (the llama.cpp backend's GGUF exports) go to a fresh directory, not the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CHARTER_CACHE", str(tmp_path_factory.mktemp("charter-cache")))
        yield


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    try:
        return smollm2_gguf_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smollm2") / "ckpt"
    main(["import", "smollm2", "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def micro_generator(tokenizer):
    """A LocalGenerator on a random micro model (PyTorch, so it scores), 1024 tokens long."""
    from charter.infer.engine import Engine
    from charter.infer.local import LocalGenerator
    from charter.infer.torch_backend import TorchBackend

    torch.manual_seed(0)
    model = Transformer(micro(max_position_embeddings=1024)).eval()
    engine = Engine(TorchBackend(model, max_batch_size=4, max_len=1024), tokenizer)
    with LocalGenerator(engine, "micro") as generator:
        yield generator


@pytest.fixture(scope="session")
def rigged_micro_dirs(tokenizer, tmp_path_factory):
    """A micro chat model to attack and a micro judge, rigged through one hidden dimension that
    is large for every token: the model's greedy replies repeat one letter (a random one's are
    blank), and the judge finds every reply harmful and none a refusal."""
    directory = tmp_path_factory.mktemp("rigged")
    torch.manual_seed(0)
    model = Transformer(micro(max_position_embeddings=384))
    with torch.no_grad():
        model.embed_tokens.weight[:, 0] = 10.0  # tied: the LM head reads dimension 0 too
        model.embed_tokens.weight[tokenizer.encode("S")[0], 0] = 20.0
    target = save_checkpoint(model, directory / "target", tokenizer)
    judge = judge_model(target, tokenizer, seed=0)
    with torch.no_grad():
        judge.score.weight.zero_()
        judge.score.weight[OUTPUTS.index("refusal"), 0] = -10.0
        judge.score.weight[OUTPUTS.index("response_harm"), 0] = 10.0
    judge_dir = save_checkpoint(judge, directory / "judge", tokenizer)
    name_outputs(judge_dir, 256)
    return target, judge_dir
