"""Token shards: the writer cuts a split into files; the reader sees one array across them."""

from __future__ import annotations

import numpy as np
import pytest

from charter.data.shards import MANIFEST, ShardWriter, TokenShards, token_dtype
from charter.files import file_sha256, read_json, write_json


def write_split(directory, split, ids, shard_tokens, dtype=np.uint16, chunks=3):
    writer = ShardWriter(directory, split, np.dtype(dtype), shard_tokens)
    for part in np.array_split(ids, chunks):
        writer.write(part)
    writer.close()
    return writer


@pytest.fixture
def prepared(tmp_path, tokenizer_dir):
    """A hand-made prepared directory: 1000 train tokens in files of 300, 10 val tokens."""
    train = np.arange(1000) % 500
    val = np.arange(10)
    train_writer = write_split(tmp_path, "train", train, shard_tokens=300)
    val_writer = write_split(tmp_path, "val", val, shard_tokens=300)
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer/tokenizer.json").write_bytes(
        (tokenizer_dir / "tokenizer.json").read_bytes()
    )
    manifest = {
        "format": 1,
        "tokenizer": {
            "path": "tokenizer",
            "sha256": file_sha256(tmp_path / "tokenizer/tokenizer.json"),
        },
        "vocab_size": 512,
        "dtype": "uint16",
        "eot_token_id": 0,
        "seed": 0,
        "splits": {
            "train": {"files": train_writer.files, "documents": 4, "bytes": 4000, "tokens": 1000},
            "val": {"files": val_writer.files, "documents": 1, "bytes": 25, "tokens": 10},
        },
        "sources": {},
    }
    write_json(tmp_path / MANIFEST, manifest)
    return tmp_path, train


def test_writer_cuts_files_at_shard_tokens(prepared):
    directory, train = prepared
    names = sorted(p.name for p in directory.glob("train-*.bin"))
    assert names == ["train-00000.bin", "train-00001.bin", "train-00002.bin", "train-00003.bin"]
    sizes = [np.fromfile(directory / n, dtype=np.uint16).size for n in names]
    assert sizes == [300, 300, 300, 100]
    assert np.array_equal(
        np.concatenate([np.fromfile(directory / n, np.uint16) for n in names]), train
    )


def test_reader_reads_across_file_boundaries(prepared):
    directory, train = prepared
    shards = TokenShards(directory, "train")
    assert len(shards) == 1000
    for start, length in [(0, 1), (0, 1000), (250, 100), (299, 2), (10, 700), (999, 1), (1000, 0)]:
        window = shards.read(start, length)
        assert window.dtype == np.uint16
        assert np.array_equal(window, train[start : start + length])
    assert shards.bytes_per_token == 4.0
    assert shards.eot_token_id == 0
    assert len(TokenShards(directory, "val")) == 10


def test_reader_refuses_out_of_range_reads(prepared):
    shards = TokenShards(prepared[0], "train")
    with pytest.raises(
        IndexError, match=r"tokens \[990, 1001\) are outside the train split of 1000"
    ):
        shards.read(990, 11)
    with pytest.raises(IndexError):
        shards.read(-1, 5)


def test_reader_checks_the_manifest_and_files(prepared):
    directory, _ = prepared
    with pytest.raises(ValueError, match=r"no split 'test' \(splits: \['train', 'val'\]\)"):
        TokenShards(directory, "test")
    manifest = read_json(directory / MANIFEST)
    write_json(directory / MANIFEST, {**manifest, "format": 2})
    with pytest.raises(ValueError, match="format 2, expected 1"):
        TokenShards(directory, "train")
    manifest["splits"]["train"]["tokens"] = 999
    write_json(directory / MANIFEST, manifest)
    with pytest.raises(ValueError, match="should hold 999 tokens, its files hold 1000"):
        TokenShards(directory, "train")
    (directory / "val-00000.bin").unlink()
    with pytest.raises(
        FileNotFoundError, match=r"val-00000\.bin: shard listed in manifest\.json is missing"
    ):
        TokenShards(directory, "val")


def test_tokenizer_directory_is_checked_against_its_hash(prepared, tokenizer):
    directory, _ = prepared
    shards = TokenShards(directory, "train")
    assert shards.tokenizer_directory() == directory / "tokenizer"
    (directory / "tokenizer/tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match="made with another tokenizer"):
        shards.tokenizer_directory()


def test_dtype_follows_vocabulary_size(tmp_path):
    assert token_dtype(512) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32
    writer = ShardWriter(tmp_path, "train", np.dtype(np.uint16))
    with pytest.raises(ValueError, match="token id 70000 does not fit in uint16"):
        writer.write(np.array([1, 70000]))
    writer = write_split(tmp_path, "big", np.array([70000, 1]), 10, dtype=np.uint32, chunks=1)
    assert np.fromfile(tmp_path / writer.files[0], np.uint32).tolist() == [70000, 1]
