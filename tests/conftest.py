"""Shared fixtures: a small tokenizer trained once per session, micro model configs."""

from __future__ import annotations

import pytest
import torch

from charter.data.documents import python_docstrings
from charter.model import Transformer
from charter.tokenizer import Tokenizer
from tests.helpers import micro


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return [d.text for d in python_docstrings()]


@pytest.fixture(scope="session")
def tokenizer(corpus) -> Tokenizer:
    return Tokenizer.train(corpus, vocab_size=512)


@pytest.fixture(scope="session")
def tokenizer_dir(tokenizer, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save(directory)
    return directory


@pytest.fixture
def micro_model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(micro()).eval()
