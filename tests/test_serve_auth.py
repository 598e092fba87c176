"""API keys, rate limits, and the field paths that 400 errors name."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from charter.network import is_loopback
from charter.serve.auth import KeyChecker, RateLimiter, collect_keys, read_key_file
from charter.serve.errors import ApiError, field_path, from_validation_error
from charter.serve.schemas import MessagesRequest


def test_keys_come_from_the_command_line_the_environment_and_a_file(tmp_path):
    key_file = tmp_path / "keys.txt"
    key_file.write_text("# team keys\nfile-key-1\n\n  file-key-2  \n")
    keys = collect_keys(["cli-key"], key_file, environ={"CHARTER_API_KEYS": "env-1, env-2,"})
    assert keys == ["cli-key", "env-1", "env-2", "file-key-1", "file-key-2"]


def test_a_missing_or_empty_key_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt: API key file not found"):
        read_key_file(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="empty.txt: no API keys in the file"):
        read_key_file(tmp_path / "empty.txt")


def test_keys_are_accepted_from_either_header_and_refused_otherwise():
    checker = KeyChecker(["k-1", "k-2"])
    assert checker.identify({"x-api-key": "k-2"}, "127.0.0.1") == "k-2"
    assert checker.identify({"authorization": "Bearer k-1"}, "127.0.0.1") == "k-1"
    for headers, message in [
        ({}, "missing API key"),
        ({"x-api-key": "k-3"}, "invalid API key"),
        ({"authorization": "Basic k-1"}, "missing API key"),
    ]:
        with pytest.raises(ApiError, match=message) as raised:
            checker.identify(headers, "127.0.0.1")
        assert raised.value.status == 401 and raised.value.error_type == "authentication_error"


def test_without_keys_clients_are_told_apart_by_address():
    assert KeyChecker([]).identify({}, "127.0.0.5") == "127.0.0.5"


def test_only_loopback_hosts_are_loopback():
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.0.0.1")] == [
        True,
        True,
        True,
        False,
        False,
    ]


def test_rate_limit_is_a_token_bucket_per_identity():
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])  # 2 per minute: one more every 30 s
    limiter.check("a")
    limiter.check("a")
    with pytest.raises(ApiError, match="rate limit of 2 requests per minute") as raised:
        limiter.check("a")
    assert raised.value.status == 429 and raised.value.headers() == {"retry-after": "30"}
    limiter.check("b")  # another key has its own bucket
    now[0] = 29.0
    with pytest.raises(ApiError):
        limiter.check("a")
    now[0] = 30.0
    limiter.check("a")


def test_no_rate_limit_when_none_is_set():
    limiter = RateLimiter(None)
    for _ in range(1000):
        limiter.check("a")


def test_field_paths_skip_the_labels_pydantic_adds_for_unions():
    body = {
        "model": "m",
        "max_tokens": 5,
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "input": {}}]},
        ],
    }
    with pytest.raises(ValidationError) as raised:
        MessagesRequest.model_validate(body)
    error = from_validation_error(raised.value, body)
    assert error.status == 400 and error.param == "messages[1].content[0].name"
    assert error.message == "messages[1].content[0].name: Field required"
    assert field_path(("messages", 0, "content", "str"), body) == "messages[0].content"
