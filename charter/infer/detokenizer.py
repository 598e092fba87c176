"""Incremental detokenisation with stop sequences.

Two things make streaming text from byte-level tokens subtle:
- a token can end in the middle of a UTF-8 character, so the decoded tail may be an incomplete
  character (U+FFFD) that the next token completes; and
- a stop string can be split across tokens, so text that might be the start of a stop string
  must be held back until it is known not to be one.
`TextStream` releases only text that is final, and reports the stop string when one appears; the
stop string itself is never released.
"""

from __future__ import annotations

from charter.tokenizer import Tokenizer

REPLACEMENT_CHARACTER = "\ufffd"


class TextStream:
    def __init__(self, tokenizer: Tokenizer, stop: list[str] | None = None) -> None:
        self.tokenizer = tokenizer
        self.stop = list(stop or [])
        self.ids: list[int] = []
        self.text = ""  # released so far
        self.stop_sequence: str | None = None

    def push(self, token_id: int) -> str:
        """Add one token; return the newly released text ('' if none is final yet)."""
        if self.stop_sequence is not None:
            raise RuntimeError("stream already stopped at a stop sequence")
        self.ids.append(token_id)
        decoded = self.tokenizer.decode(self.ids)
        complete = decoded.rstrip(REPLACEMENT_CHARACTER)  # an unfinished character may follow
        stop_at = self._find_stop(complete)
        if stop_at is not None:
            return self._release(complete[:stop_at])
        return self._release(complete[: len(complete) - self._stop_prefix_length(complete)])

    def finish(self) -> str:
        """Release whatever was held back (the generation ended without a stop string)."""
        if self.stop_sequence is not None:
            return ""
        return self._release(self.tokenizer.decode(self.ids))

    def _release(self, final_text: str) -> str:
        delta = final_text[len(self.text) :]
        self.text = final_text
        return delta

    def _find_stop(self, text: str) -> int | None:
        """Index of the earliest stop string in `text`, searching only where a new one can be."""
        longest = max((len(s) for s in self.stop), default=0)
        window_start = max(0, len(self.text) - longest + 1)
        best: tuple[int, str] | None = None
        for stop in self.stop:
            at = text.find(stop, window_start)
            if at != -1 and (best is None or at < best[0]):
                best = (at, stop)
        if best is None:
            return None
        self.stop_sequence = best[1]
        return best[0]

    def _stop_prefix_length(self, text: str) -> int:
        """Length of the longest tail of `text` that is a proper prefix of some stop string."""
        held = 0
        for stop in self.stop:
            for n in range(min(len(stop) - 1, len(text)), held, -1):
                if text.endswith(stop[:n]):
                    held = n
                    break
        return held
