"""Server-sent events: the framing both APIs stream in, and the response that carries them.

A frame is `event: NAME\\ndata: JSON\\n\\n` (Anthropic names every event; OpenAI sends bare
`data:` lines and ends with `data: [DONE]`). When the client disconnects, Starlette cancels the
response's iterator; the `finally` of the iterator (in the API modules) cancels the generation.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse


def frame(data: Any, event: str | None = None) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n"


def event_stream(frames: AsyncIterator[str], headers: dict[str, str] | None = None):
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        # No proxy buffering or caching: each frame must reach the client as it is written.
        headers={"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})},
    )
