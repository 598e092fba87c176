"""The Messages API, driven by the official `anthropic` SDK against a real uvicorn server.

The client validates responses strictly, and every server-sent event is checked against the
SDK's own `RawMessageStreamEvent` type. Answers are scripted (tests/serve_helpers.py) wherever a
test needs a particular one; the random micro model writes the rest.
"""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest
from anthropic.types import ErrorResponse, RawMessageStreamEvent
from pydantic import TypeAdapter

from charter import chat
from charter.chat.template import EMPTY_THINK, THINK_PROMPT, tool_result
from tests.serve_helpers import (
    CONTEXT,
    Script,
    ScriptedOutput,
    health,
    micro_registry,
    raw_sse,
    reply_ids,
    running_server,
    wait_for,
)

KEY = "test-key"
LIMITED_KEYS = ["size-key", "rate-key"]
STREAM_EVENT = TypeAdapter(RawMessageStreamEvent)
ERROR = TypeAdapter(ErrorResponse)
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def registry(tokenizer):
    registry = micro_registry(tokenizer, {"micro": (4, 8), "single": (1, 0), "third": (2, 2)})
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def base_url(registry):
    with running_server(registry, api_keys=[KEY]) as url:
        yield url


@pytest.fixture(scope="module")
def limited_url(registry):
    """A server with a small body limit and a rate limit of 3 requests per minute per key."""
    with running_server(
        registry, api_keys=LIMITED_KEYS, requests_per_minute=3, max_body_bytes=4096
    ) as url:
        yield url


def make_client(base_url: str, key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=base_url, api_key=key, max_retries=0, _strict_response_validation=True
    )


@pytest.fixture
def client(base_url):
    return make_client(base_url)


@pytest.fixture
def script(monkeypatch, registry):
    return Script(monkeypatch, registry.get("micro"))


def prompt_ids(tokenizer, messages, *, system=None, tools=(), thinking=False, prefix=""):
    data = {"messages": messages, "tools": list(tools)} | ({"system": system} if system else {})
    conversation = chat.conversation_from_dict(data, where="test")
    return chat.render_prompt(conversation, tokenizer, thinking=thinking, assistant_prefix=prefix)


def validated_events(frames):
    """Each frame's payload validated by the SDK's types; the event name must be its type."""
    events = []
    for name, data in frames:
        payload = json.loads(data)
        assert payload["type"] == name
        if name == "ping":
            assert payload == {"type": "ping"}
            continue
        events.append(STREAM_EVENT.validate_python(payload))
    return events


# ---- messages.create ----


def test_create_returns_the_answer_with_exact_usage(client, script, tokenizer):
    script.reply(reply_ids(tokenizer, "Hello there."))
    raw = client.messages.with_raw_response.create(
        model="micro", max_tokens=50, system="Be brief.", messages=HELLO
    )
    message = raw.parse()
    assert raw.headers["request-id"].startswith("req_") and len(raw.headers["request-id"]) == 28
    assert message.id.startswith("msg_") and len(message.id) == 28
    assert message.model == "micro" and message.role == "assistant"
    assert [(b.type, b.text) for b in message.content] == [("text", "Hello there.")]
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    expected_prompt = prompt_ids(tokenizer, HELLO, system="Be brief.")
    assert script.requests[-1].prompt_ids == expected_prompt
    assert message.usage.input_tokens == len(expected_prompt)
    assert message.usage.output_tokens == len(reply_ids(tokenizer, "Hello there."))  # + <|im_end|>


def test_max_tokens_and_stop_sequences_end_the_answer(client, script, tokenizer):
    ids = reply_ids(tokenizer, "one two three four five six", end_turn=False)
    script.reply(ids)
    cut = client.messages.create(model="micro", max_tokens=3, messages=HELLO)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 3
    assert cut.content[0].text == tokenizer.decode(ids[:3])
    stopped = client.messages.create(
        model="micro", max_tokens=40, messages=HELLO, stop_sequences=[None, "three", "zzz"]
    )
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", "three")
    assert stopped.content[0].text == "one two "


