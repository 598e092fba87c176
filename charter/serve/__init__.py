"""`charter serve`: local models behind the Anthropic Messages API, OpenAI chat completions and
a web chat.

    commands.py       the CLI verb: load models, check keys, run uvicorn
    app.py            the FastAPI app: routes, error shapes, request ids, security headers
    anthropic_api.py  /v1/messages (+ SSE), /v1/messages/count_tokens, /v1/models
    openai_api.py     /v1/chat/completions (+ SSE)
    assistant.py      one assistant turn: render → generate → parse; thinking, tool_choice, usage
    worker.py         the thread that owns a model's Engine (continuous batching, bounded queue)
    registry.py       the served models, by id
    http.py, auth.py, errors.py, schemas.py, sse.py   request plumbing and wire formats
    static/           the web chat (HTML, JS, CSS; markdown-it vendored with its licence)
"""
