"""AnthropicGenerator and OpenAIGenerator against a real `charter serve` on loopback.

The served micro model has random weights. Answers are scripted where a test needs a particular
one (tests/serve_helpers.py); greedy tests ban blank tokens, which greedy decoding of the random
model otherwise picks every time, so that different prompts get different answers.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import anthropic
import httpx
import pytest
import torch

from charter import chat
from charter.chat.parse import BlockDelta, BlockStart, BlockStop
from charter.infer.anthropic_remote import AnthropicGenerator
from charter.infer.generator import (
    InvalidRequest,
    Overloaded,
    ScoreRequest,
    ScoringUnsupported,
    Turn,
    TurnRequest,
    user_turn,
)
from charter.infer.openai_remote import OpenAIGenerator
from tests.serve_helpers import (
    CONTEXT,
    Script,
    health,
    micro_registry,
    reply_ids,
    running_server,
    wait_for,
)

KEY = "test-key"
WEATHER_TOOL = chat.Tool(
    "get_weather",
    "The current weather in a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CALL = '<tool_call>{"name": "get_weather", "input": {"city": "Paris"}}</tool_call>'
KINDS = ["anthropic", "openai"]


@pytest.fixture(scope="module")
def registry(tokenizer):
    registry = micro_registry(tokenizer, {"micro": (4, 8), "single": (1, 0)})
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def base_url(registry):
    """No API keys: the server checks none, on loopback."""
    with running_server(registry) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_url(registry):
    with running_server(registry, api_keys=[KEY]) as url:
        yield url


def make_generator(kind: str, base_url: str, model: str = "micro", **options):
    options.setdefault("max_retries", 0)
    if kind == "anthropic":
        return AnthropicGenerator(model, base_url, **options)
    return OpenAIGenerator(model, f"{base_url}/v1", **options)


@pytest.fixture(scope="module")
def generators(base_url):
    made = {kind: make_generator(kind, base_url) for kind in KINDS}
    yield made
    for generator in made.values():
        generator.close()


@pytest.fixture(params=KINDS)
def generator(request, generators):
    return generators[request.param]


@pytest.fixture
def script(monkeypatch, registry):
    return Script(monkeypatch, registry.get("micro"))


class NoBlankTokens:
    """A logits processor that rules out the tokens that decode to whitespace only."""

    def __init__(self, tokenizer) -> None:
        self.blank = [i for i in range(tokenizer.vocab_size) if not tokenizer.decode([i]).strip()]

    def __call__(self, generated: list[int], logits: torch.Tensor) -> torch.Tensor:
        logits = logits.clone()
        logits[..., self.blank] = float("-inf")
        return logits


def streamed(generator, request: TurnRequest):
    """All events of `generator.open(request)`, and the finished stream."""

    async def run():
        stream = await generator.open(request)
        return [event async for event in stream.events()], stream

    return asyncio.run(run())


def reassemble(events) -> list[chat.Block]:
    """Blocks from parser events alone: starts, concatenated deltas, stops."""
    started, pieces, blocks = {}, {}, []
    for event in events:
        if isinstance(event, BlockStart):
            assert event.index == len(started)  # consecutive from 0
            started[event.index], pieces[event.index] = event.block, []
        elif isinstance(event, BlockDelta):
            pieces[event.index].append(event.text)
        else:
            assert isinstance(event, BlockStop)
            block, text = started[event.index], "".join(pieces[event.index])
            if block.type == "text":
                blocks.append(chat.TextBlock(text))
            elif block.type == "thinking":
                blocks.append(chat.ThinkingBlock(text))
            else:
                blocks.append(chat.ToolUseBlock(block.id, block.name, json.loads(text)))
    return blocks


def comparable(blocks: list[chat.Block]) -> list[tuple]:
    """Blocks without what differs between two answers to one request: tool_use ids (fresh per
    call) and thinking signatures (not in the events)."""
    out = []
    for block in blocks:
        if block.type == "tool_use":
            assert block.id.startswith("toolu_")
            out.append(("tool_use", block.name, block.input))
        else:
            out.append((block.type, block.text if block.type == "text" else block.thinking))
    return out


def conversation(*messages: chat.Message, tools=()) -> chat.Conversation:
    return chat.Conversation(list(messages), tools=list(tools))


def user(text: str) -> chat.Message:
    return chat.Message("user", [chat.TextBlock(text)])


# ---- generate ----


def test_a_batch_equals_what_the_server_gives_the_sdk(
    base_url, generators, script, tokenizer, capsys
):
    script.processor = NoBlankTokens(tokenizer)
    prompts = [f"Question {i}: {'why ' * i}?" for i in range(8)]
    requests = [user_turn(p, max_tokens=6, temperature=0.0) for p in prompts]
    turns = generators["anthropic"].generate(requests, progress="answering")
    client = anthropic.Anthropic(base_url=base_url, api_key="unused", max_retries=0)
    for prompt, turn in zip(prompts, turns, strict=True):
        message = client.messages.create(
            model="micro",
            max_tokens=6,
            messages=[{"role": "user", "content": prompt}],
            extra_body={"temperature": 0.0},
        )
        assert turn == Turn(
            [chat.TextBlock(b.text) for b in message.content],
            message.stop_reason,
            message.stop_sequence,
            message.usage.input_tokens,
            message.usage.output_tokens,
        )
    assert len({t.text for t in turns}) > 1  # different answers, so their order is checked
    bar = capsys.readouterr().err
    assert "answering" in bar and "8/8" in bar


def test_at_most_max_concurrency_requests_are_in_flight(base_url, script, tokenizer):
    script.reply(reply_ids(tokenizer, "a slow answer of many words"), delay=0.01)
    most_active, done = 0, threading.Event()

    def watch():
        nonlocal most_active
        while not done.is_set():
            most_active = max(most_active, health(base_url, "micro")["active"])
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with AnthropicGenerator("micro", base_url, max_concurrency=2) as generator:
        turns = generator.generate([user_turn(f"Hi {i}", max_tokens=20) for i in range(6)])
    done.set()
    watcher.join()
    assert [t.text for t in turns] == ["a slow answer of many words"] * 6
    assert most_active == 2  # the server has 4 rows; the generator used 2


def test_generate_works_inside_a_running_event_loop(generators, script, tokenizer):
    script.reply(reply_ids(tokenizer, "From a coroutine."))

    async def caller():
        return generators["anthropic"].generate([user_turn("Hi", max_tokens=20)])

    [turn] = asyncio.run(caller())
    assert turn.text == "From a coroutine."


def test_openai_and_anthropic_give_the_same_greedy_answer(generators, script, tokenizer):
    script.processor = NoBlankTokens(tokenizer)
    request = user_turn("Same question for both", system="Be brief.", max_tokens=8, temperature=0)
    by_anthropic = generators["anthropic"].generate([request])[0]
    by_openai = generators["openai"].generate([request])[0]
    assert by_anthropic.text and by_openai == by_anthropic
    assert script.requests[-1].prompt_ids == script.requests[-2].prompt_ids


# ---- streaming ----


@pytest.mark.parametrize("kind", KINDS)
def test_streamed_events_reassemble_into_the_turn(generators, script, tokenizer, kind):
    """Thinking, text and a tool call. Through OpenAI chat completions, which cannot ask for
    thinking, the model thinks unasked (its answer opens a think block after the empty one)."""
    generator = generators[kind]
    if kind == "anthropic":
        reply, options = "Let me look it up.\n</think>\n", {"thinking_budget": 40}
    else:
        reply, options = "<think>\nLet me look it up.\n</think>\n", {}
    script.reply(reply_ids(tokenizer, reply + "Checking." + CALL))
    request = user_turn("Weather in Paris?", max_tokens=200, **options)
    request.conversation.tools = [WEATHER_TOOL]
    events, stream = streamed(generator, request)
    expected = [
        ("thinking", "Let me look it up."),
        ("text", "Checking."),
        ("tool_use", "get_weather", {"city": "Paris"}),
    ]
    assert comparable(reassemble(events)) == expected
    assert comparable(stream.blocks) == comparable(stream.turn.content) == expected
    deltas = [e.kind for e in events if isinstance(e, BlockDelta)]
    assert set(deltas) == {"thinking", "text", "input_json"}
    assert stream.turn.stop_reason == "tool_use"
    assert stream.input_tokens == stream.turn.input_tokens == len(script.requests[-1].prompt_ids)
    if kind == "anthropic":
        assert stream.turn.content[0].signature  # from the final message, not the events
    [generated] = generator.generate([request])
    assert comparable(generated.content) == expected
    assert (generated.input_tokens, generated.output_tokens) == (
        stream.turn.input_tokens,
        stream.turn.output_tokens,
    )


def test_a_cancelled_stream_ends_early_and_frees_the_row(base_url, generators, script, tokenizer):
    script.reply(reply_ids(tokenizer, "word " * 200, end_turn=False), delay=0.02)
    before = health(base_url, "micro")["cancelled"]

    async def read_one_then_cancel():
        stream = await generators["anthropic"].open(user_turn("Hi", max_tokens=200))
        events = []
        async for event in stream.events():
            events.append(event)
            if isinstance(event, BlockDelta):
                stream.cancel()
        return events, stream

    events, stream = asyncio.run(read_one_then_cancel())
    assert stream.turn is None and len(events) < 20
    stats = wait_for(lambda: (s := health(base_url, "micro"))["cancelled"] > before and s)
    assert stats["active"] == 0 and len(script.requests[-1].generated) < 100


# ---- the request's parts ----


def test_a_tool_use_round_trip_reaches_the_model_unchanged_through_both_apis(
    generators, script, tokenizer
):
    first_prompt = conversation(user("Weather in Paris?"), tools=[WEATHER_TOOL])
    for kind in KINDS:
        script.reply(reply_ids(tokenizer, "Let me check." + CALL))
        [first] = generators[kind].generate([TurnRequest(first_prompt)])
        assert first.stop_reason == "tool_use"
        assert comparable(first.content) == [
            ("text", "Let me check."),
            ("tool_use", "get_weather", {"city": "Paris"}),
        ]
        call = first.content[1]
        result = chat.ToolResultBlock(call.id, "18°C, sunny")
        second_prompt = conversation(
            *first_prompt.messages,
            chat.Message("assistant", first.content),
            chat.Message("user", [result, chat.TextBlock("And tomorrow?")]),
            tools=[WEATHER_TOOL],
        )
        script.reply(reply_ids(tokenizer, "Sunny again."))
        [second] = generators[kind].generate([TurnRequest(second_prompt)])
        assert (second.text, second.stop_reason) == ("Sunny again.", "end_turn")
        # The server rendered the conversation as it was given, whichever API carried it.
        assert script.requests[-1].prompt_ids == chat.render_prompt(
            second_prompt, tokenizer, thinking=False
        )


def test_stop_sequences_and_max_tokens_end_the_turn(generator, script, tokenizer):
    ids = reply_ids(tokenizer, "one two three four five six", end_turn=False)
    script.reply(ids)
    [cut] = generator.generate([user_turn("Count", max_tokens=3)])
    assert (cut.stop_reason, cut.output_tokens, cut.text) == (
        "max_tokens",
        3,
        tokenizer.decode(ids[:3]),
    )
    [stopped] = generator.generate([user_turn("Count", max_tokens=40, stop_sequences=["three"])])
    assert stopped.text == "one two "
    if isinstance(generator, AnthropicGenerator):
        assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", "three")
    else:  # the API does not say that a stop sequence matched
        assert (stopped.stop_reason, stopped.stop_sequence) == ("end_turn", None)


def test_count_tokens_and_context_window(generators, script, tokenizer):
    script.reply(reply_ids(tokenizer, "ok"))
    request = user_turn("How many tokens?", system="Sys.", max_tokens=5)
    counted = asyncio.run(generators["anthropic"].count_tokens(request))
    assert counted == generators["anthropic"].generate([request])[0].input_tokens
    assert counted == len(chat.render_prompt(request.conversation, tokenizer, thinking=False))
    with pytest.raises(NotImplementedError, match="no token-counting endpoint"):
        asyncio.run(generators["openai"].count_tokens(request))
    # What Charter's models endpoint says: the context less the one token left to generate.
    assert (
        generators["anthropic"].context_window == generators["openai"].context_window == CONTEXT - 1
    )


def test_an_unknown_model_has_no_context_window_and_its_requests_name_the_model(base_url):
    with make_generator("anthropic", base_url, model="ghost") as ghost:
        assert ghost.context_window is None
        with pytest.raises(InvalidRequest, match="'ghost' not found") as raised:
            ghost.generate([user_turn("Hi")])
        assert raised.value.field == "model"


# ---- errors ----


def test_a_prompt_too_long_is_an_invalid_request_naming_the_field(generator):
    request = user_turn("word " * CONTEXT, max_tokens=5)
    with pytest.raises(
        InvalidRequest, match="prompt is too long: .* context window of micro"
    ) as raised:
        generator.generate([request])
    assert raised.value.field == "messages"
    assert not raised.value.message.startswith("messages:")
    with pytest.raises(InvalidRequest, match="prompt is too long") as raised:
        streamed(generator, request)
    assert raised.value.field == "messages"


def test_what_an_api_cannot_express_is_refused_before_sending(generators):
    with pytest.raises(InvalidRequest, match="cannot express a thinking budget") as raised:
        generators["openai"].generate([user_turn("Hi", thinking_budget=16)])
    assert raised.value.field == "thinking"
    result = chat.Message("user", [chat.ToolResultBlock("toolu_1", "failed", is_error=True)])
    call = chat.Message("assistant", [chat.ToolUseBlock("toolu_1", "get_weather", {})])
    request = TurnRequest(conversation(user("Hi"), call, result, tools=[WEATHER_TOOL]))
    with pytest.raises(InvalidRequest) as raised:
        generators["openai"].generate([request])
    assert raised.value.field == "messages[2].content[0].is_error"


@pytest.mark.parametrize("kind", KINDS)
def test_overloaded_is_retried_after_retry_after_then_raised(
    base_url, monkeypatch, registry, tokenizer, kind
):
    """'single' has one row and no queue: while a slow stream holds it, requests get 529."""
    script = Script(monkeypatch, registry.get("single"))
    script.reply(reply_ids(tokenizer, "word " * 200, end_turn=False), delay=0.02)
    body = {"model": "single", "max_tokens": 200, "messages": [{"role": "user", "content": "Hi"}]}
    wait_for(lambda: health(base_url, "single")["active"] == 0)  # the last test's stream is gone
    with httpx.stream("POST", f"{base_url}/v1/messages", json=body | {"stream": True}) as held:
        assert held.status_code == 200
        lines = held.iter_lines()  # kept: closing the iterator would close the stream
        next(line for line in lines if line == "event: content_block_delta")
        attempts = len(script.requests)
        with make_generator(kind, base_url, model="single", max_retries=1) as generator:
            started = time.monotonic()
            with pytest.raises(Overloaded, match="single is overloaded") as raised:
                generator.generate([user_turn("Hi", max_tokens=5)])
        assert time.monotonic() - started >= raised.value.retry_after == 2.0  # waited once
        assert len(script.requests) - attempts == 2  # the first try and one retry


# ---- keys and scoring ----


def test_a_missing_key_is_a_clear_error(monkeypatch, keyed_url, tmp_path):
    for variable in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY", "MY_KEY"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(
        ValueError, match=r"no API key for the default endpoint: .*\$ANTHROPIC_API_KEY"
    ):
        AnthropicGenerator("claude-x")
    with pytest.raises(ValueError, match=r"no API key for https://example\.com/v1: .*\$MY_KEY"):
        OpenAIGenerator("m", "https://example.com/v1", key_env="MY_KEY")
    with pytest.raises(FileNotFoundError, match="missing.txt: API key file not found"):
        AnthropicGenerator("micro", keyed_url, key_file=tmp_path / "missing.txt")
    # A loopback server gets a placeholder; one that checks keys refuses it.
    with (
        AnthropicGenerator("micro", keyed_url) as keyless,
        pytest.raises(RuntimeError, match=r"refused the API key \(401\): invalid API key"),
    ):
        keyless.generate([user_turn("Hi", max_tokens=2)])


def test_keys_come_from_the_argument_a_key_file_or_the_environment(
    monkeypatch, keyed_url, tmp_path
):
    (tmp_path / "key").write_text(f"{KEY}\n")
    monkeypatch.setenv("MY_KEY", KEY)
    for options in ({"api_key": KEY}, {"key_file": tmp_path / "key"}, {"key_env": "MY_KEY"}):
        with make_generator("openai", keyed_url, **options) as generator:
            [turn] = generator.generate([user_turn("Hi", max_tokens=2)])
            assert turn.output_tokens >= 1


def test_score_is_unsupported(generator):
    request = ScoreRequest(conversation(user("Hi")), [chat.TextBlock("Hello.")])
    with pytest.raises(ScoringUnsupported, match="cannot score given text"):
        generator.score([request])
