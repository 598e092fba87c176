"""API keys and per-key rate limits.

Keys come from `--api-key` (repeatable), the `CHARTER_API_KEYS` environment variable (comma
separated) and `--api-key-file` (one per line; blank lines and `#` comments skipped). A client
sends its key as `x-api-key` (Anthropic's header) or `Authorization: Bearer` (OpenAI's).
With no key configured there is nothing to check, so the server must listen on loopback only.

Rate limits are token buckets, one per key (per client address when there are no keys):
`requests_per_minute` requests may arrive at once, and capacity refills continuously.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from charter.serve.errors import ApiError

KEYS_VARIABLE = "CHARTER_API_KEYS"


def read_key_file(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: API key file not found")
    keys = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keys.append(line)
    if not keys:
        raise ValueError(f"{path}: no API keys in the file (one per line)")
    return keys


def collect_keys(
    cli_keys: Iterable[str] = (),
    key_file: str | Path | None = None,
    environ: Mapping[str, str] = os.environ,
) -> list[str]:
    keys = list(cli_keys)
    keys += [k.strip() for k in environ.get(KEYS_VARIABLE, "").split(",") if k.strip()]
    if key_file is not None:
        keys += read_key_file(key_file)
    return keys


class KeyChecker:
    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = [k.encode() for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    def identify(self, headers: Mapping[str, str], client_host: str) -> str:
        """The identity to rate-limit: the presented key, or the client address when no keys
        are configured. Raises a 401 for a missing or unknown key."""
        if not self.enabled:
            return client_host
        key = headers.get("x-api-key")
        authorization = headers.get("authorization", "")
        if key is None and authorization.lower().startswith("bearer "):
            key = authorization[len("bearer ") :].strip()
        if not key:
            raise ApiError(401, "missing API key: send it as x-api-key or Authorization: Bearer")
        # Compare against every key in constant time, so timing reveals nothing about them.
        if not any([hmac.compare_digest(key.encode(), k) for k in self.keys]):
            raise ApiError(401, "invalid API key")
        return key


class RateLimiter:
    def __init__(
        self, requests_per_minute: float | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity = requests_per_minute
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # identity → (tokens, last time)
        self._lock = threading.Lock()

    def check(self, identity: str) -> None:
        """Take one request from `identity`'s bucket, or raise a 429 saying when to retry."""
        if self.capacity is None:
            return
        refill_per_second = self.capacity / 60
        with self._lock:
            now = self.clock()
            tokens, last = self._buckets.get(identity, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * refill_per_second)
            if tokens < 1:
                self._buckets[identity] = (tokens, now)
                wait = (1 - tokens) / refill_per_second
                raise ApiError(
                    429,
                    f"rate limit of {self.capacity:g} requests per minute exceeded; "
                    f"retry in {wait:.1f} s",
                    retry_after=wait,
                )
            self._buckets[identity] = (tokens - 1, now)
