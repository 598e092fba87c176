"""`AnthropicGenerator`: any endpoint that speaks the Anthropic Messages API (Anthropic's own,
another `charter serve`, a proxy), through the official `anthropic` SDK, on the machinery of
`remote.py`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anthropic

from charter import chat
from charter.chat.parse import BlockDelta, BlockStart, BlockStop
from charter.infer.generator import (
    ADAPTIVE,
    InvalidRequest,
    Turn,
    TurnRequest,
)
from charter.infer.remote import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    RemoteGenerator,
    RemoteTurnStream,
    resolve_api_key,
)

# ---- Anthropic Messages API ----


# The content blocks Charter has; others (a real API's `redacted_thinking`, server tool calls)
# are left out of turns and streams.
_ANTHROPIC_BLOCKS = ("text", "thinking", "tool_use")
# The API's delta types as parser delta kinds, and the field holding their text.
_ANTHROPIC_DELTAS = {
    "text_delta": ("text", "text"),
    "thinking_delta": ("thinking", "thinking"),
    "input_json_delta": ("input_json", "partial_json"),
}


def _anthropic_block(block: Any) -> chat.Block:
    if block.type == "text":
        return chat.TextBlock(block.text)
    if block.type == "thinking":
        return chat.ThinkingBlock(block.thinking, block.signature)
    return chat.ToolUseBlock(block.id, block.name, dict(block.input))


def _anthropic_turn(message: Any) -> Turn:
    return Turn(
        [_anthropic_block(b) for b in message.content if b.type in _ANTHROPIC_BLOCKS],
        message.stop_reason,
        message.stop_sequence,
        message.usage.input_tokens,
        message.usage.output_tokens,
    )


class AnthropicGenerator(RemoteGenerator):
    """A model behind an Anthropic Messages endpoint (`base_url`; default `$ANTHROPIC_BASE_URL`,
    else Anthropic's). Sampling options go in the request body (`temperature`, and `top_p` and
    `top_k` when not their defaults); the Messages API has no seed, so `seed` is not sent."""

    _sdk_error = anthropic.APIError

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        key_env: str = "ANTHROPIC_API_KEY",
        key_file: str | Path | None = None,
        max_concurrency: int = 8,
        max_retries: int = DEFAULT_MAX_RETRIES,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        base_url = base_url or os.environ.get("ANTHROPIC_BASE_URL") or None
        key = resolve_api_key(api_key, key_file, key_env, base_url)
        self._client = anthropic.AsyncAnthropic(
            api_key=key, base_url=base_url, max_retries=max_retries, timeout=timeout
        )
        super().__init__(model, str(self._client.base_url), max_concurrency)

    def _prompt_params(self, request: TurnRequest) -> dict[str, Any]:
        """What the prompt depends on: all that count_tokens takes."""
        options = request.options
        params = {"model": self.model, **chat.conversation_to_dict(request.conversation)}
        if options.tool_choice != "auto":
            params["tool_choice"] = {"type": options.tool_choice}
            if options.tool_choice == "tool":
                if not options.tool_name:
                    raise InvalidRequest("tool_choice 'tool' needs tool_name", "tool_choice.name")
                params["tool_choice"]["name"] = options.tool_name
        if options.thinking_budget == ADAPTIVE:
            params["thinking"] = {"type": "adaptive"}
        elif options.thinking_budget is not None:
            params["thinking"] = {"type": "enabled", "budget_tokens": options.thinking_budget}
        return params

    def _params(self, request: TurnRequest) -> dict[str, Any]:
        options = request.options
        params = self._prompt_params(request) | {"max_tokens": options.max_tokens}
        if options.stop_sequences:
            params["stop_sequences"] = list(options.stop_sequences)
        # This SDK has no keyword arguments for the sampling fields; the API takes them.
        sampling: dict[str, Any] = {"temperature": options.temperature}
        if options.top_p != 1.0:
            sampling["top_p"] = options.top_p
        if options.top_k:
            sampling["top_k"] = options.top_k
        return params | {"extra_body": sampling}

    async def _complete(self, params: dict[str, Any]) -> Turn:
        return _anthropic_turn(await self._client.messages.create(**params))

    async def _stream(self, params: dict[str, Any], stream: RemoteTurnStream) -> None:
        async with self._client.messages.stream(**params) as events:
            indices: dict[int, int] = {}  # the API's block index → ours (some are left out)
            async for event in events:  # raw events, and the SDK's derived ones (ignored)
                if event.type == "message_start":
                    stream._started(event.message.usage.input_tokens)
                elif event.type == "content_block_start":
                    if event.content_block.type in _ANTHROPIC_BLOCKS:
                        indices[event.index] = len(indices)
                        empty = _anthropic_block(event.content_block)
                        stream._event(BlockStart(indices[event.index], empty))
                elif event.type == "content_block_delta" and event.index in indices:
                    # A signature delta has no event: the signature is in the finished block.
                    if delta := _ANTHROPIC_DELTAS.get(event.delta.type):
                        kind, text_field = delta
                        text = getattr(event.delta, text_field)
                        stream._event(BlockDelta(indices[event.index], kind, text))
                elif event.type == "content_block_stop" and event.index in indices:
                    finished = events.current_message_snapshot.content[event.index]
                    stream._event(BlockStop(indices[event.index]), _anthropic_block(finished))
            stream._finished(_anthropic_turn(await events.get_final_message()))

    async def count_tokens(self, request: TurnRequest) -> int:
        counting = self._client.messages.count_tokens(**self._prompt_params(request))
        return (await self._loop.run_async(self._translated(counting))).input_tokens

    async def _fetch_context_window(self) -> int | None:
        """`max_input_tokens` of GET /v1/models/{id}. For Charter's server that is its context
        less the one token that must be left to generate, so one short of the truth."""
        try:
            info = await self._client.models.retrieve(self.model)
        except anthropic.NotFoundError:
            return None
        return getattr(info, "max_input_tokens", None)
