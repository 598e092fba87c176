"""Incremental detokenisation with stop sequences.

Two things make streaming text from byte-level tokens subtle:
- a token can end in the middle of a UTF-8 character, so the decoded tail may be an incomplete
  character (U+FFFD) that the next token completes; and
- a stop string can be split across tokens, so text that might be the start of a stop string
  must be held back until it is known not to be one.
`TextStream` releases only text that is final, and reports the stop string when one appears; the
stop string itself is never released.

Each token is decoded in a short window, not with everything before it (which would cost time
growing with the length of the generation): the window starts one step back, at the tokens whose
text was last completed, so decoders that treat the start of a text specially (a leading space
dropped) see the same context every time, and the new text is what the newest tokens add to it.
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
        self._complete = ""  # the text of ids[:_read_start], every character whole
        # The decode window ids[_window_start:] begins one completed step before _read_start.
        self._window_start = self._read_start = 0

    def push(self, token_id: int) -> str:
        """Add one token; return the newly released text ('' if none is final yet)."""
        if self.stop_sequence is not None:
            raise RuntimeError("stream already stopped at a stop sequence")
        self.ids.append(token_id)
        added = self._added_text()
        if added.endswith(REPLACEMENT_CHARACTER):  # an unfinished character: wait for its end
            return ""
        self._complete += added
        self._window_start, self._read_start = self._read_start, len(self.ids)
        stop_at = self._find_stop(self._complete)
        if stop_at is not None:
            return self._release(self._complete[:stop_at])
        held = self._stop_prefix_length(self._complete)
        return self._release(self._complete[: len(self._complete) - held])

    def finish(self) -> str:
        """Release whatever was held back (the generation ended without a stop string)."""
        if self.stop_sequence is not None:
            return ""
        return self._release(self._complete + self._added_text())

    def _added_text(self) -> str:
        """The text that the ids from _read_start on add to what precedes them."""
        context = self.tokenizer.decode(self.ids[self._window_start : self._read_start])
        return self.tokenizer.decode(self.ids[self._window_start :])[len(context) :]

    def _release(self, final_text: str) -> str:
        delta = final_text[len(self.text) :]
        self.text = final_text
        return delta

    def _find_stop(self, text: str) -> int | None:
        """Index of the earliest stop string in `text`, searching only where a new one can be."""
        if not self.stop:
            return None
        longest = max(len(s) for s in self.stop)
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
