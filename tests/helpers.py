"""Helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

from charter.config import ModelConfig, preset


def micro(vocab_size: int = 512, **overrides) -> ModelConfig:
    config = preset("micro", vocab_size=vocab_size)
    for key, value in overrides.items():
        setattr(config, key, value)
    config.__post_init__()
    return config
