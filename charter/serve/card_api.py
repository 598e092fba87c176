"""GET /card/{model_id}: the served model's card (`card.md`, written by the release gate beside
its checkpoint) as Markdown, for the web chat to show; 404 for a model without one."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from charter.serve.errors import ApiError
from charter.serve.http import authorize, server_state

router = APIRouter(dependencies=[Depends(authorize)])


@router.get("/card/{model_id}", include_in_schema=False)
async def model_card(model_id: str, request: Request) -> PlainTextResponse:
    model = server_state(request).registry.get(model_id)
    if model.card is None:
        raise ApiError(404, f"model {model_id!r} has no card: it has not been through the gate")
    return PlainTextResponse(model.card, media_type="text/markdown; charset=utf-8")
