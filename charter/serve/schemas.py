"""Pydantic models of the request and response bodies of both APIs.

Requests are validated here (types, ranges, required fields); a failure becomes a 400 that names
the field (errors.py). Fields a model does not declare are ignored, as the Anthropic API ignores
them, so newer clients keep working. What a field *means* is implemented in anthropic_api.py and
openai_api.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

# ---- Anthropic Messages API: requests ----


class TextBlockParam(BaseModel):
    type: Literal["text"]
    text: str


class ThinkingBlockParam(BaseModel):
    type: Literal["thinking"]
    thinking: str
    signature: str = ""


class ToolUseBlockParam(BaseModel):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlockParam(BaseModel):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlockParam] = ""
    is_error: bool = False


InputBlock = Annotated[
    TextBlockParam | ThinkingBlockParam | ToolUseBlockParam | ToolResultBlockParam,
    Field(discriminator="type"),
]


class MessageParam(BaseModel):
    # "system" is an extension: such messages join the system prompt (see anthropic_api.py).
    role: Literal["user", "assistant", "system"]
    content: str | list[InputBlock]


class ToolParam(BaseModel):
    type: Literal["custom"] | None = None  # server tools (web search, …) are not offered
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str = ""
    input_schema: dict[str, Any]


class ToolChoiceAuto(BaseModel):
    type: Literal["auto"]


class ToolChoiceAny(BaseModel):
    type: Literal["any"]


class ToolChoiceNone(BaseModel):
    type: Literal["none"]


class ToolChoiceTool(BaseModel):
    type: Literal["tool"]
    name: str


ToolChoice = Annotated[
    ToolChoiceAuto | ToolChoiceAny | ToolChoiceNone | ToolChoiceTool, Field(discriminator="type")
]


class ThinkingEnabled(BaseModel):
    type: Literal["enabled"]
    budget_tokens: int = Field(ge=1)


class ThinkingDisabled(BaseModel):
    type: Literal["disabled"]


class ThinkingAdaptive(BaseModel):
    """The model decides whether to think (what Claude Code sends): see `TurnOptions`.
    `between_tools` (thinking between tool calls) means the same here. `display` is accepted;
    thinking is always returned in full."""

    type: Literal["adaptive", "between_tools"]
    display: Literal["summarized", "omitted"] | None = None


ThinkingConfig = Annotated[
    ThinkingEnabled | ThinkingDisabled | ThinkingAdaptive, Field(discriminator="type")
]


class OutputConfig(BaseModel):
    """`effort` (how hard a Claude model works; Claude Code sends it) is accepted and changes
    nothing here. `format` (structured outputs: an answer held to a JSON schema) is refused in
    anthropic_api.py: the server cannot constrain decoding to a schema."""

    effort: str | None = None
    format: dict[str, Any] | None = None


class CountTokensRequest(BaseModel):
    model: str
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[TextBlockParam] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1)
    stop_sequences: list[str | None] | None = None  # null entries are ignored
    stream: bool = False
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    output_config: OutputConfig | None = None


# ---- Anthropic Messages API: responses ----


class TextContent(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ThinkingContent(BaseModel):
    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str


class ToolUseContent(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


ContentBlock = TextContent | ThinkingContent | ToolUseContent


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int


class MessageResponse(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ContentBlock]
    stop_reason: str | None
    stop_sequence: str | None
    usage: Usage


class TokenCount(BaseModel):
    input_tokens: int


class ModelInfo(BaseModel):
    type: Literal["model"] = "model"
    id: str
    display_name: str
    created_at: str  # RFC 3339
    lifecycle: Literal["active"] = "active"
    max_input_tokens: int | None
    max_tokens: int | None


class ModelPage(BaseModel):
    data: list[ModelInfo]
    has_more: bool
    first_id: str | None
    last_id: str | None


# ---- OpenAI chat completions: requests ----


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    name: str
    arguments: str  # a JSON object, as a string


class ToolCallParam(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCallParam] | None = None
    tool_call_id: str | None = None


class FunctionDefinition(BaseModel):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class FunctionTool(BaseModel):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)  # an extension, as in vLLM
    seed: int | None = None
    stop: str | list[str] | None = None
    n: Literal[1] = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
