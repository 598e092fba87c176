"""The GGUF export cache: one export per checkpoint content and dtype, reuse marks a file used,
and the least recently used exports are deleted when the cache outgrows its bound."""

from __future__ import annotations

import os

import pytest
import torch

from charter.checkpoint import save_checkpoint
from charter.infer.gguf_cache import LIMIT_VARIABLE, cache_limit_bytes, cached_gguf, evict
from charter.model import Transformer
from tests.helpers import micro


def write_file(path, size, mtime):
    path.write_bytes(b"\0" * size)
    os.utime(path, ns=(mtime, mtime))
    return path


def test_evict_deletes_least_recently_used_until_under_the_limit(tmp_path):
    oldest = write_file(tmp_path / "a-f32.gguf", 100, 1_000)
    middle = write_file(tmp_path / "b-f32.gguf", 100, 2_000)
    newest = write_file(tmp_path / "c-f32.gguf", 100, 3_000)
    partial = write_file(tmp_path / ".d-f32.gguf.tmp-1", 500, 0)  # another process's export
    assert evict(tmp_path, 250, keep=newest) == [oldest]
    assert evict(tmp_path, 200, keep=newest) == []
    # The file just exported stays even when it alone is over the limit.
    assert evict(tmp_path, 50, keep=middle) == [newest]
    assert sorted(tmp_path.iterdir()) == [partial, middle]


def test_cache_limit_reads_the_variable(monkeypatch):
    monkeypatch.delenv(LIMIT_VARIABLE, raising=False)
    assert cache_limit_bytes() == 8 * 2**30
    monkeypatch.setenv(LIMIT_VARIABLE, "0.5")
    assert cache_limit_bytes() == 2**29
    for bad in ("lots", "-1", "nan"):
        monkeypatch.setenv(LIMIT_VARIABLE, bad)
        with pytest.raises(ValueError, match=f"{LIMIT_VARIABLE}='{bad}' is not a size in GiB"):
            cache_limit_bytes()


@pytest.fixture
def two_checkpoints(tmp_path, tokenizer):
    directories = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = Transformer(micro(max_position_embeddings=64))
        directories.append(save_checkpoint(model, tmp_path / f"m{seed}", tokenizer))
    return directories


def test_cached_gguf_reuses_an_export_and_evicts_the_least_recent(
    two_checkpoints, tmp_path, monkeypatch
):
    first, second = two_checkpoints
    cache = tmp_path / "gguf"
    exported = cached_gguf(first, "f32", cache)
    os.utime(exported, ns=(1, 1))
    inode = exported.stat().st_ino
    assert cached_gguf(first, "f32", cache) == exported
    assert exported.stat().st_ino == inode  # not exported again...
    assert exported.stat().st_mtime_ns > 1  # ...but marked as just used
    # A bound of one file's size: the second checkpoint's export pushes the first one out.
    monkeypatch.setenv(LIMIT_VARIABLE, str(exported.stat().st_size * 1.5 / 2**30))
    other = cached_gguf(second, "f32", cache)
    assert list(cache.glob("*.gguf")) == [other] and other != exported


def test_a_bad_limit_refuses_before_exporting(two_checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv(LIMIT_VARIABLE, "ten")
    with pytest.raises(ValueError, match=LIMIT_VARIABLE):
        cached_gguf(two_checkpoints[0], "f32", tmp_path / "gguf")
    assert not (tmp_path / "gguf").exists()