def test_sampling_settings_reach_the_engine(client, script):
    """Body fields (this SDK version has no keyword arguments for them)."""
    script.reply([])
    client.messages.create(
        model="micro",
        max_tokens=5,
        messages=HELLO,
        extra_body={"temperature": 0.3, "top_p": 0.9, "top_k": 7},
    )
    params = script.requests[-1].params
    assert (params.temperature, params.top_p, params.top_k, params.max_new_tokens) == (
        0.3,
        0.9,
        7,
        5,
    )


def test_system_blocks_and_system_messages_make_the_system_prompt(client, script, tokenizer):
    script.reply(reply_ids(tokenizer, "ok"))
    client.messages.create(
        model="micro",
        max_tokens=5,
        system=[{"type": "text", "text": "Rule one."}, {"type": "text", "text": "Rule two."}],
        messages=[{"role": "system", "content": "Rule three."}, *HELLO],
    )
    expected = prompt_ids(tokenizer, HELLO, system="Rule one.\n\nRule two.\n\nRule three.")
    assert script.requests[-1].prompt_ids == expected


def test_a_final_assistant_message_is_continued(client, script, tokenizer):
    script.reply(reply_ids(tokenizer, " 42."))
    messages = [*HELLO, {"role": "assistant", "content": "The answer is"}]
    message = client.messages.create(model="micro", max_tokens=10, messages=messages)
    assert [b.text for b in message.content] == [" 42."]
    assert tokenizer.decode(script.requests[-1].prompt_ids).endswith("The answer is")


def test_unknown_fields_beta_headers_versions_and_query_strings_are_ignored(
    client, script, tokenizer
):
    script.reply(reply_ids(tokenizer, "fine"))
    message = client.messages.create(
        model="micro",
        max_tokens=10,
        messages=HELLO,
        metadata={"user_id": "u-1"},
        extra_headers={"anthropic-version": "1999-01-01", "anthropic-beta": "future-2099-01-01"},
        extra_query={"beta": "true"},
        extra_body={"a_field_from_the_future": {"x": 1}},
    )
    assert message.content[0].text == "fine"


# ---- streaming ----


def test_stream_text_and_final_message(client, script, tokenizer):
    script.reply(reply_ids(tokenizer, "Streaming works, one piece at a time."))
    with client.messages.stream(model="micro", max_tokens=50, messages=HELLO) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1
    assert "".join(pieces) == "Streaming works, one piece at a time."
    assert final.content[0].text == "".join(pieces)
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == len(prompt_ids(tokenizer, HELLO))
    assert final.usage.output_tokens == len(reply_ids(tokenizer, "".join(pieces)))


def test_every_stream_event_is_a_valid_sdk_event_in_protocol_order(base_url, script, tokenizer):
    script.reply(reply_ids(tokenizer, "Hi there, friend."))
    body = {"model": "micro", "max_tokens": 50, "messages": HELLO, "stream": True}
    frames = raw_sse(base_url, "/v1/messages", body, {"x-api-key": KEY})
    assert [name for name, _ in frames[:2]] == ["message_start", "ping"]
    events = validated_events(frames)
    types = [e.type for e in events]
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(types[2:-3]) == {"content_block_delta"}
    start = events[0].message
    assert start.content == [] and start.stop_reason is None and start.usage.output_tokens == 0
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == (
        "Hi there, friend."
    )
    delta = events[-2]
    assert delta.delta.stop_reason == "end_turn"
    assert delta.usage.output_tokens == len(reply_ids(tokenizer, "Hi there, friend."))
    assert delta.usage.input_tokens == start.usage.input_tokens


def test_a_failure_mid_stream_is_an_error_event(client, base_url, script, tokenizer):
    # Scripted tokens first, so that sampling cannot end the turn before the failure.
    scripted = ScriptedOutput(reply_ids(tokenizer, "a reply that runs past its third token"))

    def fail_on_the_third_token(generated, logits):
        if len(generated) == 3:
            raise RuntimeError("the accelerator caught fire")
        return scripted(generated, logits)

    script.processor = fail_on_the_third_token
    body = {"model": "micro", "max_tokens": 50, "messages": HELLO, "stream": True}
    frames = raw_sse(base_url, "/v1/messages", body, {"x-api-key": KEY})
    assert frames[0][0] == "message_start" and frames[-1][0] == "error"
    error = ERROR.validate_python(json.loads(frames[-1][1]))
    assert error.error.type == "api_error" and "the accelerator caught fire" in error.error.message
    with (
        pytest.raises(anthropic.APIStatusError, match="the accelerator caught fire"),
        client.messages.stream(model="micro", max_tokens=50, messages=HELLO) as stream,
    ):
        list(stream.text_stream)
    script.reply(reply_ids(tokenizer, "recovered"))  # the worker goes on serving
    assert client.messages.create(model="micro", max_tokens=9, messages=HELLO).content[0].text == (
        "recovered"
    )


