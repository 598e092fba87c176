"""`charter data prepare`: dedup, seeded split, tokenisation into shards with a manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest

from charter.cli import main
from charter.data import prepare as prepare_module
from charter.data.fast_tokenizer import UnsupportedTokenizer
from charter.data.prepare import prepare, split_documents
from charter.data.shards import TokenShards
from charter.files import file_sha256, read_json
from charter.tokenizer import ENDOFTEXT, Tokenizer
from tests.helpers import load_bench


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def unique_docstrings(corpus: list[str]) -> list[str]:
    """40 docstrings with distinct texts (some objects share a docstring)."""
    return list(dict.fromkeys(corpus))[:40]


@pytest.fixture
def inputs(tmp_path, corpus):
    """Two sources: 40 docstrings (with an exact duplicate of the first, a near duplicate of
    the longest, and an empty document), and a directory of two text files."""
    docs = unique_docstrings(corpus)
    longest = max(docs, key=len)
    near = longest.rsplit(None, 1)[0] + " CHANGED"  # the last word differs
    records = [{"text": t, "source": "docstrings", "licence": "PSF-2.0"} for t in docs]
    records += [
        {"text": docs[0], "source": "docstrings", "licence": "PSF-2.0"},
        {"text": near, "source": "docstrings", "licence": "PSF-2.0"},
        {"text": "  \n", "source": "docstrings", "licence": "PSF-2.0"},
    ]
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("Ünïcödé notes: naïve café.\n")
    (notes / "b.md").write_text("# Heading\n\nA literal <|endoftext|> is plain text here.\n")
    return [write_jsonl(tmp_path / "docs.jsonl", records), notes]


def decode_documents(tokenizer: Tokenizer, ids: np.ndarray) -> list[str]:
    eot = tokenizer.token_id(ENDOFTEXT)
    assert ids[-1] == eot  # every document ends with <|endoftext|>
    cuts = np.flatnonzero(ids == eot)
    starts = np.concatenate([[0], cuts[:-1] + 1])
    return [tokenizer.decode(ids[s:e].tolist()) for s, e in zip(starts, cuts)]


def test_prepare_writes_shards_and_manifest(tmp_path, inputs, tokenizer, tokenizer_dir, corpus):
    out = tmp_path / "data"
    manifest = prepare(inputs, tokenizer_dir, out, val_fraction=0.1, seed=3, workers=2)
    assert manifest == read_json(out / "manifest.json")
    assert manifest["format"] == 1
    assert manifest["tokenizer"] == {
        "path": "tokenizer",
        "sha256": file_sha256(tokenizer_dir / "tokenizer.json"),
    }
    assert manifest["vocab_size"] == 512 and manifest["dtype"] == "uint16"
    assert manifest["eot_token_id"] == tokenizer.token_id(ENDOFTEXT)
    assert manifest["seed"] == 3

    docstrings = manifest["sources"]["docstrings"]
    assert docstrings["documents"] == 40
    assert docstrings["duplicates_removed"] == 1
    assert docstrings["near_duplicates_removed"] == 1
    assert docstrings["empty_removed"] == 1
    assert docstrings["licence"] == "PSF-2.0"
    assert docstrings["bytes"] == sum(len(t.encode()) for t in unique_docstrings(corpus))
    assert manifest["sources"]["notes"]["documents"] == 2
    assert manifest["sources"]["notes"]["licence"] == "unknown"

    train, val = manifest["splits"]["train"], manifest["splits"]["val"]
    assert (train["documents"], val["documents"]) == (38, 4)  # round(42 × 0.1) = 4
    decoded = []
    for split in ("train", "val"):
        shards = TokenShards(out, split)
        ids = shards.read(0, len(shards))
        decoded += decode_documents(tokenizer, ids)
        info = manifest["splits"][split]
        assert len(shards) == info["tokens"]
        assert shards.bytes_per_token == info["bytes"] / info["tokens"]
    notes = [
        "Ünïcödé notes: naïve café.\n",
        "# Heading\n\nA literal <|endoftext|> is plain text here.\n",
    ]
    expected = unique_docstrings(corpus) + notes
    assert sorted(decoded) == sorted(expected)  # every kept document, once, nothing else
    total = sum(s["tokens"] for s in manifest["sources"].values())
    assert total == train["tokens"] + val["tokens"]
    # The literal "<|endoftext|>" in a document is text, not the separator.
    assert sum(s["documents"] for s in manifest["splits"].values()) == 42
    assert TokenShards(out, "train").tokenizer_directory() == out / "tokenizer"
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["stage"] == "tokenise"


def test_split_is_seeded_and_document_level(tmp_path, inputs, tokenizer_dir):
    def val_ids(seed, name):
        prepare(inputs, tokenizer_dir, tmp_path / name, val_fraction=0.2, seed=seed, workers=1)
        return TokenShards(tmp_path / name, "val").read(0, len(TokenShards(tmp_path / name, "val")))

    assert np.array_equal(val_ids(0, "a"), val_ids(0, "b"))
    assert not np.array_equal(val_ids(0, "a"), val_ids(1, "c"))
    train, val = split_documents(10, 0.2, seed=5)
    assert len(val) == 2 and sorted([*train, *val]) == list(range(10))
    assert len(split_documents(3, 0.01, seed=0)[1]) == 1  # a positive fraction gets a document
    assert len(split_documents(3, 0.0, seed=0)[1]) == 0
    prepare(inputs, tokenizer_dir, tmp_path / "all", val_fraction=0.0, workers=1)
    empty = TokenShards(tmp_path / "all", "val")
    assert len(empty) == 0 and empty.info["files"] == []
    with pytest.raises(ValueError, match="the val split is empty"):
        _ = empty.bytes_per_token
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        split_documents(3, 1.0, seed=0)


def test_shard_files_are_cut_and_read_back(tmp_path, inputs, tokenizer, tokenizer_dir):
    whole = prepare(inputs, tokenizer_dir, tmp_path / "whole", seed=1, workers=1)
    cut = prepare(inputs, tokenizer_dir, tmp_path / "cut", seed=1, workers=1, shard_tokens=1000)
    assert len(whole["splits"]["train"]["files"]) == 1
    assert len(cut["splits"]["train"]["files"]) == -(-cut["splits"]["train"]["tokens"] // 1000)
    a, b = TokenShards(tmp_path / "whole", "train"), TokenShards(tmp_path / "cut", "train")
    assert np.array_equal(a.read(0, len(a)), b.read(0, len(b)))


def test_malformed_lines_are_all_reported_and_nothing_written(tmp_path, tokenizer_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": \n{"txt": "x"}\n{"text": "ok", "source": 3}\n')
    out = tmp_path / "data"
    with pytest.raises(ValueError) as error:
        prepare([bad], tokenizer_dir, out)
    message = str(error.value)
    assert message.startswith("3 malformed input line(s), nothing written:")
    assert f"{bad}:2: invalid JSON" in message
    assert f"{bad}:3: no 'text' field" in message
    assert f"{bad}:4: 'source' must be a string, got int" in message
    assert not out.exists()


def test_falls_back_to_tokenizers_with_identical_ids(tmp_path, inputs, tokenizer_dir, monkeypatch):
    prepare(inputs, tokenizer_dir, tmp_path / "fast", seed=2, workers=1)

    def refuse(tokenizer):
        raise UnsupportedTokenizer("model.ignore_merges: must be false")

    monkeypatch.setattr(prepare_module, "fast_encoding", refuse)
    prepare(inputs, tokenizer_dir, tmp_path / "slow", seed=2, workers=1)
    fast, slow = TokenShards(tmp_path / "fast", "train"), TokenShards(tmp_path / "slow", "train")
    assert np.array_equal(fast.read(0, len(fast)), slow.read(0, len(slow)))


def test_cli_prints_a_report_per_source(tmp_path, inputs, tokenizer_dir, capsys):
    out = tmp_path / "data"
    options = ["--tokenizer", str(tokenizer_dir), "--out", str(out), "--workers", "1"]
    main(["data", "prepare", *map(str, inputs), *options])
    lines = capsys.readouterr().out.splitlines()
    manifest = read_json(out / "manifest.json")
    assert lines[0].split() == ["documents", "MB", "tokens", "bytes/token"]
    docstrings = manifest["sources"]["docstrings"]
    megabytes, tokens = f"{docstrings['bytes'] / 1e6:.2f}", f"{docstrings['tokens']:,d}"
    assert lines[1].split()[:4] == ["docstrings", "40", megabytes, tokens]
    assert lines[1].endswith("PSF-2.0  (removed: 1 duplicates, 1 near duplicates, 1 empty)")
    assert lines[2].split()[:2] == ["notes", "2"]
    assert lines[3].split()[:2] == ["[train]", str(manifest["splits"]["train"]["documents"])]
    assert lines[4].startswith("[val]")
    assert lines[5] == f"saved: {out}"


def test_cli_reports_bad_input_as_one_error(tmp_path, tokenizer_dir):
    with pytest.raises(SystemExit, match=r"charter data: error: .*missing\.jsonl: no such file"):
        options = ["--tokenizer", str(tokenizer_dir), "--out", str(tmp_path / "o")]
        main(["data", "prepare", str(tmp_path / "missing.jsonl"), *options])


def test_throughput_benchmark_checks_the_ids_and_reports_every_method(
    tmp_path, inputs, tokenizer_dir, capsys
):
    argv = ["--input", str(inputs[0]), "--tokenizer", str(tokenizer_dir), "--repeats", "2"]
    rates = load_bench("tokenize_throughput").main([*argv, "--workers", "2"])
    assert list(rates) == ["tokenizers (HF, Rust)", "tiktoken encoder", "charter data prepare"]
    assert all(rate > 0 for rate in rates.values())
    out = capsys.readouterr().out
    assert out.startswith("text: 43 documents, ")  # every record, duplicates and empty too
    assert [line.split()[0] for line in out.splitlines()[-3:]] == [
        "read",
        "deduplicate",
        "tokenise",
    ]
