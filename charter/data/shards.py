"""Token shards: the tokenised corpus as flat binary files the training loop memory-maps.

    OUT/manifest.json        format, tokenizer (path + sha256), dtype, <|endoftext|> id, seed,
                             per split: files, documents, bytes, tokens; per source: statistics
    OUT/train-00000.bin      raw token ids (uint16 when the vocabulary fits, else uint32); each
    OUT/val-00000.bin        document's tokens are followed by <|endoftext|>
    OUT/tokenizer/           a copy of the tokenizer the ids belong to

A split is one stream of tokens cut into files of at most `shard_tokens`; a document may span two
files. `bytes` counts the UTF-8 bytes of the documents' text, so a loss in nats per token
converts to bits per byte as nats/token × tokens / (bytes × ln 2) (`bytes_per_token`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from charter.files import file_sha256, read_json

FORMAT = 1
MANIFEST = "manifest.json"
DEFAULT_SHARD_TOKENS = 100_000_000  # 200 MB of uint16 per file


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


class ShardWriter:
    """Appends token ids to `<split>-NNNNN.bin` files of at most `shard_tokens` tokens each."""

    def __init__(
        self, directory: Path, split: str, dtype: np.dtype, shard_tokens: int = DEFAULT_SHARD_TOKENS
    ) -> None:
        if shard_tokens < 1:
            raise ValueError(f"shard_tokens must be at least 1, got {shard_tokens}")
        self.directory, self.split, self.dtype = Path(directory), split, np.dtype(dtype)
        self.shard_tokens = shard_tokens
        self.files: list[str] = []
        self.tokens = 0
        self._file = None
        self._room = 0  # tokens the open file can still take

    def write(self, ids: np.ndarray) -> None:
        if ids.size and int(ids.max()) > np.iinfo(self.dtype).max:
            raise ValueError(f"token id {int(ids.max())} does not fit in {self.dtype}")
        ids = ids.astype(self.dtype, copy=False)
        while ids.size:
            if self._room == 0:
                self._open_next()
            part, ids = ids[: self._room], ids[self._room :]
            self._file.write(part.tobytes())
            self._room -= part.size
            self.tokens += part.size

    def _open_next(self) -> None:
        if self._file:
            self._file.close()
        name = f"{self.split}-{len(self.files):05d}.bin"
        self._file = open(self.directory / name, "wb")  # noqa: SIM115 (closed in close())
        self.files.append(name)
        self._room = self.shard_tokens

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None


class TokenShards:
    """One split of a prepared corpus as a single array of tokens, read across file boundaries.

    >>> shards = TokenShards("runs/data", "train")
    >>> window = shards.read(1000, 257)   # (257,) token ids
    """

    def __init__(self, directory: str | Path, split: str) -> None:
        self.directory = Path(directory)
        self.manifest: dict[str, Any] = read_json(self.directory / MANIFEST)
        manifest_path = self.directory / MANIFEST
        if self.manifest.get("format") != FORMAT:
            raise ValueError(
                f"{manifest_path}: format {self.manifest.get('format')!r}, expected {FORMAT}"
            )
        splits = self.manifest.get("splits", {})
        if split not in splits:
            raise ValueError(f"{manifest_path}: no split {split!r} (splits: {sorted(splits)})")
        self.split = split
        self.info: dict[str, Any] = splits[split]
        self.dtype = np.dtype(self.manifest["dtype"])
        self._files = [self._map(name) for name in self.info["files"]]
        sizes = [len(f) for f in self._files]
        self._starts = np.cumsum([0, *sizes])  # (n_files + 1,) first token of each file
        if self._starts[-1] != self.info["tokens"]:
            raise ValueError(
                f"{manifest_path}: split {split!r} should hold {self.info['tokens']} tokens, "
                f"its files hold {self._starts[-1]}"
            )

    def _map(self, name: str) -> np.memmap:
        path = self.directory / name
        if not path.exists():
            raise FileNotFoundError(f"{path}: shard listed in {MANIFEST} is missing")
        if path.stat().st_size % self.dtype.itemsize:
            raise ValueError(
                f"{path}: size is not a multiple of {self.dtype} ({self.dtype.itemsize} bytes)"
            )
        return np.memmap(path, dtype=self.dtype, mode="r")

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def eot_token_id(self) -> int:
        return self.manifest["eot_token_id"]

    @property
    def bytes_per_token(self) -> float:
        """UTF-8 bytes of text per token of this split (the tokens include <|endoftext|>)."""
        if not self.info["tokens"]:
            raise ValueError(f"{self.directory}: the {self.split} split is empty")
        return self.info["bytes"] / self.info["tokens"]

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens `start … start + length - 1` of the split, (length,), in the shard dtype."""
        if start < 0 or length < 0 or start + length > len(self):
            raise IndexError(
                f"tokens [{start}, {start + length}) are outside the {self.split} split "
                f"of {len(self)} tokens"
            )
        out = np.empty(length, dtype=self.dtype)
        filled = 0
        file = int(np.searchsorted(self._starts, start, side="right")) - 1
        while filled < length:
            offset = start + filled - int(self._starts[file])
            part = self._files[file][offset : offset + length - filled]
            out[filled : filled + part.size] = part
            filled += part.size
            file += 1
        return out

    def tokenizer_directory(self) -> Path:
        """The tokenizer the ids belong to, checked against the manifest's sha256."""
        tokenizer = self.manifest["tokenizer"]
        directory = self.directory / tokenizer["path"]  # relative paths are relative to OUT
        path = directory / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: the tokenizer named in {MANIFEST} is missing")
        if file_sha256(path) != tokenizer["sha256"]:
            raise ValueError(
                f"{path}: sha256 differs from {self.directory / MANIFEST}: the token ids were made "
                "with another tokenizer"
            )
        return directory
