"""What every API endpoint does with an HTTP request around its own work: authenticate, apply the
rate limit, read a size-bounded JSON body, validate it against a schema and read its
conversation; then wait for the turn, cancelling it if the client goes away."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from charter import chat
from charter.infer.generator import Turn, TurnStream
from charter.serve.auth import KeyChecker, RateLimiter
from charter.serve.errors import ApiError, from_validation_error, invalid_request
from charter.serve.registry import Registry

Schema = TypeVar("Schema", bound=BaseModel)

_ID_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """`msg_…`, `req_…`: a prefix and 24 random alphanumerics, like Anthropic's ids."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


@dataclass
class ServerState:
    registry: Registry
    keys: KeyChecker
    limiter: RateLimiter
    max_body_bytes: int
    signing_key: bytes  # signs thinking blocks


def server_state(request: Request) -> ServerState:
    return request.app.state.charter


async def authorize(request: Request) -> None:
    """A FastAPI dependency of every /v1 route: 401 without a valid key, 429 over the limit."""
    state = server_state(request)
    client = request.client.host if request.client else "unknown"
    state.limiter.check(state.keys.identify(request.headers, client))


async def read_json_body(request: Request) -> dict[str, Any]:
    limit = server_state(request).max_body_bytes
    too_large = ApiError(413, f"request body is larger than the limit of {limit:,} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    try:
        data = json.loads(body)
    except UnicodeDecodeError as e:
        raise invalid_request(f"request body is not UTF-8 ({e.reason})") from e
    except json.JSONDecodeError as e:
        raise invalid_request(
            f"request body is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}"
        ) from e
    if not isinstance(data, dict):
        raise invalid_request("request body must be a JSON object")
    return data


async def parse_body(request: Request, schema: type[Schema]) -> Schema:
    data = await read_json_body(request)
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        raise from_validation_error(e, data) from e


def read_conversation(data: dict, positions: list[int]) -> chat.Conversation:
    """`chat.conversation_from_dict` of Anthropic-format `data` built from a request; an error
    becomes a 400 naming the request's own message: `positions[k]` is the index in the request
    of message k of `data` (requests may hold messages that `data` folds elsewhere)."""
    try:
        return chat.conversation_from_dict(data, where="request")
    except ValueError as e:
        renumbered = re.sub(
            r"messages\[(\d+)\]", lambda m: f"messages[{positions[int(m[1])]}]", str(e)
        )
        raise invalid_request(renumbered.removeprefix("request: ")) from e


async def finish_turn(stream: TurnStream, disconnected: Callable[[], Awaitable[bool]]) -> Turn:
    """The whole turn; cancels the generation if `disconnected()` turns true."""

    async def consume() -> None:
        async for _ in stream.events():
            pass

    task = asyncio.ensure_future(consume())
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.2)
            if not task.done() and await disconnected():
                raise ApiError(499, "client disconnected")
    finally:
        if not task.done():
            stream.cancel()
            task.cancel()
    task.result()  # re-raise a failure of the generation
    return stream.turn
