"""`OpenAIGenerator`: any OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp's server,
Ollama, Charter's /v1/chat/completions), through the official `openai` SDK, on the machinery of
`remote.py`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
from openai.lib.streaming.chat import ChatCompletionStreamState

from charter import chat
from charter.chat.parse import BlockDelta, BlockStart, BlockStop, Event
from charter.infer.generator import (
    ADAPTIVE,
    END_TURN,
    MAX_TOKENS,
    STOP_SEQUENCE,
    TOOL_USE,
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

# ---- OpenAI chat completions ----


# OpenAI finish reasons as stop reasons. "stop" is the end of the turn or a stop sequence, which
# the API does not tell apart (see `_openai_stop`); anything else (say, content_filter) ended it.
_FINISH_REASONS = {"length": MAX_TOKENS, "tool_calls": TOOL_USE, "function_call": TOOL_USE}
# Where OpenAI-compatible servers put a reasoning model's thinking (llama.cpp, Charter and older
# vLLM: reasoning_content; newer vLLM and Ollama: reasoning).
_REASONING_FIELDS = ("reasoning_content", "reasoning")


def openai_messages(conversation: chat.Conversation) -> list[dict[str, Any]]:
    """The conversation as chat-completion messages, the inverse of Charter's server mapping
    (`serve/openai_api.py`): the system prompt first, tool_use blocks as `tool_calls`, each
    tool_result as a `tool` message. Earlier turns' thinking is not sent: these APIs take no
    reasoning in requests. Raises `InvalidRequest` for a tool result with `is_error`, which
    they cannot express."""
    messages = []
    if conversation.system is not None:
        messages.append({"role": "system", "content": conversation.system})
    for i, message in enumerate(conversation.messages):
        if message.role == "assistant":
            texts = [b.text for b in message.content if b.type == "text"]
            calls = [_openai_tool_call(b) for b in message.content if b.type == "tool_use"]
            messages.append(
                {"role": "assistant", "content": chat.BLOCK_SEPARATOR.join(texts)}
                | ({"tool_calls": calls} if calls else {})
            )
            continue
        texts = []  # a run of text blocks: one user message
        for j, block in enumerate(message.content):
            if block.type == "text":
                texts.append(block.text)
                continue
            if texts:
                messages.append({"role": "user", "content": chat.BLOCK_SEPARATOR.join(texts)})
                texts = []
            if block.is_error:
                raise InvalidRequest(
                    "OpenAI chat completions cannot mark a tool result as an error",
                    f"messages[{i}].content[{j}].is_error",
                )
            messages.append(
                {"role": "tool", "tool_call_id": block.tool_use_id, "content": block.text}
            )
        if texts:
            messages.append({"role": "user", "content": chat.BLOCK_SEPARATOR.join(texts)})
    return messages


def _openai_tool_call(block: chat.ToolUseBlock) -> dict[str, Any]:
    function = {"name": block.name, "arguments": json.dumps(block.input, ensure_ascii=False)}
    return {"id": block.id, "type": "function", "function": function}


def _openai_tool_use(call: Any) -> chat.ToolUseBlock:
    try:
        arguments = json.loads(call.function.arguments or "{}")
    except json.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        raise RuntimeError(
            f"the tool call {call.function.name!r} has arguments that are not a JSON object: "
            f"{call.function.arguments!r}"
        )
    return chat.ToolUseBlock(call.id, call.function.name, arguments)


def _reasoning(message: Any) -> str | None:
    for name in _REASONING_FIELDS:
        if isinstance(text := getattr(message, name, None), str) and text:
            return text
    return None


def _openai_stop(choice: Any, stop_sequences: list[str]) -> tuple[str, str | None]:
    if choice.finish_reason != "stop":
        return _FINISH_REASONS.get(choice.finish_reason, END_TURN), None
    # vLLM says which stop string matched (`stop_reason`); the API itself does not.
    matched = getattr(choice, "stop_reason", None)
    if isinstance(matched, str) and matched in stop_sequences:
        return STOP_SEQUENCE, matched
    return END_TURN, None


def _openai_turn(completion: Any, stop_sequences: list[str]) -> Turn:
    choice = completion.choices[0]
    message = choice.message
    blocks: list[chat.Block] = []
    if reasoning := _reasoning(message):
        blocks.append(chat.ThinkingBlock(reasoning))
    if message.content:
        blocks.append(chat.TextBlock(message.content))
    blocks += [_openai_tool_use(call) for call in message.tool_calls or []]
    usage = completion.usage
    return Turn(
        blocks,
        *_openai_stop(choice, stop_sequences),
        input_tokens=usage.prompt_tokens if usage else 0,
        output_tokens=usage.completion_tokens if usage else 0,
    )


class _ChunkEvents:
    """Parser events for a stream of chat-completion chunks. Reasoning, content and each tool
    call are one block each, in the order they begin; a block ends when the next begins. The
    SDK's `ChatCompletionStreamState` accumulates the chunks into the final completion, and
    finished blocks are read from it."""

    def __init__(self) -> None:
        self.state = ChatCompletionStreamState()
        self._open: tuple[str, int] | None = None  # (kind, tool call index) receiving deltas
        self._index = -1

    def feed(self, chunk: Any) -> list[tuple[Event, chat.Block | None]]:
        self.state.handle_chunk(chunk)
        out: list[tuple[Event, chat.Block | None]] = []
        for choice in chunk.choices[:1]:
            delta = choice.delta
            if reasoning := _reasoning(delta):
                out += self._delta(("thinking", 0), reasoning, chat.ThinkingBlock(""))
            if delta.content:
                out += self._delta(("text", 0), delta.content, chat.TextBlock(""))
            for call in delta.tool_calls or []:
                # A call's first delta has its id and name; later ones, more of its arguments.
                function = call.function
                empty = chat.ToolUseBlock(call.id or "", (function and function.name) or "", {})
                arguments = (function and function.arguments) or ""
                out += self._delta(("input_json", call.index), arguments, empty)
        return out

    def finish(self) -> list[tuple[Event, chat.Block | None]]:
        return self._close()

    def _delta(
        self, key: tuple[str, int], text: str, empty: chat.Block
    ) -> list[tuple[Event, chat.Block | None]]:
        out = []
        if key != self._open:
            out += self._close()
            self._open, self._index = key, self._index + 1
            out.append((BlockStart(self._index, empty), None))
        if text:
            out.append((BlockDelta(self._index, key[0], text), None))
        return out

    def _close(self) -> list[tuple[Event, chat.Block | None]]:
        if self._open is None:
            return []
        kind, call = self._open
        self._open = None
        message = self.state.current_completion_snapshot.choices[0].message
        if kind == "thinking":
            block: chat.Block = chat.ThinkingBlock(_reasoning(message) or "")
        elif kind == "text":
            block = chat.TextBlock(message.content or "")
        else:
            block = _openai_tool_use(message.tool_calls[call])
        return [(BlockStop(self._index), block)]


class OpenAIGenerator(RemoteGenerator):
    """A model behind an OpenAI-compatible chat-completions endpoint (`base_url`, ending in
    `/v1`). Thinking budgets cannot be expressed (a budget is refused; adaptive thinking leaves
    it to the server), reasoning comes back as a thinking block, and a stop at a stop sequence
    is reported as `end_turn` unless the server says which sequence matched (vLLM does). There
    is no token-counting endpoint in this API."""

    _sdk_error = openai.APIError

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key: str | None = None,
        *,
        key_env: str = "OPENAI_API_KEY",
        key_file: str | Path | None = None,
        max_concurrency: int = 8,
        max_retries: int = DEFAULT_MAX_RETRIES,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        key = resolve_api_key(api_key, key_file, key_env, base_url)
        self._client = openai.AsyncOpenAI(
            api_key=key, base_url=base_url, max_retries=max_retries, timeout=timeout
        )
        super().__init__(model, str(self._client.base_url), max_concurrency)

    def _params(self, request: TurnRequest) -> dict[str, Any]:
        options, conversation = request.options, request.conversation
        if options.thinking_budget not in (None, ADAPTIVE):
            raise InvalidRequest(
                "OpenAI chat completions cannot express a thinking budget", "thinking"
            )
        params: dict[str, Any] = {
            "model": self.model,
            "messages": openai_messages(conversation),
            "max_tokens": options.max_tokens,
            "temperature": options.temperature,
        }
        if conversation.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.input_schema,
                    },
                }
                for t in conversation.tools
            ]
        if options.tool_choice == "tool":
            if not options.tool_name:
                raise InvalidRequest("tool_choice 'tool' needs tool_name", "tool_choice.name")
            params["tool_choice"] = {"type": "function", "function": {"name": options.tool_name}}
        elif options.tool_choice != "auto":
            params["tool_choice"] = {"any": "required", "none": "none"}[options.tool_choice]
        if options.stop_sequences:
            params["stop"] = list(options.stop_sequences)
        if options.top_p != 1.0:
            params["top_p"] = options.top_p
        if options.seed is not None:
            params["seed"] = options.seed
        if options.top_k:
            params["extra_body"] = {"top_k": options.top_k}  # an extension (vLLM, llama.cpp)
        return params

    async def _complete(self, params: dict[str, Any]) -> Turn:
        completion = await self._client.chat.completions.create(**params)
        return _openai_turn(completion, params.get("stop", []))

    async def _stream(self, params: dict[str, Any], stream: RemoteTurnStream) -> None:
        chunks = await self._client.chat.completions.create(
            **params, stream=True, stream_options={"include_usage": True}
        )
        stream._started(0)  # the prompt's tokens come with the last chunk
        translator = _ChunkEvents()
        async with chunks:
            async for chunk in chunks:
                for event, block in translator.feed(chunk):
                    stream._event(event, block)
        for event, block in translator.finish():
            stream._event(event, block)
        final = translator.state.current_completion_snapshot
        stream._finished(_openai_turn(final, params.get("stop", [])))

    async def count_tokens(self, request: TurnRequest) -> int:
        raise NotImplementedError(
            f"{self.url}: OpenAI chat completions have no token-counting endpoint"
        )

    async def _fetch_context_window(self) -> int | None:
        """From GET /v1/models: vLLM lists `max_model_len`, Charter `max_input_tokens`; OpenAI's
        own API and most others say nothing."""
        try:
            async for info in self._client.models.list():
                if info.id == self.model:
                    for name in ("max_model_len", "max_input_tokens"):
                        if isinstance(value := getattr(info, name, None), int):
                            return value
                    return None
        except openai.NotFoundError:
            pass
        return None
