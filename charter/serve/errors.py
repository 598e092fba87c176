"""API errors: one exception type, rendered in the shape each API's clients parse.

Anthropic:  {"type": "error", "error": {"type": "invalid_request_error", "message": "..."},
             "request_id": "req_..."}
OpenAI:     {"error": {"message": "...", "type": "...", "param": ..., "code": ...}}

The official SDKs pick their exception class from the HTTP status alone (400 BadRequestError,
401 AuthenticationError, …, 529 OverloadedError), and retry 429 and 529 after `retry-after`.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError

# The `error.type` Anthropic uses for each status.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        retry_after: float | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.param = param

    @property
    def error_type(self) -> str:
        return ERROR_TYPES.get(self.status, "api_error")

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"retry-after": str(max(1, math.ceil(self.retry_after)))}

    def anthropic_body(self, request_id: str) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {"type": self.error_type, "message": self.message},
            "request_id": request_id,
        }

    def openai_body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": None,
            }
        }


def invalid_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, f"{param}: {message}" if param else message, param=param)


def field_path(location: tuple[str | int, ...], data: Any) -> str:
    """`messages[0].content[1].text` for a pydantic error location, walking the request body
    so that the union and tag labels pydantic inserts (`str`, `list[...]`, `text`) are skipped."""
    path = ""
    for i, step in enumerate(location):
        if isinstance(data, list) and isinstance(step, int) and step < len(data):
            path, data = f"{path}[{step}]", data[step]
        elif isinstance(data, dict) and (step in data or i == len(location) - 1):
            path = f"{path}.{step}" if path else str(step)  # the last step may be a missing field
            data = data.get(step)
        # anything else is a label for a union member, not a place in the body
    return path


def from_validation_error(error: ValidationError, body: Any) -> ApiError:
    """A 400 naming the most specific field that failed (the deepest path wins: for a union,
    the member the client evidently meant)."""
    details = error.errors(include_url=False)
    paths = [field_path(d["loc"], body) for d in details]
    best = max(range(len(details)), key=lambda i: (paths[i].count(".") + paths[i].count("["), -i))
    return invalid_request(details[best]["msg"], paths[best] or "body")
