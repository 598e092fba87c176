"""The common ending of every importer: the checkpoint is written to a temporary sibling, loaded
back the way every later stage will load it, checked to give the same logits and tokens as the
model in memory, and only then renamed into place, so a failed import never replaces a good
directory.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from charter.checkpoint import CheckpointError, load_checkpoint, load_tokenizer, write_checkpoint
from charter.files import replace_directory, temporary_sibling
from charter.model import Transformer
from charter.tokenizer import Tokenizer

_PROBE_TEXT = "Hello, world! 12345 <|im_start|>user\nÇa va? 你好 🙂\tdef f(x): return x**2"


def write_verified(
    model: Transformer,
    tokenizer: Tokenizer | None,
    out: Path,
    add_extras: Callable[[Path], None] | None = None,
) -> Path:
    """Save `model` and `tokenizer` as checkpoint `out`, atomically and verified by loading.

    `add_extras(directory)` may write further files (provenance, licence) beside the checkpoint.
    """
    tmp = temporary_sibling(out)
    try:
        write_checkpoint(tmp, model.config, model.state_dict(), tokenizer)
        if add_extras is not None:
            add_extras(tmp)
        _verify(model, tokenizer, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_directory(tmp, out)
    return out


@torch.inference_mode()
def _verify(model: Transformer, tokenizer: Tokenizer | None, directory: Path) -> None:
    reloaded = load_checkpoint(directory, dtype=next(model.parameters()).dtype)
    probe = torch.arange(16)[None] * 7919 % model.config.vocab_size  # (1, 16) spread over vocab
    if not torch.equal(reloaded(probe), model(probe)):
        raise CheckpointError(f"{directory}: the written checkpoint gives different logits")
    if tokenizer is not None:
        written = load_tokenizer(directory)
        if written.encode(_PROBE_TEXT) != tokenizer.encode(_PROBE_TEXT):
            raise CheckpointError(f"{directory}: the written tokenizer encodes differently")
