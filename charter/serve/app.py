"""The FastAPI application: both APIs, /health, the web chat at /, the models' cards (/card/ID;
card_api.py) and the human feedback pages (/redteam, /compare; feedback_api.py).

Every response carries a `request-id` header and a Content-Security-Policy that lets the web chat
load only its own scripts and styles and no remote images (model output is untrusted: a Markdown
image pointing elsewhere could leak the conversation through its URL). Errors of the OpenAI
endpoint take OpenAI's error shape; all others take Anthropic's.
"""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from charter.infer.generator import REQUEST_ID, InvalidRequest, Overloaded
from charter.infer.local import LocalGenerator
from charter.serve import anthropic_api, card_api, feedback_api, openai_api
from charter.serve.auth import KeyChecker, RateLimiter
from charter.serve.errors import ApiError, invalid_request
from charter.serve.http import ServerState, new_id
from charter.serve.registry import Registry

STATIC_DIRECTORY = Path(__file__).parent / "static"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_RESPONSE_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class RequestHeaders:
    """ASGI middleware: give each request an id (`request.state.request_id`, and
    `generator.REQUEST_ID` for the generators it calls) and put it, with the security headers,
    on the response. Plain ASGI, unlike `BaseHTTPMiddleware`, leaves streaming responses and
    client-disconnect cancellation alone."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = new_id("req_")
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(b"request-id", request_id.encode()), *_RESPONSE_HEADERS]
                message["headers"] = list(message.get("headers", [])) + headers
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            REQUEST_ID.reset(token)


def _error_response(request: Request, error: ApiError) -> JSONResponse:
    if request.url.path.startswith("/v1/chat/"):
        body = error.openai_body()
    else:
        body = error.anthropic_body(request.state.request_id)
    return JSONResponse(body, status_code=error.status, headers=error.headers())


def create_app(
    registry: Registry,
    *,
    api_keys: list[str] | None = None,
    requests_per_minute: float | None = None,
    max_body_bytes: int = 8 * 2**20,
    feedback_db: str | Path | None = None,
) -> FastAPI:
    app = FastAPI(title="Charter", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.charter = ServerState(
        registry=registry,
        keys=KeyChecker(api_keys or []),
        limiter=RateLimiter(requests_per_minute),
        max_body_bytes=max_body_bytes,
        signing_key=secrets.token_bytes(32),
    )
    app.state.feedback = None if feedback_db is None else feedback_api.Feedback(feedback_db)
    app.add_middleware(RequestHeaders)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return _error_response(request, error)

    @app.exception_handler(InvalidRequest)
    async def generator_refused(request: Request, error: InvalidRequest) -> JSONResponse:
        return _error_response(request, invalid_request(error.message, error.field))

    @app.exception_handler(Overloaded)
    async def generator_overloaded(request: Request, error: Overloaded) -> JSONResponse:
        overloaded = ApiError(529, str(error), retry_after=error.retry_after)
        return _error_response(request, overloaded)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        message = f"{request.method} {request.url.path}: {error.detail}"
        return _error_response(request, ApiError(error.status_code, message))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        return _error_response(request, ApiError(500, f"internal error: {error}"))

    @app.get("/health")
    async def health() -> dict:
        models = {
            name: dataclasses.asdict(model.generator.base.worker.stats())
            for name, model in registry.models.items()
            if isinstance(model.generator.base, LocalGenerator)
        }
        return {"status": "ok", "models": models}

    app.include_router(anthropic_api.router)
    app.include_router(openai_api.router)
    app.include_router(feedback_api.router)
    app.include_router(card_api.router)
    app.mount("/", StaticFiles(directory=STATIC_DIRECTORY, html=True), name="web-chat")
    return app
