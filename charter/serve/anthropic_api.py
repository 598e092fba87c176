"""The Anthropic Messages API: POST /v1/messages (JSON or server-sent events),
POST /v1/messages/count_tokens, GET /v1/models and GET /v1/models/{id}.

A stream is exactly the sequence the `anthropic` SDK consumes:

    message_start → ping → (content_block_start → content_block_delta* → content_block_stop)*
    → message_delta (stop reason, cumulative usage) → message_stop

with `event: error` in place of the rest if the generation fails part-way. A thinking block gets
a `signature_delta` before it stops: an HMAC of its text under the server's key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import replace

from fastapi import APIRouter, Depends, Request

from charter import chat
from charter.chat.template import BLOCK_SEPARATOR
from charter.infer.generator import ADAPTIVE, TurnOptions, TurnRequest, TurnStream
from charter.serve.errors import ApiError, invalid_request
from charter.serve.http import (
    authorize,
    finish_turn,
    new_id,
    parse_body,
    read_conversation,
    server_state,
)
from charter.serve.registry import ServedModel
from charter.serve.schemas import (
    ContentBlock,
    CountTokensRequest,
    MessageResponse,
    MessagesRequest,
    ModelInfo,
    ModelPage,
    TextContent,
    ThinkingContent,
    TokenCount,
    ToolUseContent,
    Usage,
)
from charter.serve.sse import event_stream, frame

router = APIRouter(dependencies=[Depends(authorize)])


# ---- request → conversation and options ----


def _text(content: str | list, path: str) -> str:
    if isinstance(content, str):
        return content
    for i, block in enumerate(content):
        if block.type != "text":
            raise invalid_request(
                f"a system message may hold only text, not {block.type}", f"{path}[{i}]"
            )
    return BLOCK_SEPARATOR.join(block.text for block in content)


def conversation_from_request(body: CountTokensRequest) -> chat.Conversation:
    """`system` (a string or text blocks) and any `role: "system"` messages, in order, make the
    system prompt; the other messages and the tools go through `chat.conversation_from_dict`."""
    system = [_text(body.system, "system")] if body.system else []
    messages, positions = [], []  # positions: each kept message's index in the request
    for i, message in enumerate(body.messages):
        if message.role == "system":
            system.append(_text(message.content, f"messages[{i}].content"))
        else:
            messages.append(message.model_dump())
            positions.append(i)
    tools = [t.model_dump(exclude_none=True) for t in body.tools or []]
    data = {"messages": messages, "tools": tools}
    if system:
        data["system"] = BLOCK_SEPARATOR.join(system)
    return read_conversation(data, positions)


def turn_options(body: CountTokensRequest) -> TurnOptions:
    """The options a prompt depends on (what count_tokens needs); `create_message` adds the
    sampling options. `thinking: {"type": "adaptive"}` leaves the choice to the generator (see
    `TurnOptions.thinking_budget`)."""
    choice, thinking = body.tool_choice, body.thinking
    budget = None
    if thinking is not None and thinking.type == "enabled":
        budget = thinking.budget_tokens
    elif thinking is not None and thinking.type in ("adaptive", "between_tools"):
        budget = ADAPTIVE
    return TurnOptions(
        max_tokens=1,
        thinking_budget=budget,
        tool_choice=choice.type if choice else "auto",
        tool_name=getattr(choice, "name", None),
    )


# ---- response pieces ----


def sign(key: bytes, thinking: str) -> str:
    """A thinking block's signature: an HMAC of its text under this server process's key."""
    digest = hmac.new(key, thinking.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def content_block(block: chat.Block, key: bytes) -> ContentBlock:
    if block.type == "text":
        return TextContent(text=block.text)
    if block.type == "thinking":
        return ThinkingContent(thinking=block.thinking, signature=sign(key, block.thinking))
    return ToolUseContent(id=block.id, name=block.name, input=block.input)


def _started_block(block: chat.Block) -> dict:
    """The `content_block` of a content_block_start: the block with nothing in it yet."""
    if block.type == "text":
        return {"type": "text", "text": ""}
    if block.type == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}
    return {"type": "tool_use", "id": block.id, "name": block.name, "input": {}}


# The parser's delta kinds as the API's delta types and their text field.
_DELTAS = {
    "text": ("text_delta", "text"),
    "thinking": ("thinking_delta", "thinking"),
    "input_json": ("input_json_delta", "partial_json"),
}


def _delta(kind: str, text: str) -> dict:
    delta_type, text_field = _DELTAS[kind]
    return {"type": delta_type, text_field: text}


# ---- routes ----


@router.post("/v1/messages")
async def create_message(request: Request):
    body = await parse_body(request, MessagesRequest)
    state = server_state(request)
    served = state.registry.get(body.model)
    options = replace(
        turn_options(body),
        max_tokens=body.max_tokens,
        stop_sequences=[s for s in body.stop_sequences or [] if s is not None],
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=body.top_p or 1.0,
        top_k=body.top_k or 0,
    )
    budget = options.thinking_budget
    if isinstance(budget, int) and budget >= body.max_tokens:
        raise invalid_request(
            f"must be less than max_tokens ({body.max_tokens})", "thinking.budget_tokens"
        )
    if body.output_config is not None and body.output_config.format is not None:
        raise invalid_request(
            "structured outputs (an answer held to a JSON schema) are not supported",
            "output_config.format",
        )
    stream = await served.generator.open(TurnRequest(conversation_from_request(body), options))
    message_id = new_id("msg_")
    if body.stream:
        return event_stream(_stream(stream, message_id, served.name, state.signing_key))
    turn = await finish_turn(stream, request.is_disconnected)
    return MessageResponse(
        id=message_id,
        model=served.name,
        content=[content_block(b, state.signing_key) for b in turn.content],
        stop_reason=turn.stop_reason,
        stop_sequence=turn.stop_sequence,
        usage=Usage(input_tokens=turn.input_tokens, output_tokens=turn.output_tokens),
    )


async def _stream(
    stream: TurnStream, message_id: str, model: str, key: bytes
) -> AsyncIterator[str]:
    start = MessageResponse(
        id=message_id,
        model=model,
        content=[],
        stop_reason=None,
        stop_sequence=None,
        usage=Usage(input_tokens=stream.input_tokens, output_tokens=0),
    )
    try:
        yield frame({"type": "message_start", "message": start.model_dump()}, "message_start")
        yield frame({"type": "ping"}, "ping")
        async for event in stream.events():
            if isinstance(event, chat.BlockStart):
                data = {"index": event.index, "content_block": _started_block(event.block)}
                yield frame({"type": "content_block_start", **data}, "content_block_start")
            elif isinstance(event, chat.BlockDelta):
                data = {"index": event.index, "delta": _delta(event.kind, event.text)}
                yield frame({"type": "content_block_delta", **data}, "content_block_delta")
            else:
                block = stream.blocks[event.index]
                if block.type == "thinking":
                    delta = {"type": "signature_delta", "signature": sign(key, block.thinking)}
                    data = {"index": event.index, "delta": delta}
                    yield frame({"type": "content_block_delta", **data}, "content_block_delta")
                yield frame(
                    {"type": "content_block_stop", "index": event.index}, "content_block_stop"
                )
        turn = stream.turn
        delta = {"stop_reason": turn.stop_reason, "stop_sequence": turn.stop_sequence}
        usage = {"input_tokens": turn.input_tokens, "output_tokens": turn.output_tokens}
        yield frame({"type": "message_delta", "delta": delta, "usage": usage}, "message_delta")
        yield frame({"type": "message_stop"}, "message_stop")
    except Exception as e:  # the status line is sent: report the failure in the stream
        error = e if isinstance(e, ApiError) else ApiError(500, str(e))
        yield frame(
            {"type": "error", "error": {"type": error.error_type, "message": error.message}},
            "error",
        )
    finally:
        if stream.turn is None:  # the client went away (or the generation failed)
            stream.cancel()


@router.post("/v1/messages/count_tokens")
async def count_tokens(request: Request) -> TokenCount:
    body = await parse_body(request, CountTokensRequest)
    served = server_state(request).registry.get(body.model)
    turn_request = TurnRequest(conversation_from_request(body), turn_options(body))
    return TokenCount(input_tokens=await served.generator.count_tokens(turn_request))


def model_info(served: ServedModel) -> ModelInfo:
    window = served.context_window
    return ModelInfo(
        id=served.name,
        display_name=served.name,
        created_at=served.created_at.isoformat().replace("+00:00", "Z"),
        max_input_tokens=None if window is None else window - 1,
        max_tokens=None if window is None else window - 1,
    )


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise invalid_request(f"must be an integer from 1 to 1000, got {raw!r}", "limit")
    return int(raw)


@router.get("/v1/models")
async def list_models(request: Request) -> ModelPage:
    """Models in the order they were given to `charter serve`, paged by `after_id`/`before_id`."""
    names = list(server_state(request).registry.models)
    limit = _limit(request)
    after, before = request.query_params.get("after_id"), request.query_params.get("before_id")
    for param, value in (("after_id", after), ("before_id", before)):
        if value is not None and value not in names:
            raise invalid_request(f"unknown model id {value!r}", param)
    if before is not None:
        end = names.index(before)
        page = names[max(0, end - limit) : end]
        has_more = end - limit > 0
    else:
        start = names.index(after) + 1 if after is not None else 0
        page = names[start : start + limit]
        has_more = start + limit < len(names)
    registry = server_state(request).registry
    return ModelPage(
        data=[model_info(registry.get(name)) for name in page],
        has_more=has_more,
        first_id=page[0] if page else None,
        last_id=page[-1] if page else None,
    )


@router.get("/v1/models/{model_id}")
async def get_model(model_id: str, request: Request) -> ModelInfo:
    return model_info(server_state(request).registry.get(model_id))
