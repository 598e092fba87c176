"""Claude Code's requests (`claude -p`, version 2.1.197) replayed against the server in-process.

The shapes were logged from real runs against `charter serve` (docs/serving.md): the headers and
`?beta=true` of its SDK, a system prompt of text blocks with `cache_control`, `metadata.user_id`,
`thinking: adaptive`, `context_management`, `output_config.effort`, tools whose input schemas are
JSON Schema 2020-12, a `role: "system"` message after the user's, a tool round trip (the thinking
block sent back with its signature, the tool result with a cache breakpoint), and the token
counting of `/context` with its fallback. Field names, types and structure are Claude Code's;
every text is a placeholder of ours. The official SDK sends the bodies (its beta client, as
Claude Code's does) and parses every response strictly; replies are scripted
(tests/serve_helpers.py) so that each turn has a known answer.
"""

from __future__ import annotations

import json
import re

import anthropic
import httpx
import pytest

from charter.chat.template import EMPTY_THINK, THINK_PROMPT, tool_call, tool_result
from tests.serve_helpers import Script, micro_registry, reply_ids, running_server

KEY = "test-key"
SESSION = "00000000-0000-4000-8000-000000000000"
BETAS = [
    "claude-code-20250219",
    "interleaved-thinking-2025-05-14",
    "thinking-token-count-2026-05-13",
    "context-management-2025-06-27",
    "prompt-caching-scope-2026-01-05",
    "mid-conversation-system-2026-04-07",
    "effort-2025-11-24",
]
# /context's count_tokens calls, and the one-token messages it falls back on.
FALLBACK_BETAS = [
    "claude-code-20250219",
    "interleaved-thinking-2025-05-14",
    "context-management-2025-06-27",
]
COUNTING_BETAS = [*FALLBACK_BETAS, "token-counting-2024-11-01"]  # both SDKs add the last
CLIENT_HEADERS = {
    "anthropic-version": "2023-06-01",  # Claude Code's SDK sends this one, not the newest
    "user-agent": "claude-cli/2.1.197 (external, sdk-cli)",
    "x-app": "cli",
    "x-claude-code-session-id": SESSION,
    "anthropic-dangerous-direct-browser-access": "true",
}
BETA_QUERY = {"beta": "true"}  # Claude Code's SDK adds it to every beta call; Python's does not
EPHEMERAL = {"type": "ephemeral"}
# An attribution line, an identity line, then the instructions: the last two are cache breakpoints.
SYSTEM = [
    {"type": "text", "text": "Placeholder attribution line."},
    {"type": "text", "text": "Placeholder identity line.", "cache_control": EPHEMERAL},
    {"type": "text", "text": "Placeholder instructions.", "cache_control": EPHEMERAL},
]
READ_TOOL = {
    "name": "Read",
    "description": "Placeholder: reads a file.",
    "input_schema": {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "file_path": {"description": "Placeholder.", "type": "string"},
            "offset": {
                "description": "Placeholder.",
                "type": "integer",
                "minimum": 0,
                "maximum": 9007199254740991,
            },
            "limit": {
                "description": "Placeholder.",
                "type": "integer",
                "exclusiveMinimum": 0,
                "maximum": 9007199254740991,
            },
            "mode": {"description": "Placeholder.", "type": "string", "enum": ["a", "b"]},
        },
        "required": ["file_path"],
        "additionalProperties": False,
    },
}
# The keys of Claude Code's main-loop request body, as logged (and `stream`).
MAIN_LOOP_KEYS = {
    "model",
    "messages",
    "system",
    "tools",
    "metadata",
    "max_tokens",
    "thinking",
    "context_management",
    "output_config",
}


@pytest.fixture(scope="module")
def registry(tokenizer):
    registry = micro_registry(tokenizer, {"micro": (2, 4)})
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def base_url(registry):
    with running_server(registry, api_keys=[KEY]) as url:
        yield url


@pytest.fixture
def sent() -> list:
    """Every request the client sends, as sent (the SDK's HTTP requests)."""
    return []


