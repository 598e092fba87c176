"""`charter <verb>`: the one entry point for every stage (the verbs: `charter.commands`).

Results go to stdout; progress and logs go to stderr, so `charter generate … > out.txt` holds
only the completion.
"""

from __future__ import annotations

from charter.commands import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
