"""Canonical request, response, stream and usage types.

Every inbound dialect decodes into these and every provider adapter encodes from them, so any
dialect reaches any provider. They are msgspec Structs: cheap to build on the request path.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Role = Literal["system", "developer", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]


# --- content -------------------------------------------------------------------------------


class Text(msgspec.Struct, tag="text", kw_only=True, gc=False):
    text: str
    # Anthropic prompt-caching marker, carried so an Anthropic caller keeps it end to end.
    cache_control: dict[str, Any] | None = None


class Image(msgspec.Struct, tag="image", kw_only=True, gc=False):
    url: str | None = None  # http(s) URL
    data: str | None = None  # base64 payload when inline
    media_type: str | None = None
    detail: str | None = None


class ToolCall(msgspec.Struct, tag="tool_call", kw_only=True, gc=False):
    id: str
    name: str
    arguments: str  # JSON text, as the model produced it


class ToolResult(msgspec.Struct, tag="tool_result", kw_only=True, gc=False):
    tool_call_id: str
    content: list[Text | Image]
    is_error: bool = False


Part = Text | Image | ToolCall | ToolResult


class Message(msgspec.Struct, kw_only=True, gc=False):
    role: Role
    content: list[Part]
    name: str | None = None

    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, Text))


class Tool(msgspec.Struct, kw_only=True, gc=False):
    name: str
    description: str | None = None
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)
    strict: bool | None = None


class ToolChoice(msgspec.Struct, kw_only=True, gc=False):
    mode: Literal["auto", "none", "required", "tool"]
    name: str | None = None  # when mode == "tool"


class ResponseFormat(msgspec.Struct, kw_only=True, gc=False):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


# --- requests ------------------------------------------------------------------------------


class ChatRequest(msgspec.Struct, kw_only=True, gc=False):
    model: str
    messages: list[Message]
    stream: bool = False
    include_usage: bool = False
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    n: int = 1
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    # Fields of the inbound dialect that have no canonical meaning. They are forwarded only to
    # providers speaking that same dialect (e.g. OpenAI `service_tier` to an OpenAI deployment).
    passthrough: dict[str, Any] | None = None
    passthrough_dialect: str | None = None

    def prompt_text(self) -> str:
        out: list[str] = []
        for m in self.messages:
            for p in m.content:
                if isinstance(p, Text):
                    out.append(p.text)
                elif isinstance(p, ToolResult):
                    out.extend(t.text for t in p.content if isinstance(t, Text))
                elif isinstance(p, ToolCall):
                    out.append(p.arguments)
        return "\n".join(out)


class EmbeddingRequest(msgspec.Struct, kw_only=True, gc=False):
    model: str
    inputs: list[str] | list[list[int]]
    dimensions: int | None = None
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None


# --- usage ---------------------------------------------------------------------------------


class Usage(msgspec.Struct, kw_only=True, gc=False):
    """Token counts kept apart by how they are billed.

    `input_tokens` excludes cache reads and cache writes; `output_tokens` excludes reasoning.
    A dialect's totals (OpenAI `prompt_tokens`, `completion_tokens`) are sums of these.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False

    @property
    def prompt_total(self) -> int:
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens

    @property
    def completion_total(self) -> int:
        return self.output_tokens + self.reasoning_tokens

    def merge(self, other: Usage) -> Usage:
        """Combine two partial reports of one response: a field reported later wins when set."""
        return Usage(
            input_tokens=other.input_tokens or self.input_tokens,
            output_tokens=other.output_tokens or self.output_tokens,
            cached_input_tokens=other.cached_input_tokens or self.cached_input_tokens,
            cache_write_tokens=other.cache_write_tokens or self.cache_write_tokens,
            reasoning_tokens=other.reasoning_tokens or self.reasoning_tokens,
            estimated=self.estimated or other.estimated,
        )


# --- responses -----------------------------------------------------------------------------


class Choice(msgspec.Struct, kw_only=True, gc=False):
    index: int
    message: Message
    finish_reason: FinishReason | None
    logprobs: Any = None


class ChatResponse(msgspec.Struct, kw_only=True, gc=False):
    id: str
    model: str  # the upstream model that answered
    choices: list[Choice]
    usage: Usage
    created: int = 0
    system_fingerprint: str | None = None


class Embedding(msgspec.Struct, kw_only=True, gc=False):
    index: int
    vector: list[float] | str  # str when base64-encoded upstream


class EmbeddingResponse(msgspec.Struct, kw_only=True, gc=False):
    model: str
    data: list[Embedding]
    usage: Usage


# --- stream deltas -------------------------------------------------------------------------
# A provider's stream parser turns each upstream event into zero or more of these; a dialect's
# stream encoder turns them into the caller's events. `choice` is the choice index (OpenAI `n`).


class TextDelta(msgspec.Struct, kw_only=True, gc=False):
    text: str
    choice: int = 0
    logprobs: Any = None


class ToolCallDelta(msgspec.Struct, kw_only=True, gc=False):
    index: int  # position of the tool call within the choice
    arguments: str = ""
    id: str | None = None  # set on the first delta of a call
    name: str | None = None  # set on the first delta of a call
    choice: int = 0


class FinishDelta(msgspec.Struct, kw_only=True, gc=False):
    reason: FinishReason
    choice: int = 0


class UsageDelta(msgspec.Struct, kw_only=True, gc=False):
    usage: Usage


Delta = TextDelta | ToolCallDelta | FinishDelta | UsageDelta