@pytest.fixture
def client(base_url, sent):
    http_client = anthropic.DefaultHttpxClient(event_hooks={"request": [sent.append]})
    return anthropic.Anthropic(
        base_url=base_url,
        api_key=KEY,
        max_retries=0,
        # The key as x-api-key alone, as Claude Code sends ANTHROPIC_API_KEY (this SDK would
        # send it as a bearer token).
        default_headers=CLIENT_HEADERS | {"x-api-key": KEY, "authorization": anthropic.omit},
        http_client=http_client,
        _strict_response_validation=True,
    )


@pytest.fixture
def script(monkeypatch, registry):
    return Script(monkeypatch, registry.get("micro"))


def user_turn(question: str) -> dict:
    """The first user message: a reminder block, then the question with a cache breakpoint."""
    reminder = {
        "type": "text",
        "text": "<system-reminder>\nPlaceholder context.\n</system-reminder>",
    }
    question_block = {"type": "text", "text": question, "cache_control": EPHEMERAL}
    return {"role": "user", "content": [reminder, question_block]}


def main_loop(messages: list[dict], tools: list[dict]) -> dict:
    """The arguments of a main-loop request (thinking on; `stream` is the caller's)."""
    user_id = {"device_id": "0" * 64, "account_uuid": "", "session_id": SESSION}
    return {
        "model": "micro",
        "max_tokens": 32000,
        "system": SYSTEM,
        "messages": messages,
        "tools": tools,
        "metadata": {"user_id": json.dumps(user_id)},
        "thinking": {"type": "adaptive"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "betas": BETAS,
        "extra_query": BETA_QUERY,
    }


def create(client: anthropic.Anthropic, arguments: dict, stream: bool):
    """The message, streamed (Claude Code's way) and rebuilt by the SDK, or as one response (its
    non-streaming fallback)."""
    if not stream:  # a timeout of our own, or the SDK refuses max_tokens this large unstreamed
        return client.beta.messages.create(**arguments, timeout=60)
    with client.beta.messages.stream(**arguments) as events:
        return events.get_final_message()


def assert_sent_like_claude_code(request, path: str, betas: list[str]) -> None:
    assert (request.url.path, request.url.params["beta"]) == (path, "true")
    assert request.headers["anthropic-beta"] == ",".join(betas)
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["x-api-key"] == KEY and "authorization" not in request.headers
    assert request.headers["x-app"] == "cli"


def test_the_connectivity_probe_is_answered(base_url):
    assert httpx.head(base_url + "/", timeout=10).status_code == 200


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_a_tool_round_trip_as_claude_code_sends_it(client, sent, script, tokenizer, stream):
    question = user_turn("What does notes.txt say?")
    call_text = tool_call("Read", {"file_path": "/work/notes.txt"})
    script.reply(reply_ids(tokenizer, f"I should read it.\n</think>\n{call_text}"))
    first = create(client, main_loop([question], [READ_TOOL]), stream)
    assert json.loads(sent[-1].content).keys() - {"stream"} == MAIN_LOOP_KEYS
    assert_sent_like_claude_code(sent[-1], "/v1/messages", BETAS)
    assert tokenizer.decode(script.requests[-1].prompt_ids).endswith(THINK_PROMPT)  # adaptive
    thinking, call = first.content
    assert (thinking.type, thinking.thinking) == ("thinking", "I should read it.")
    assert (call.type, call.name, call.input) == (
        "tool_use",
        "Read",
        {"file_path": "/work/notes.txt"},
    )
    assert first.stop_reason == "tool_use"

    # The next request: the turn sent back whole, the cache breakpoint moved to the tool result.
    reminder, asked = question["content"]
    history = [
        {"role": "user", "content": [reminder, {"type": "text", "text": asked["text"]}]},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "thinking",
                    "thinking": thinking.thinking,
                    "signature": thinking.signature,
                },
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.input},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "tool_use_id": call.id,
                    "type": "tool_result",
                    "content": "1\tplaceholder notes\n",
                    "cache_control": EPHEMERAL,
                }
            ],
        },
    ]
    script.reply(reply_ids(tokenizer, "It has the notes.\n</think>\nIt says: placeholder notes."))
    second = create(client, main_loop(history, [READ_TOOL]), stream)
    prompt = tokenizer.decode(script.requests[-1].prompt_ids)
    assert tool_result("Read", "1\tplaceholder notes\n", False) in prompt
    assert [b.type for b in second.content] == ["thinking", "text"]
    assert (second.content[1].text, second.stop_reason) == (
        "It says: placeholder notes.",
        "end_turn",
    )