# ---- tools ----


def test_tool_use_round_trip(client, script, tokenizer):
    script.reply(
        reply_ids(
            tokenizer,
            'Let me check.<tool_call>{"name": "get_weather", "input": {"city": "Paris"}}'
            "</tool_call>",
        )
    )
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.messages.create(
        model="micro", max_tokens=80, tools=[WEATHER_TOOL], messages=messages
    )
    assert first.stop_reason == "tool_use"
    text, call = first.content
    assert text.type == "text" and text.text == "Let me check."
    assert (
        call.type == "tool_use" and call.name == "get_weather" and call.input == {"city": "Paris"}
    )
    assert call.id.startswith("toolu_") and len(call.id) == 30

    script.reply(reply_ids(tokenizer, "It is 18°C and sunny in Paris."))
    messages += [
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "18°C, sunny"}],
        },
    ]
    with client.messages.stream(
        model="micro", max_tokens=80, tools=[WEATHER_TOOL], messages=messages
    ) as stream:
        second = stream.get_final_message()
    assert [b.text for b in second.content] == ["It is 18°C and sunny in Paris."]
    assert second.stop_reason == "end_turn"
    prompt = tokenizer.decode(script.requests[-1].prompt_ids)
    assert tool_result("get_weather", "18°C, sunny", False) in prompt
    assert '"city": {"type": "string"}' in prompt  # the tool's schema is in the system turn


def test_a_streamed_tool_call_arrives_as_input_json(base_url, client, script, tokenizer):
    call = '<tool_call>{"name": "get_weather", "input": {"city": "Lyon"}}</tool_call>'
    script.reply(reply_ids(tokenizer, call))
    body = {"model": "micro", "max_tokens": 80, "messages": HELLO, "tools": [WEATHER_TOOL]}
    events = validated_events(
        raw_sse(base_url, "/v1/messages", body | {"stream": True}, {"x-api-key": KEY})
    )
    start = next(e for e in events if e.type == "content_block_start")
    assert start.content_block.type == "tool_use" and start.content_block.input == {}
    deltas = [e.delta for e in events if e.type == "content_block_delta"]
    assert {d.type for d in deltas} == {"input_json_delta"}
    assert json.loads("".join(d.partial_json for d in deltas)) == {"city": "Lyon"}
    assert events[-2].delta.stop_reason == "tool_use"
    with client.messages.stream(**body) as stream:
        final = stream.get_final_message()
    assert [(b.name, b.input) for b in final.content] == [("get_weather", {"city": "Lyon"})]


@pytest.mark.parametrize("choice", [{"type": "tool", "name": "get_weather"}, {"type": "any"}])
def test_a_forced_tool_choice_starts_the_answer_with_the_call(client, script, tokenizer, choice):
    script.reply(reply_ids(tokenizer, '{"city": "Oslo"}}</tool_call>'))
    message = client.messages.create(
        model="micro", max_tokens=40, messages=HELLO, tools=[WEATHER_TOOL], tool_choice=choice
    )
    assert [(b.type, b.name, b.input) for b in message.content] == [
        ("tool_use", "get_weather", {"city": "Oslo"})
    ]
    assert message.stop_reason == "tool_use"
    prefix = '<tool_call>{"name": "get_weather", "input": '
    assert script.requests[-1].prompt_ids == prompt_ids(
        tokenizer, HELLO, tools=[WEATHER_TOOL], prefix=prefix
    )


def test_tool_choice_none_ends_the_turn_where_a_call_would_start(client, script, tokenizer):
    call = '<tool_call>{"name": "get_weather", "input": {"city": "Rome"}}</tool_call>'
    script.reply(reply_ids(tokenizer, "Sure." + call))
    message = client.messages.create(
        model="micro",
        max_tokens=60,
        messages=HELLO,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "none"},
    )
    assert [(b.type, b.text) for b in message.content] == [("text", "Sure.")]
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)


