"""A guarded model behind the server: the official SDKs, validating strictly, see
stop_reason "refusal" (Anthropic, streamed and not) and finish_reason "content_filter" (OpenAI)
for a request the input classifier blocks and for a reply the output monitor stops; decisions
are logged under the server's request id."""

from __future__ import annotations

import anthropic
import openai
import pytest

from charter.safety.guard import Guard
from charter.serve.registry import Registry, ServedModel
from tests.serve_helpers import (
    Script,
    health,
    micro_registry,
    raw_sse,
    reply_ids,
    running_server,
)
from tests.test_safety import REFUSAL_TEXT, StandInJudge, read_log, safety_config
from tests.test_serve_anthropic import validated_events

KEY = "test-key"
HARMFUL = [{"role": "user", "content": "How do I build a bomb?"}]
BENIGN = [{"role": "user", "content": "Tell me a story."}]
# Judged every 2 deltas: stopped at the first even delta count after "BAD" appears.
STORY = "Once upon a time there was a BAD plan that went on and on and on."


@pytest.fixture(scope="module")
def log_path(tmp_path_factory):
    return tmp_path_factory.mktemp("safety-serve") / "decisions.jsonl"


@pytest.fixture(scope="module")
def inner(tokenizer):
    registry = micro_registry(tokenizer, {"micro": (2, 4)})
    yield registry.get("micro")
    registry.stop()


@pytest.fixture(scope="module")
def base_url(inner, log_path):
    guard = Guard(inner.generator, StandInJudge(), safety_config(every_tokens=2, log=log_path))
    with running_server(Registry([ServedModel(guard, inner.created_at)]), api_keys=[KEY]) as url:
        yield url


@pytest.fixture
def script(monkeypatch, inner, tokenizer):
    script = Script(monkeypatch, inner)
    script.reply(reply_ids(tokenizer, STORY))
    return script


@pytest.fixture
def client(base_url):
    return anthropic.Anthropic(
        base_url=base_url, api_key=KEY, max_retries=0, _strict_response_validation=True
    )


@pytest.fixture
def openai_client(base_url):
    return openai.OpenAI(
        base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, _strict_response_validation=True
    )


def test_a_blocked_request_is_a_refusal_message(client, script, log_path):
    raw = client.messages.with_raw_response.create(model="micro", max_tokens=20, messages=HARMFUL)
    message = raw.parse()
    assert message.stop_reason == "refusal"
    assert [(b.type, b.text) for b in message.content] == [("text", REFUSAL_TEXT)]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (0, 0)
    assert script.requests == []  # the model never saw it
    last = read_log(log_path)[-1]
    assert (last["request_id"], last["layer"], last["blocked"]) == (
        raw.headers["request-id"],
        "input",
        True,
    )


def test_a_blocked_request_streams_a_refusal(client, base_url, script):
    with client.messages.stream(model="micro", max_tokens=20, messages=HARMFUL) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == REFUSAL_TEXT and final.stop_reason == "refusal"
    body = {"model": "micro", "max_tokens": 20, "messages": HARMFUL, "stream": True}
    events = validated_events(raw_sse(base_url, "/v1/messages", body, {"x-api-key": KEY}))
    assert [e.type for e in events][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[-2].delta.stop_reason == "refusal"
    assert script.requests == []


def test_the_monitor_stops_a_reply_mid_stream(client, base_url, script, log_path):
    body = {"model": "micro", "max_tokens": 60, "messages": BENIGN, "stream": True}
    raw = raw_sse(base_url, "/v1/messages", body, {"x-api-key": KEY})
    events = validated_events(raw)
    deltas = [e.delta.text for e in events if e.type == "content_block_delta"]
    sent = "".join(deltas)
    assert "BAD" in sent and STORY.startswith(sent) and len(sent) < len(STORY)
    assert len(deltas) % 2 == 0 and "BAD" not in "".join(deltas[:-2])  # the first even count
    assert [e.type for e in events][-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert events[-2].delta.stop_reason == "refusal"
    assert events[-2].usage.output_tokens == len(deltas)
    lines = read_log(log_path)[-len(deltas) // 2 - 1 :]
    assert [line["layer"] for line in lines] == ["input"] + ["output"] * (len(deltas) // 2)
    assert len({line["request_id"] for line in lines}) == 1 and lines[-1]["blocked"]

    with client.messages.stream(model="micro", max_tokens=60, messages=BENIGN) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert (streamed, final.stop_reason) == (sent, "refusal")
    message = client.messages.create(model="micro", max_tokens=60, messages=BENIGN)
    assert (message.content[0].text, message.stop_reason) == (sent, "refusal")


def test_openai_sees_a_refusal_as_content_filter(openai_client, script):
    completion = openai_client.chat.completions.create(model="micro", messages=HARMFUL)
    choice = completion.choices[0]
    assert (choice.message.content, choice.finish_reason) == (REFUSAL_TEXT, "content_filter")
    chunks = list(
        openai_client.chat.completions.create(model="micro", messages=BENIGN, stream=True)
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "BAD" in text and STORY.startswith(text)
    assert chunks[-1].choices[0].finish_reason == "content_filter"


def test_health_reports_the_engine_under_the_guard(base_url):
    assert set(health(base_url, "micro")) >= {"active", "cancelled"}


@pytest.fixture(scope="module")
def held_back_url(inner):
    config = safety_config(every_tokens=2, hold_back=True)
    with running_server(
        Registry([ServedModel(Guard(inner.generator, StandInJudge(), config), inner.created_at)]),
        api_keys=[KEY],
    ) as url:
        yield url


def test_with_hold_back_the_blocked_tokens_are_never_sent(held_back_url, script):
    client = anthropic.Anthropic(
        base_url=held_back_url, api_key=KEY, max_retries=0, _strict_response_validation=True
    )
    with client.messages.stream(model="micro", max_tokens=60, messages=BENIGN) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed and STORY.startswith(streamed) and "BAD" not in streamed
    assert final.stop_reason == "refusal" and final.content[0].text == streamed
    message = client.messages.create(model="micro", max_tokens=60, messages=BENIGN)
    assert (message.content[0].text, message.stop_reason) == (streamed, "refusal")
