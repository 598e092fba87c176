"""OpenAI chat completions, driven by the official `openai` SDK against a real uvicorn server."""

from __future__ import annotations

import json

import openai
import pytest

from charter import chat
from charter.chat.template import tool_result
from tests.serve_helpers import Script, micro_registry, raw_sse, reply_ids, running_server

KEY = "openai-test-key"
HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def registry(tokenizer):
    registry = micro_registry(tokenizer, {"micro": (4, 8)})
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def base_url(registry):
    with running_server(registry, api_keys=[KEY]) as url:
        yield url


@pytest.fixture
def client(base_url):
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0)


@pytest.fixture
def script(monkeypatch, registry):
    return Script(monkeypatch, registry.get("micro"))


def test_create_returns_the_answer_with_exact_usage(client, script, tokenizer):
    script.reply(reply_ids(tokenizer, "Hi!"))
    completion = client.chat.completions.create(model="micro", messages=HELLO, max_tokens=20)
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    (choice,) = completion.choices
    assert (choice.message.role, choice.message.content) == ("assistant", "Hi!")
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    conversation = chat.Conversation(
        [chat.Message("user", [chat.TextBlock("Hello")])], system="Be brief."
    )
    expected_prompt = chat.render_prompt(conversation, tokenizer, thinking=False)
    assert script.requests[-1].prompt_ids == expected_prompt
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (len(expected_prompt), 4)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_length_and_stop_finish_reasons(client, script, tokenizer):
    ids = reply_ids(tokenizer, "alpha beta gamma delta", end_turn=False)
    script.reply(ids)
    cut = client.chat.completions.create(model="micro", messages=HELLO, max_completion_tokens=2)
    assert cut.choices[0].finish_reason == "length"
    assert cut.choices[0].message.content == tokenizer.decode(ids[:2])
    stopped = client.chat.completions.create(model="micro", messages=HELLO, stop="gamma")
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == "alpha beta "


@pytest.mark.parametrize("include_usage", [True, False])
def test_stream_deltas_finish_and_usage(client, base_url, script, tokenizer, include_usage):
    script.reply(reply_ids(tokenizer, "Streamed, piece by piece."))
    options = {"include_usage": True} if include_usage else None
    chunks = list(
        client.chat.completions.create(
            model="micro", messages=HELLO, stream=True, stream_options=options
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Streamed, piece by piece."
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    if include_usage:
        assert chunks[-1].choices == []
        assert chunks[-1].usage.completion_tokens == len(reply_ids(tokenizer, text))
        assert all(c.usage is None for c in chunks[:-1])
    else:
        assert all(c.choices and c.usage is None for c in chunks)
    body = {"model": "micro", "messages": HELLO, "stream": True, "stream_options": options}
    frames = raw_sse(base_url, "/v1/chat/completions", body, {"authorization": f"Bearer {KEY}"})
    assert frames[-1] == (None, "[DONE]")
    assert all(json.loads(data)["object"] == "chat.completion.chunk" for _, data in frames[:-1])


def test_tool_calls_round_trip(client, script, tokenizer):
    script.reply(
        reply_ids(
            tokenizer, '<tool_call>{"name": "get_weather", "input": {"city": "Nice"}}</tool_call>'
        )
    )
    messages = [{"role": "user", "content": "Weather in Nice?"}]
    first = client.chat.completions.create(model="micro", messages=messages, tools=[WEATHER])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Nice"}

    script.reply(reply_ids(tokenizer, "Sunny in Nice."))
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "22°C, sunny"},
    ]
    second = client.chat.completions.create(model="micro", messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content == "Sunny in Nice."
    prompt = tokenizer.decode(script.requests[-1].prompt_ids)
    assert tool_result("get_weather", "22°C, sunny", False) in prompt


def test_streamed_tool_calls_accumulate(client, script, tokenizer):
    # tool_choice "required" with one tool: the server has written the call's opening.
    script.reply(reply_ids(tokenizer, '{"city": "Bern"}}</tool_call>'))
    chunks = list(
        client.chat.completions.create(
            model="micro", messages=HELLO, tools=[WEATHER], tool_choice="required", stream=True
        )
    )
    calls = [tc for c in chunks for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].id.startswith("toolu_") and calls[0].function.name == "get_weather"
    arguments = "".join(tc.function.arguments for tc in calls)
    assert json.loads(arguments) == {"city": "Bern"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_errors_take_openai_shape_and_sdk_classes(client, base_url):
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="ghost", messages=HELLO)
    assert raised.value.body["message"].startswith("model: 'ghost' not found")
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="micro", messages=HELLO, n=2)
    assert (
        raised.value.body["param"] == "n" and raised.value.body["type"] == "invalid_request_error"
    )
    with pytest.raises(openai.BadRequestError, match=r"messages\[2\]\.tool_call_id"):
        client.chat.completions.create(
            model="micro", messages=[*HELLO, {"role": "tool", "content": "x"}]
        )
    bad_arguments = {
        "role": "assistant",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{"}}
        ],
    }
    with pytest.raises(
        openai.BadRequestError, match=r"messages\[2\]\.tool_calls\[0\]\.function\.arguments"
    ):
        client.chat.completions.create(model="micro", messages=[*HELLO, bad_arguments])
    wrong_key = openai.OpenAI(base_url=f"{base_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="invalid API key"):
        wrong_key.chat.completions.create(model="micro", messages=HELLO)