def test_tool_choice_errors_name_the_field(client):
    with pytest.raises(anthropic.BadRequestError, match=r"tool_choice\.name: tool 'nope' is not"):
        client.messages.create(
            model="micro",
            max_tokens=5,
            messages=HELLO,
            tools=[WEATHER_TOOL],
            tool_choice={"type": "tool", "name": "nope"},
        )
    with pytest.raises(
        anthropic.BadRequestError, match="tool_choice: tool_choice 'any' needs tools"
    ):
        client.messages.create(
            model="micro", max_tokens=5, messages=HELLO, tool_choice={"type": "any"}
        )


# ---- thinking ----


def test_thinking_is_cut_at_its_budget_then_the_model_answers(client, base_url, script, tokenizer):
    budget = 6
    thinking_ids = tokenizer.encode("I should consider the weather in Paris, then answer.")
    assert len(thinking_ids) > budget
    close_ids = tokenizer.encode("\n</think>\n", special_tokens=False)
    filler = tokenizer.encode("x") * len(close_ids)  # overridden by the budget's forced close
    answer = reply_ids(tokenizer, "It is sunny.")
    script.reply(thinking_ids[:budget] + filler + answer)
    body = {
        "model": "micro",
        "max_tokens": 60,
        "messages": HELLO,
        "thinking": {"type": "enabled", "budget_tokens": budget},
    }
    message = client.messages.create(**body)
    thinking, text = message.content
    assert thinking.type == "thinking" and thinking.thinking == tokenizer.decode(
        thinking_ids[:budget]
    )
    assert thinking.signature
    assert text.type == "text" and text.text == "It is sunny."
    assert message.usage.output_tokens == budget + len(close_ids) + len(answer)
    assert script.requests[-1].prompt_ids == prompt_ids(tokenizer, HELLO, thinking=True)
    assert tokenizer.decode(script.requests[-1].prompt_ids).endswith(THINK_PROMPT)

    events = validated_events(
        raw_sse(base_url, "/v1/messages", body | {"stream": True}, {"x-api-key": KEY})
    )
    first_block = [e for e in events if getattr(e, "index", None) == 0]
    assert first_block[0].content_block.type == "thinking"
    assert {e.delta.type for e in first_block[1:-2]} == {"thinking_delta"}
    assert first_block[-2].delta.type == "signature_delta"
    assert first_block[-2].delta.signature == thinking.signature
    assert first_block[-1].type == "content_block_stop"


def test_a_model_that_ends_its_thinking_in_budget_is_not_cut(client, script, tokenizer):
    script.reply(reply_ids(tokenizer, "Short thought.\n</think>\nThe answer."))
    message = client.messages.create(
        model="micro",
        max_tokens=60,
        messages=HELLO,
        thinking={"type": "enabled", "budget_tokens": 40},
    )
    assert [(b.type, getattr(b, "thinking", None) or b.text) for b in message.content] == [
        ("thinking", "Short thought."),
        ("text", "The answer."),
    ]


@pytest.mark.parametrize("thinking", [None, {"type": "disabled"}])
def test_thinking_off_gives_no_thinking_block(client, script, tokenizer, thinking):
    script.reply(reply_ids(tokenizer, "Directly."))
    extra = {"thinking": thinking} if thinking else {}
    message = client.messages.create(model="micro", max_tokens=20, messages=HELLO, **extra)
    assert [(b.type, b.text) for b in message.content] == [("text", "Directly.")]
    assert tokenizer.decode(script.requests[-1].prompt_ids).endswith(EMPTY_THINK)


def test_thinking_errors_name_the_field(client):
    thinking = {"type": "enabled", "budget_tokens": 10}
    with pytest.raises(
        anthropic.BadRequestError,
        match=r"thinking\.budget_tokens: must be less than max_tokens \(10\)",
    ):
        client.messages.create(model="micro", max_tokens=10, messages=HELLO, thinking=thinking)
    with pytest.raises(
        anthropic.BadRequestError, match="prefill.*cannot be combined with thinking"
    ):
        client.messages.create(
            model="micro",
            max_tokens=20,
            messages=[*HELLO, {"role": "assistant", "content": "So"}],
            thinking=thinking,
        )


