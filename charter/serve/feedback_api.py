"""Human feedback: the /redteam and /compare pages and the endpoints they post to, storing into
the feedback database (`charter serve --feedback-db PATH`; without it the pages say so and the
POST endpoints answer 404).

    GET  /v1/charter/feedback     → {"type": "feedback_status", "enabled": true,
                                     "categories": [...], "verdicts": [...]}
    POST /v1/charter/findings     {"model", "messages", "response", "verdict", "category"?,
                                   "round"?, "stop_reason"?}
                                  → {"type": "finding", "attack_id", "target", "round",
                                     "verdict" (as stored), "new"}
    POST /v1/charter/comparisons  {"prompt", "model_a", "response_a", "model_b", "response_b",
                                   "choice": "a" | "b" | "tie"}
                                  → {"type": "comparison", "id", "choice" (as stored), "new"}

A red-team rating is a `Finding` of split, strategy and judge "human" on the named model; a
comparison goes to the `comparisons` table of the same file (charter.data.comparisons). The
pages get the replies from /v1/messages with the person's key, as the web chat does; the
endpoints take the same key. `new` is false where the same finding or comparison was already
stored (it is kept as it was).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field, field_validator

from charter.align.redteam.findings import HUMAN, VERDICTS, Finding, Findings
from charter.data.comparisons import CHOICES, Comparison, Comparisons
from charter.data.judge_sources import CATEGORIES
from charter.serve.errors import ApiError, invalid_request
from charter.serve.http import authorize, parse_body, server_state

PAGES = Path(__file__).parent / "static"
UNKNOWN = "unknown"  # the category of an attack the person did not label
PAGE_SOURCE = "redteam-page"  # a human finding's `source`

router = APIRouter()
api = APIRouter(dependencies=[Depends(authorize)])


class Feedback:
    """The two stores of the feedback database, opened once for the server's lifetime."""

    def __init__(self, path: str | Path) -> None:
        self.findings = Findings(path)
        self.comparisons = Comparisons(path)


class AttackMessage(BaseModel):
    role: Literal["user", "assistant"]
    content: str = Field(min_length=1)


class FindingRequest(BaseModel):
    model: str
    messages: list[AttackMessage] = Field(min_length=1)
    response: str
    verdict: Literal[VERDICTS]
    category: Literal[(*CATEGORIES, UNKNOWN)] = UNKNOWN
    round: int = Field(0, ge=0)
    stop_reason: str = ""

    @field_validator("messages")
    @classmethod
    def ends_with_user(cls, messages: list[AttackMessage]) -> list[AttackMessage]:
        if messages[-1].role != "user":
            raise ValueError("an attack ends with a user turn")
        return messages


class ComparisonRequest(BaseModel):
    prompt: str
    model_a: str
    response_a: str
    model_b: str
    response_b: str
    choice: Literal[CHOICES]


def _feedback(request: Request) -> Feedback:
    feedback = request.app.state.feedback
    if feedback is None:
        raise ApiError(
            404, "feedback is off on this server: start `charter serve` with --feedback-db PATH"
        )
    return feedback


def _served(request: Request, name: str, field: str) -> str:
    models = server_state(request).registry.models
    if name not in models:
        raise invalid_request(f"{name!r} is not served; served: {', '.join(models)}", field)
    return name


@router.get("/redteam", include_in_schema=False)
async def redteam_page() -> FileResponse:
    return FileResponse(PAGES / "redteam.html")


@router.get("/compare", include_in_schema=False)
async def compare_page() -> FileResponse:
    return FileResponse(PAGES / "compare.html")


@api.get("/v1/charter/feedback")
async def feedback_status(request: Request) -> dict:
    return {
        "type": "feedback_status",
        "enabled": request.app.state.feedback is not None,
        "categories": [*CATEGORIES, UNKNOWN],
        "verdicts": list(VERDICTS),
    }


@api.post("/v1/charter/findings")
async def add_finding(request: Request) -> dict:
    feedback = _feedback(request)
    body = await parse_body(request, FindingRequest)
    messages = [m.model_dump() for m in body.messages]
    finding = Finding(
        seed=messages[-1]["content"],  # a person's attack is its own seed
        strategy=HUMAN,
        category=body.category,
        split=HUMAN,
        messages=messages,
        response=body.response,
        verdict=body.verdict,
        round=body.round,
        target=_served(request, body.model, "model"),
        judge=HUMAN,
        source=PAGE_SOURCE,
        stop_reason=body.stop_reason,
    )
    new = feedback.findings.add([finding]) == 1
    if not new:
        key = {"attack_id": finding.attack_id, "target": finding.target, "round": finding.round}
        (finding,) = feedback.findings.query(**key)
    return {
        "type": "finding",
        "attack_id": finding.attack_id,
        "target": finding.target,
        "round": finding.round,
        "verdict": finding.verdict,
        "new": new,
    }


@api.post("/v1/charter/comparisons")
async def add_comparison(request: Request) -> dict:
    feedback = _feedback(request)
    body = await parse_body(request, ComparisonRequest)
    for field in ("model_a", "model_b"):
        _served(request, getattr(body, field), field)
    try:
        comparison = Comparison(**body.model_dump())
    except ValueError as e:  # its message starts with the field
        raise invalid_request(str(e)) from e
    new = feedback.comparisons.add(comparison)
    stored = comparison if new else feedback.comparisons.get(comparison.id)
    return {"type": "comparison", "id": stored.id, "choice": stored.choice, "new": new}


router.include_router(api)