def test_a_turn_without_tools_or_thinking_reads_the_mid_conversation_system_message(
    client, sent, script, tokenizer
):
    """`claude -p --tools ""` with CLAUDE_CODE_DISABLE_THINKING=1 and
    CLAUDE_CODE_EXTRA_BODY='{"temperature": 0}', plus the `role: "system"` message Claude Code
    sends after the user's when its Agent tool is on (mid-conversation-system beta): it joins
    the system prompt."""
    note = "Placeholder note for the model."
    arguments = main_loop([user_turn("What is the capital of France?")], tools=[])
    del arguments["thinking"], arguments["context_management"]
    arguments["messages"].append({"role": "system", "content": note})
    script.reply(reply_ids(tokenizer, "Paris."))
    message = create(client, arguments | {"extra_body": {"temperature": 0}}, stream=True)
    assert [(b.type, b.text) for b in message.content] == [("text", "Paris.")]
    assert json.loads(sent[-1].content)["temperature"] == 0
    assert script.requests[-1].params.temperature == 0
    prompt = tokenizer.decode(script.requests[-1].prompt_ids)
    assert "Placeholder instructions." in prompt and note in prompt
    assert prompt.index(note) < prompt.index("What is the capital of France?")
    assert prompt.endswith(EMPTY_THINK)


@pytest.mark.parametrize("tools", [[], [READ_TOOL]], ids=["no-tools", "tools"])
def test_context_counts_tokens_and_its_fallback_agrees(client, sent, script, tokenizer, tools):
    """`/context` counts each part alone (a one-message conversation with the part as its text,
    or the tools with a stand-in message); where counting fails it creates a one-token message."""
    messages = [{"role": "user", "content": "Placeholder section of a system prompt."}]
    counted = client.beta.messages.count_tokens(
        model="micro", messages=messages, tools=tools, betas=FALLBACK_BETAS, extra_query=BETA_QUERY
    )
    assert_sent_like_claude_code(sent[-1], "/v1/messages/count_tokens", COUNTING_BETAS)
    assert json.loads(sent[-1].content).keys() == {"model", "messages", "tools"}
    script.reply(reply_ids(tokenizer, "x", end_turn=False))
    created = client.beta.messages.create(
        model="micro",
        max_tokens=1,
        messages=messages,
        tools=tools,
        metadata={"user_id": "{}"},
        betas=FALLBACK_BETAS,
        extra_query=BETA_QUERY,
    )
    assert counted.input_tokens == created.usage.input_tokens == len(script.requests[-1].prompt_ids)
    assert (created.stop_reason, created.usage.output_tokens) == ("max_tokens", 1)


IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        # Claude Code's side queries ask for JSON answers so (in its code; not sent in our runs):
        # decoding cannot be held to a schema.
        (
            {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
            "output_config.format",
        ),
        # Its WebSearch tool asks for Anthropic's server tool (in its code); only client tools
        # are offered.
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
        # Read of an image file answers with an image; the models read text only.
        (
            {
                "messages": [
                    {"role": "user", "content": "Look."},
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}}],
                    },
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "t1", "content": [IMAGE]}
                        ],
                    },
                ]
            },
            "messages[2].content[0].content[0].type",
        ),
    ],
    ids=["structured-output", "server-tool", "image-result"],
)
def test_what_the_server_cannot_do_is_a_400_naming_the_field(client, change, field):
    arguments = main_loop([user_turn("Placeholder.")], [READ_TOOL]) | change
    with pytest.raises(anthropic.BadRequestError, match=f"^400 {re.escape(field)}: "):
        create(client, arguments, stream=False)