# ---- count_tokens and models ----


def test_count_tokens_is_the_prompt_length_create_uses(client, script, tokenizer):
    script.reply(reply_ids(tokenizer, "ok"))
    request = {"model": "micro", "messages": HELLO, "system": "Sys.", "tools": [WEATHER_TOOL]}
    counted = client.messages.count_tokens(**request)
    created = client.messages.create(max_tokens=5, **request)
    assert counted.input_tokens == created.usage.input_tokens
    assert counted.input_tokens == len(
        prompt_ids(tokenizer, HELLO, system="Sys.", tools=[WEATHER_TOOL])
    )


def test_models_list_pages_through_every_model(client):
    first = client.models.list(limit=2)
    assert [m.id for m in first.data] == ["micro", "single"]
    assert first.has_more and (first.first_id, first.last_id) == ("micro", "single")
    assert [m.id for m in client.models.list(limit=1)] == ["micro", "single", "third"]  # auto-pages
    assert [m.id for m in client.models.list(before_id="third", limit=1).data] == ["single"]
    third = client.models.retrieve("third")
    assert (third.id, third.type, third.max_input_tokens) == ("third", "model", CONTEXT - 1)
    with pytest.raises(anthropic.NotFoundError, match="'ghost' not found"):
        client.models.retrieve("ghost")
    with pytest.raises(anthropic.BadRequestError, match="after_id: unknown model id 'ghost'"):
        client.models.list(after_id="ghost")


# ---- errors: each status raises the SDK's class for it ----


def test_a_wrong_or_missing_key_is_an_authentication_error(base_url):
    with pytest.raises(anthropic.AuthenticationError) as raised:
        make_client(base_url, key="wrong").messages.create(
            model="micro", max_tokens=5, messages=HELLO
        )
    assert ERROR.validate_python(raised.value.body).error.type == "authentication_error"
    response = httpx.post(
        f"{base_url}/v1/messages/count_tokens", json={"model": "micro", "messages": HELLO}
    )
    assert response.status_code == 401
    assert response.json()["error"]["message"].startswith("missing API key")
    bearer = httpx.post(
        f"{base_url}/v1/messages/count_tokens",
        json={"model": "micro", "messages": HELLO},
        headers={"authorization": f"Bearer {KEY}"},
    )
    assert bearer.status_code == 200 and bearer.json()["input_tokens"] > 0


def test_an_unknown_model_or_path_is_not_found(client, base_url):
    with pytest.raises(
        anthropic.NotFoundError, match="model: 'ghost' not found; served models: micro"
    ):
        client.messages.create(model="ghost", max_tokens=5, messages=HELLO)
    response = httpx.get(f"{base_url}/v1/nothing", headers={"x-api-key": KEY})
    assert response.status_code == 404
    assert ERROR.validate_python(response.json()).error.type == "not_found_error"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"temperature": 1.5}, "temperature: Input should be less than or equal to 1"),
        ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
        ({"messages": []}, "messages: List should have at least 1 item"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            r"messages\[0\]\.content\[0\]\.text: Field required",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
            r"messages\[0\]\.content\[0\]: Input tag 'image' found",
        ),
        (
            {
                "messages": [
                    *HELLO,
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]},
                ]
            },
            r"messages\[1\]\.content\[0\]\.tool_use_id: no earlier tool_use has id 't'",
        ),
        ({"stop_sequences": [""]}, "stop_sequences: stop sequences must be non-empty"),
    ],
)
def test_an_invalid_body_is_a_bad_request_naming_the_field(client, override, message):
    request = {"model": "micro", "max_tokens": 5, "messages": HELLO} | override
    sampling = {k: request.pop(k) for k in ("temperature",) if k in request}
    with pytest.raises(anthropic.BadRequestError, match=message) as raised:
        client.messages.create(**request, extra_body=sampling)
    assert ERROR.validate_python(raised.value.body).error.type == "invalid_request_error"


