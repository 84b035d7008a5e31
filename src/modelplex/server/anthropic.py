"""The Anthropic Messages dialect inbound: requests, answers, the full stream event sequence, errors."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from modelplex.context import RequestContext
from modelplex.errors import InvalidRequest, ModelplexError, StreamInterrupted
from modelplex.server.dialect import bearer, decode_error
from modelplex.server.http import SSE, Scope
from modelplex.types import (
    ChatRequest,
    ChatResponse,
    Delta,
    FinishDelta,
    FinishReason,
    Image,
    Message,
    Part,
    Text,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolResult,
    Usage,
    UsageDelta,
)

# --- request wire schema ---------------------------------------------------------------------


class _Source(msgspec.Struct, gc=False):
    type: Literal["base64", "url"]
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class _TextBlock(msgspec.Struct, tag="text", tag_field="type", gc=False):
    text: str
    cache_control: dict[str, Any] | None = None


class _ImageBlock(msgspec.Struct, tag="image", tag_field="type", gc=False):
    source: _Source
    cache_control: dict[str, Any] | None = None


class _ToolUseBlock(msgspec.Struct, tag="tool_use", tag_field="type", gc=False):
    id: str
    name: str
    input: Any = None
    cache_control: dict[str, Any] | None = None


class _ToolResultBlock(msgspec.Struct, tag="tool_result", tag_field="type", gc=False):
    tool_use_id: str
    content: str | list[_TextBlock | _ImageBlock] | None = None
    is_error: bool = False
    cache_control: dict[str, Any] | None = None


class _ThinkingBlock(msgspec.Struct, tag="thinking", tag_field="type", gc=False):
    thinking: str = ""
    signature: str | None = None


class _RedactedThinkingBlock(msgspec.Struct, tag="redacted_thinking", tag_field="type", gc=False):
    data: str = ""


_Block = _TextBlock | _ImageBlock | _ToolUseBlock | _ToolResultBlock | _ThinkingBlock | _RedactedThinkingBlock


class _Message(msgspec.Struct, gc=False):
    role: Literal["user", "assistant"]
    content: str | list[_Block]


class _ToolDef(msgspec.Struct, gc=False):
    name: Annotated[str, Meta(min_length=1, max_length=128)]
    input_schema: dict[str, Any]
    description: str | None = None
    cache_control: dict[str, Any] | None = None
    type: str | None = None


class _ToolChoice(msgspec.Struct, gc=False):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class _Metadata(msgspec.Struct, gc=False):
    user_id: str | None = None


class _Request(msgspec.Struct, gc=False):
    model: Annotated[str, Meta(min_length=1)]
    messages: list[_Message]
    max_tokens: Annotated[int, Meta(ge=1)]
    system: str | list[_TextBlock] | None = None
    stream: bool = False
    tools: list[_ToolDef] | None = None
    tool_choice: _ToolChoice | None = None
    temperature: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    stop_sequences: list[str] | None = None
    metadata: _Metadata | None = None


_KNOWN = frozenset(_Request.__struct_fields__)
_decode_any = msgspec.json.Decoder()
_encode = msgspec.json.Encoder().encode


def _media(block: _ImageBlock) -> Image:
    s = block.source
    if s.type == "url":
        return Image(url=s.url)
    return Image(data=s.data, media_type=s.media_type)


def _simple(blocks: str | list[_TextBlock | _ImageBlock] | None) -> list[Text | Image]:
    if blocks is None:
        return []
    if isinstance(blocks, str):
        return [Text(text=blocks)]
    return [Text(text=b.text) if isinstance(b, _TextBlock) else _media(b) for b in blocks]


def _messages(wire: _Request) -> list[Message]:
    out: list[Message] = []
    if wire.system:
        if isinstance(wire.system, str):
            out.append(Message(role="system", content=[Text(text=wire.system)]))
        else:
            out.append(
                Message(
                    role="system",
                    content=[Text(text=b.text, cache_control=b.cache_control) for b in wire.system],
                )
            )
    for m in wire.messages:
        if isinstance(m.content, str):
            out.append(Message(role=m.role, content=[Text(text=m.content)]))
            continue
        parts: list[Part] = []
        for b in m.content:
            if isinstance(b, _ToolResultBlock):
                # Tool results become tool messages, ahead of the rest of the user turn.
                result = ToolResult(
                    tool_call_id=b.tool_use_id, content=_simple(b.content), is_error=b.is_error
                )
                out.append(Message(role="tool", content=[result]))
            elif isinstance(b, _TextBlock):
                parts.append(Text(text=b.text, cache_control=b.cache_control))
            elif isinstance(b, _ImageBlock):
                parts.append(_media(b))
            elif isinstance(b, _ToolUseBlock):
                parts.append(ToolCall(id=b.id, name=b.name, arguments=_encode(b.input or {}).decode()))
            # thinking blocks are the model's own; no other provider can take them back
        if parts:
            out.append(Message(role=m.role, content=parts))
    return out


def parse_chat(body: bytes) -> ChatRequest:
    try:
        raw = _decode_any.decode(body)
        if not isinstance(raw, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        wire = msgspec.convert(raw, _Request)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError) as exc:
        raise decode_error(exc) from None
    if not wire.messages:
        raise InvalidRequest("messages: at least one message is required.", param="messages")
    extra = {k: v for k, v in raw.items() if k not in _KNOWN}
    choice: ToolChoice | None = None
    parallel: bool | None = None
    if wire.tool_choice is not None:
        tc = wire.tool_choice
        if tc.type == "tool" and not tc.name:
            raise InvalidRequest("tool_choice of type tool needs a name.", param="tool_choice.name")
        mode = {"auto": "auto", "any": "required", "tool": "tool", "none": "none"}[tc.type]
        choice = ToolChoice(mode=mode, name=tc.name)  # type: ignore[arg-type]
        if tc.disable_parallel_tool_use is not None:
            parallel = not tc.disable_parallel_tool_use
    return ChatRequest(
        model=wire.model,
        messages=_messages(wire),
        stream=wire.stream,
        include_usage=True,
        tools=[Tool(name=t.name, description=t.description, parameters=t.input_schema) for t in wire.tools]
        if wire.tools
        else None,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        temperature=wire.temperature,
        top_p=wire.top_p,
        top_k=wire.top_k,
        max_tokens=wire.max_tokens,
        stop=wire.stop_sequences or None,
        user=wire.metadata.user_id if wire.metadata else None,
        passthrough=extra or None,
        passthrough_dialect="anthropic" if extra else None,
    )


# --- answers -----------------------------------------------------------------------------------

STOP_REASON: dict[FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "error": "end_turn",
}


def usage_to_wire(u: Usage) -> dict[str, int]:
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.completion_total,
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cached_input_tokens,
    }


def _tool_input(arguments: str) -> Any:
    if not arguments:
        return {}
    try:
        return msgspec.json.decode(arguments)
    except msgspec.DecodeError:
        # The upstream model produced arguments that are not JSON; pass them on rather than drop them.
        return {"_raw_arguments": arguments}


def message_id(ctx: RequestContext) -> str:
    return f"msg_{ctx.request_id}"


def render_chat(response: ChatResponse, request: ChatRequest, ctx: RequestContext) -> bytes:
    choice = response.choices[0]
    content: list[dict[str, Any]] = []
    for p in choice.message.content:
        if isinstance(p, Text):
            if p.text:
                content.append({"type": "text", "text": p.text})
        elif isinstance(p, ToolCall):
            content.append(
                {"type": "tool_use", "id": p.id, "name": p.name, "input": _tool_input(p.arguments)}
            )
    return _encode(
        {
            "id": message_id(ctx),
            "type": "message",
            "role": "assistant",
            "model": response.model,
            "content": content,
            "stop_reason": STOP_REASON[choice.finish_reason or "stop"],
            "stop_sequence": None,
            "usage": usage_to_wire(response.usage),
        }
    )


def _event(name: bytes, payload: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + _encode(payload) + b"\n\n"


class AnthropicStreamEncoder:
    """Deltas -> message_start, content_block_start/delta/stop ..., message_delta, message_stop."""

    content_type = SSE

    def __init__(self, request: ChatRequest, ctx: RequestContext, model: str) -> None:
        self._id = message_id(ctx)
        self._model = model
        self._started = False
        self._usage = Usage()
        self._block = -1  # index of the open content block, -1 for none
        self._block_kind: str | None = None
        self._tool_blocks: dict[int, int] = {}  # tool call index -> content block index
        self._stop: FinishReason = "stop"

    def _message_start(self) -> bytes:
        self._started = True
        usage = usage_to_wire(self._usage)
        usage["output_tokens"] = max(usage["output_tokens"], 1)
        return _event(
            b"message_start",
            {
                "type": "message_start",
                "message": {
                    "id": self._id,
                    "type": "message",
                    "role": "assistant",
                    "model": self._model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": usage,
                },
            },
        )

    def _close_block(self) -> bytes:
        if self._block < 0 or self._block_kind is None:
            return b""
        self._block_kind = None
        return _event(b"content_block_stop", {"type": "content_block_stop", "index": self._block})

    def _open_block(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._block += 1
        self._block_kind = kind
        return out + _event(
            b"content_block_start",
            {"type": "content_block_start", "index": self._block, "content_block": block},
        )

    def start(self) -> bytes:
        return b""

    def delta(self, d: Delta) -> bytes:
        if isinstance(d, UsageDelta):
            self._usage = self._usage.merge(d.usage)
            return b""
        if d.choice != 0:
            return b""
        out = b"" if self._started else self._message_start()
        if isinstance(d, TextDelta):
            if self._block_kind != "text":
                out += self._open_block("text", {"type": "text", "text": ""})
            return out + _event(
                b"content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": self._block,
                    "delta": {"type": "text_delta", "text": d.text},
                },
            )
        if isinstance(d, ToolCallDelta):
            if d.id is not None or d.index not in self._tool_blocks:
                out += self._open_block(
                    "tool_use",
                    {"type": "tool_use", "id": d.id or f"toolu_{d.index}", "name": d.name or "", "input": {}},
                )
                self._tool_blocks[d.index] = self._block
            if d.arguments:
                out += _event(
                    b"content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": self._tool_blocks[d.index],
                        "delta": {"type": "input_json_delta", "partial_json": d.arguments},
                    },
                )
            return out
        if isinstance(d, FinishDelta):
            self._stop = d.reason
            return out
        raise TypeError(f"unknown delta {d!r}")

    def end(self, usage: Usage) -> bytes:
        out = b"" if self._started else self._message_start()
        out += self._close_block()
        out += _event(
            b"message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": STOP_REASON[self._stop], "stop_sequence": None},
                "usage": usage_to_wire(usage),
            },
        )
        return out + _event(b"message_stop", {"type": "message_stop"})

    def error(self, exc: ModelplexError) -> bytes:
        _, body = render_error(exc)
        return b"event: error\ndata: " + body + b"\n\n"


# --- errors --------------------------------------------------------------------------------------

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def render_error(exc: ModelplexError) -> tuple[int, bytes]:
    status = exc.status
    error_type = _TYPES.get(status, "api_error")
    if isinstance(exc, StreamInterrupted):
        error_type = "api_error"
    return status, _encode({"type": "error", "error": {"type": error_type, "message": exc.message}})


class AnthropicDialect:
    name = "anthropic"

    def credential(self, scope: Scope) -> str | None:
        return bearer(scope)

    def parse_chat(self, body: bytes) -> ChatRequest:
        return parse_chat(body)

    def render_chat(self, response: ChatResponse, request: ChatRequest, ctx: RequestContext) -> bytes:
        return render_chat(response, request, ctx)

    def stream_encoder(self, request: ChatRequest, ctx: RequestContext, model: str) -> AnthropicStreamEncoder:
        return AnthropicStreamEncoder(request, ctx, model)

    def render_error(self, exc: ModelplexError) -> tuple[int, bytes]:
        return render_error(exc)


DIALECT = AnthropicDialect()
