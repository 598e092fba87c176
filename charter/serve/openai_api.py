"""OpenAI chat completions: POST /v1/chat/completions, as JSON or as a stream of
`chat.completion.chunk` objects ending with `data: [DONE]`.

Messages map onto the same conversation as the Messages API: system and developer messages make
the system prompt, an assistant's `tool_calls` become tool_use blocks, and each run of `tool`
messages becomes one user message of tool_result blocks. Thinking stays off (the prompt carries
the empty think block); should the model think anyway, its thinking is returned as
`reasoning_content`, the field other OpenAI-compatible servers use.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request

from charter import chat
from charter.chat.template import BLOCK_SEPARATOR
from charter.infer.generator import (
    CONTEXT_WINDOW,
    MAX_TOKENS,
    REFUSAL,
    TOOL_USE,
    Turn,
    TurnOptions,
    TurnRequest,
    TurnStream,
)
from charter.serve.errors import ApiError, invalid_request
from charter.serve.http import (
    authorize,
    finish_turn,
    new_id,
    parse_body,
    read_conversation,
    server_state,
)
from charter.serve.schemas import ChatCompletionRequest, ChatMessage
from charter.serve.sse import event_stream, frame

router = APIRouter(dependencies=[Depends(authorize)])


def _text(message: ChatMessage) -> str:
    if isinstance(message.content, list):
        return BLOCK_SEPARATOR.join(part.text for part in message.content)
    return message.content or ""


def _tool_use(message: ChatMessage, path: str) -> list[dict[str, Any]]:
    blocks = []
    for j, call in enumerate(message.tool_calls or []):
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except json.JSONDecodeError as e:
            raise invalid_request(
                f"not valid JSON: {e.msg}", f"{path}.tool_calls[{j}].function.arguments"
            ) from e
        if not isinstance(arguments, dict):
            raise invalid_request(
                "expected a JSON object", f"{path}.tool_calls[{j}].function.arguments"
            )
        blocks.append(
            {"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments}
        )
    return blocks


def conversation_from_request(body: ChatCompletionRequest) -> chat.Conversation:
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    positions: list[int] = []
    for i, message in enumerate(body.messages):
        path = f"messages[{i}]"
        if message.role in ("system", "developer"):
            system.append(_text(message))
            continue
        if message.role == "tool":
            if not message.tool_call_id:
                raise invalid_request("a tool message needs tool_call_id", f"{path}.tool_call_id")
            block = {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id,
                "content": _text(message),
            }
            if messages and _is_tool_results(messages[-1]):
                messages[-1]["content"].append(block)  # a run of results is one user message
                continue
            role, content = "user", [block]
        elif message.role == "user":
            role, content = "user", [{"type": "text", "text": _text(message)}]
        else:
            text = _text(message)
            role = "assistant"
            content = ([{"type": "text", "text": text}] if text else []) + _tool_use(message, path)
        messages.append({"role": role, "content": content})
        positions.append(i)
    tools = [
        {
            "name": t.function.name,
            "description": t.function.description,
            "input_schema": t.function.parameters,
        }
        for t in body.tools or []
    ]
    data = {"messages": messages, "tools": tools}
    if system:
        data["system"] = BLOCK_SEPARATOR.join(system)
    return read_conversation(data, positions)


def _is_tool_results(message: dict[str, Any]) -> bool:
    return message["role"] == "user" and message["content"][0]["type"] == "tool_result"


def turn_options(body: ChatCompletionRequest, context_window: int | None) -> TurnOptions:
    choice = body.tool_choice
    if choice is None:
        tool_choice, tool_name = "auto", None
    elif isinstance(choice, str):
        tool_choice, tool_name = {"none": "none", "auto": "auto", "required": "any"}[choice], None
    else:
        tool_choice, tool_name = "tool", choice.function.name
    stop = [body.stop] if isinstance(body.stop, str) else body.stop or []
    return TurnOptions(
        max_tokens=body.max_completion_tokens or body.max_tokens or context_window or 4096,
        tool_choice=tool_choice,
        tool_name=tool_name,
        stop_sequences=stop,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=body.top_p or 1.0,
        top_k=body.top_k or 0,
        seed=body.seed,
    )


def finish_reason(stop_reason: str) -> str:
    if stop_reason == TOOL_USE:
        return "tool_calls"
    if stop_reason == REFUSAL:  # a safety layer ended the turn (charter.safety.guard)
        return "content_filter"
    return "length" if stop_reason in (MAX_TOKENS, CONTEXT_WINDOW) else "stop"


def _tool_call(block: chat.ToolUseBlock) -> dict[str, Any]:
    arguments = json.dumps(block.input, ensure_ascii=False)
    return {
        "id": block.id,
        "type": "function",
        "function": {"name": block.name, "arguments": arguments},
    }


def _usage(turn: Turn) -> dict[str, int]:
    return {
        "prompt_tokens": turn.input_tokens,
        "completion_tokens": turn.output_tokens,
        "total_tokens": turn.input_tokens + turn.output_tokens,
    }


@router.post("/v1/chat/completions")
async def create_chat_completion(request: Request):
    body = await parse_body(request, ChatCompletionRequest)
    served = server_state(request).registry.get(body.model)
    options = turn_options(body, served.context_window)
    stream = await served.generator.open(TurnRequest(conversation_from_request(body), options))
    header = {"id": new_id("chatcmpl-"), "created": int(time.time()), "model": served.name}
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return event_stream(_stream(stream, header, include_usage))
    turn = await finish_turn(stream, request.is_disconnected)
    blocks = turn.content
    texts = [b.text for b in blocks if b.type == "text"]
    message: dict[str, Any] = {"role": "assistant", "content": BLOCK_SEPARATOR.join(texts) or None}
    if calls := [_tool_call(b) for b in blocks if b.type == "tool_use"]:
        message["tool_calls"] = calls
    if thinking := [b.thinking for b in blocks if b.type == "thinking"]:
        message["reasoning_content"] = BLOCK_SEPARATOR.join(thinking)
    choice = {
        "index": 0,
        "message": message,
        "finish_reason": finish_reason(turn.stop_reason),
        "logprobs": None,
    }
    return {**header, "object": "chat.completion", "choices": [choice], "usage": _usage(turn)}


async def _stream(
    stream: TurnStream, header: dict[str, Any], include_usage: bool
) -> AsyncIterator[str]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        data = {**header, "object": "chat.completion.chunk"}
        data["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
        if include_usage:
            data["usage"] = None
        return frame(data)

    tool_index: dict[int, int] = {}  # block index → index among the tool calls
    try:
        yield chunk({"role": "assistant", "content": ""})
        async for event in stream.events():
            if isinstance(event, chat.BlockStart) and event.block.type == "tool_use":
                tool_index[event.index] = len(tool_index)
                function = {"name": event.block.name, "arguments": ""}  # arguments: in deltas
                call = {"index": tool_index[event.index], "id": event.block.id, "type": "function"}
                yield chunk({"tool_calls": [call | {"function": function}]})
            elif isinstance(event, chat.BlockDelta) and event.kind == "text":
                yield chunk({"content": event.text})
            elif isinstance(event, chat.BlockDelta) and event.kind == "thinking":
                yield chunk({"reasoning_content": event.text})
            elif isinstance(event, chat.BlockDelta):
                arguments = {
                    "index": tool_index[event.index],
                    "function": {"arguments": event.text},
                }
                yield chunk({"tool_calls": [arguments]})
        turn = stream.turn
        yield chunk({}, finish_reason(turn.stop_reason))
        if include_usage:
            yield frame(
                {**header, "object": "chat.completion.chunk", "choices": [], "usage": _usage(turn)}
            )
        yield frame("[DONE]")
    except Exception as e:  # the status line is sent: report the failure in the stream
        error = e if isinstance(e, ApiError) else ApiError(500, str(e))
        yield frame(error.openai_body())
    finally:
        if stream.turn is None:
            stream.cancel()
