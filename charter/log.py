"""Where progress and notices go: stderr, flushed at once, so `charter VERB … > out` keeps only
the results on stdout."""

from __future__ import annotations

import sys


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