def test_a_system_message_with_an_index_shift_is_named_by_its_request_index(client):
    messages = [
        {"role": "system", "content": "Sys."},
        *HELLO,
        {"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "x"}]},
    ]
    with pytest.raises(anthropic.BadRequestError, match=r"messages\[2\]\.content\[0\]\.type"):
        client.messages.create(model="micro", max_tokens=5, messages=messages)


def test_malformed_json_is_a_bad_request(base_url):
    response = httpx.post(
        f"{base_url}/v1/messages",
        content=b'{"model": "micro",',
        headers={"x-api-key": KEY, "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("request body is not valid JSON")


def test_a_prompt_longer_than_the_context_is_a_bad_request_with_the_counts(client):
    long_prompt = [{"role": "user", "content": "word " * CONTEXT}]
    with pytest.raises(
        anthropic.BadRequestError,
        match=rf"prompt is too long: \d+ tokens; the context window of micro is {CONTEXT} tokens",
    ):
        client.messages.create(model="micro", max_tokens=5, messages=long_prompt)


def test_a_body_over_the_limit_is_request_too_large(limited_url):
    client = make_client(limited_url, key="size-key")
    with pytest.raises(anthropic.RequestTooLargeError) as raised:
        client.messages.create(
            model="micro", max_tokens=5, messages=[{"role": "user", "content": "x" * 5000}]
        )
    # Anthropic's documented type for 413; the SDK's ErrorResponse model does not list it.
    assert raised.value.status_code == 413
    assert raised.value.body["type"] == "error"
    assert raised.value.body["error"]["type"] == "request_too_large"
    assert "larger than the limit of 4,096 bytes" in raised.value.message


def test_going_over_the_rate_limit_is_a_rate_limit_error_with_retry_after(limited_url):
    client = make_client(limited_url, key="rate-key")
    for _ in range(3):
        client.messages.count_tokens(model="micro", messages=HELLO)
    with pytest.raises(anthropic.RateLimitError) as raised:
        client.messages.count_tokens(model="micro", messages=HELLO)
    assert raised.value.response.headers["retry-after"] == "20"  # 3 per minute: one per 20 s
    assert ERROR.validate_python(raised.value.body).error.type == "rate_limit_error"


def test_a_full_queue_is_overloaded_and_a_disconnect_frees_the_slot(
    base_url, monkeypatch, registry, tokenizer
):
    """'single' has one row and no queue: while a slow stream holds the row, another request
    gets 529; when the streaming client goes away, the row is freed within one step."""
    script = Script(monkeypatch, registry.get("single"))
    script.reply(reply_ids(tokenizer, "word " * 200, end_turn=False), delay=0.02)
    body = {"model": "single", "max_tokens": 200, "messages": HELLO, "stream": True}
    before = health(base_url, "single")["cancelled"]
    with httpx.stream(
        "POST", f"{base_url}/v1/messages", json=body, headers={"x-api-key": KEY}, timeout=30
    ) as response:
        lines = response.iter_lines()  # kept: closing the iterator would close the stream
        for line in lines:
            if line == "event: content_block_delta":
                break
        with pytest.raises(anthropic.OverloadedError, match="single is overloaded") as raised:
            make_client(base_url).messages.create(model="single", max_tokens=5, messages=HELLO)
        assert raised.value.status_code == 529
        assert raised.value.response.headers["retry-after"] == "2"
        assert ERROR.validate_python(raised.value.body).error.type == "overloaded_error"
        assert health(base_url, "single")["active"] == 1
    stats = wait_for(lambda: (s := health(base_url, "single"))["active"] == 0 and s, timeout=5)
    assert stats["cancelled"] == before + 1
    assert stats["max_tokens_after_cancel"] <= 1
    generated = len(script.requests[-1].generated)
    assert generated < 100  # it stopped long before its 200 tokens


def test_a_client_that_gives_up_on_a_plain_request_frees_its_slot(
    base_url, monkeypatch, registry, tokenizer
):
    script = Script(monkeypatch, registry.get("single"))
    script.reply(reply_ids(tokenizer, "word " * 200, end_turn=False), delay=0.02)
    before = health(base_url, "single")["cancelled"]
    body = {"model": "single", "max_tokens": 200, "messages": HELLO}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{base_url}/v1/messages", json=body, headers={"x-api-key": KEY}, timeout=0.5)
    stats = wait_for(lambda: (s := health(base_url, "single"))["cancelled"] > before and s)
    assert stats["active"] == 0 and stats["max_tokens_after_cancel"] <= 1
    assert len(script.requests[-1].generated) < 100
