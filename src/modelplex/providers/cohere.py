"""Cohere Chat API v2 (POST /v2/chat): canonical <-> wire, SSE stream events, tool calls.

Types, finish reasons and stream events follow the API reference and the official `cohere` SDK
(`cohere/v2/types/v2chat_stream_response.py`, `cohere/types/usage.py`). Cohere's error body is
`{"id", "message"}` with no code: errors map from the HTTP status alone (498 is Cohere's invalid
token, 499 a request the server saw cancelled). An over-long prompt is a plain 400 ("too many
tokens: ..." by message only), so context-length routing relies on the up-front size check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from modelplex.config.schema import Deployment
from modelplex.errors import (
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamMalformed,
    UpstreamServerError,
)
from modelplex.providers import errors as perr
from modelplex.providers.base import Framing, SSEEvent, Target, UpstreamRequest
from modelplex.types import (
    ChatRequest,
    ChatResponse,
    Choice,
    Delta,
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    FinishDelta,
    FinishReason,
    Image,
    Message,
    Part,
    Text,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolResult,
    Usage,
    UsageDelta,
)

API_BASE = "https://api.cohere.com"

_FINISH: dict[str, FinishReason] = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}
# A generation that failed or timed out part-way is a failed attempt, not a finished answer.
_FAILED = frozenset({"ERROR", "TIMEOUT"})

_STATUS: dict[int, type[UpstreamError]] = {
    402: UpstreamAuthError,  # payment required: the account, not the request
    498: UpstreamAuthError,
    499: UpstreamServerError,
    501: UpstreamBadRequest,  # the feature is not implemented for this model
}


# --- wire structs of what arrives ------------------------------------------------------------


class _Fn(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    id: str | None = None
    function: _Fn | None = None


class _ContentItem(msgspec.Struct):
    type: str | None = None
    text: str | None = None


class _Message(msgspec.Struct):
    content: list[_ContentItem] | _ContentItem | None = None
    tool_calls: list[_ToolCall] | _ToolCall | None = None


class _Tokens(msgspec.Struct):
    input_tokens: float | None = None
    output_tokens: float | None = None


class _Usage(msgspec.Struct):
    billed_units: _Tokens | None = None
    tokens: _Tokens | None = None
    cached_tokens: float | None = None


class _Response(msgspec.Struct):
    id: str = ""
    finish_reason: str | None = None
    message: _Message | None = None
    usage: _Usage | None = None


class _EventDelta(msgspec.Struct):
    message: _Message | None = None
    finish_reason: str | None = None
    usage: _Usage | None = None
    error: str | None = None


class _Event(msgspec.Struct):
    type: str = ""
    index: int = 0
    delta: _EventDelta | None = None


class _ErrorBody(msgspec.Struct):
    message: str | None = None


class _Embeddings(msgspec.Struct):
    float_: list[list[float]] = msgspec.field(default_factory=list, name="float")


class _Meta(msgspec.Struct):
    billed_units: _Tokens | None = None


class _EmbedResponse(msgspec.Struct):
    embeddings: _Embeddings | None = None
    meta: _Meta | None = None


_response_decoder = msgspec.json.Decoder(_Response)
_event_decoder = msgspec.json.Decoder(_Event)
_error_decoder = msgspec.json.Decoder(_ErrorBody)
_embed_decoder = msgspec.json.Decoder(_EmbedResponse)
_encode = msgspec.json.Encoder().encode


def usage_from_wire(u: _Usage | None) -> Usage:
    """Billed units are what Cohere charges (`tokens` adds its own prompt template); cached tokens
    are a part of the input. Cohere reports no cache writes, and thinking inside output."""
    if u is None:
        return Usage()
    billed, raw = u.billed_units or _Tokens(), u.tokens or _Tokens()
    prompt = int(billed.input_tokens if billed.input_tokens is not None else raw.input_tokens or 0)
    output = int(billed.output_tokens if billed.output_tokens is not None else raw.output_tokens or 0)
    cached = min(int(u.cached_tokens or 0), prompt)
    return Usage(input_tokens=prompt - cached, cached_input_tokens=cached, output_tokens=output)


def _user_content(parts: Sequence[Part]) -> str | list[dict[str, Any]]:
    if all(isinstance(p, Text) for p in parts):
        return "".join(p.text for p in parts if isinstance(p, Text))
    out: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, Text):
            out.append({"type": "text", "text": p.text})
        elif isinstance(p, Image):
            url = p.url or f"data:{p.media_type or 'image/png'};base64,{p.data}"
            out.append({"type": "image_url", "image_url": {"url": url}})
    return out


def messages(msgs: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in msgs:
        results = [p for p in m.content if isinstance(p, ToolResult)]
        for r in results:
            text = "".join(c.text for c in r.content if isinstance(c, Text))
            out.append({"role": "tool", "tool_call_id": r.tool_call_id, "content": text})
        rest = [p for p in m.content if not isinstance(p, ToolResult)]
        if results and not rest:
            continue
        if m.role == "assistant":
            msg: dict[str, Any] = {"role": "assistant"}
            text = "".join(p.text for p in rest if isinstance(p, Text))
            if text:
                msg["content"] = text
            calls = [
                {"id": p.id, "type": "function", "function": {"name": p.name, "arguments": p.arguments}}
                for p in rest
                if isinstance(p, ToolCall)
            ]
            if calls:
                msg["tool_calls"] = calls
            out.append(msg)
        elif m.role in ("system", "developer"):
            out.append({"role": "system", "content": "".join(p.text for p in rest if isinstance(p, Text))})
        else:
            out.append({"role": "user", "content": _user_content(rest)})
    return out


def _parts(message: _Message | None) -> list[Part]:
    if message is None:
        return []
    items = (
        message.content if isinstance(message.content, list) else [message.content] if message.content else []
    )
    parts: list[Part] = []
    text = "".join(i.text or "" for i in items if i.type in (None, "text"))
    if text:
        parts.append(Text(text=text))
    calls = message.tool_calls if isinstance(message.tool_calls, list) else []
    for c in calls:
        fn = c.function or _Fn()
        parts.append(ToolCall(id=c.id or "", name=fn.name or "", arguments=fn.arguments or "{}"))
    return parts


def _failed(reason: str | None, error: str | None) -> UpstreamError:
    return UpstreamServerError(
        f"generation ended with {reason}: {error or 'no detail'}", upstream_status=200, provider_code=reason
    )


@dataclass(frozen=True)
class CohereAdapter:
    name: str = "cohere"
    default_base_url: str | None = API_BASE
    framing: Framing = "sse"

    def check(self, deployment: Deployment) -> list[tuple[str, str]]:
        if deployment.api_key is None:
            return [("api_key", "provider 'cohere' needs an api_key")]
        return []

    def prepare(self, deployment: Deployment) -> Target:
        headers = {"content-type": "application/json", "accept": "application/json", **deployment.headers}
        if deployment.api_key is not None:
            headers["authorization"] = "Bearer " + deployment.api_key.get_secret_value()
        return Target(
            deployment=deployment,
            name=deployment.name,
            provider=deployment.provider,
            model=deployment.model,
            base_url=(deployment.base_url or API_BASE).rstrip("/"),
            headers=headers,
        )

    def chat_body(self, r: ChatRequest, target: Target) -> dict[str, Any]:
        body: dict[str, Any] = {"model": target.model, "messages": messages(r.messages)}
        if r.stream:
            body["stream"] = True
        tools = r.tools or []
        tc = r.tool_choice
        if tc is not None and tc.mode == "tool":
            # No way to name one tool: offer only that one, and require a call.
            tools = [t for t in tools if t.name == tc.name] or tools
        if tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "parameters": t.parameters or {"type": "object", "properties": {}},
                        **({"description": t.description} if t.description else {}),
                    },
                }
                for t in tools
            ]
            if tc is not None and tc.mode != "auto":
                body["tool_choice"] = "NONE" if tc.mode == "none" else "REQUIRED"
        rf = r.response_format
        if rf is not None and rf.type != "text":
            fmt: dict[str, Any] = {"type": "json_object"}
            if rf.type == "json_schema" and rf.schema:
                fmt["json_schema"] = rf.schema
            body["response_format"] = fmt
        for key, wire in (
            ("max_tokens", "max_tokens"),
            ("temperature", "temperature"),
            ("top_p", "p"),
            ("top_k", "k"),
            ("seed", "seed"),
            ("presence_penalty", "presence_penalty"),
            ("frequency_penalty", "frequency_penalty"),
            ("logprobs", "logprobs"),
        ):
            value = getattr(r, key)
            if value is not None:
                body[wire] = value
        if r.stop:
            body["stop_sequences"] = r.stop
        return body

    def chat_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        headers = target.headers
        if request.stream:
            headers = {**headers, "accept": "text/event-stream"}
        return UpstreamRequest(
            url=f"{target.base_url}/v2/chat",
            headers=headers,
            body=_encode(self.chat_body(request, target)),
            stream=request.stream,
        )

    def chat_response(self, body: bytes, target: Target) -> ChatResponse:
        try:
            wire = _response_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise perr.malformed("not a v2 chat response", body) from None
        if wire.finish_reason in _FAILED:
            raise _failed(wire.finish_reason, None)
        if wire.message is None:
            raise perr.malformed("v2 chat response without a message", body)
        return ChatResponse(
            id=wire.id,
            model=target.model,
            choices=[
                Choice(
                    index=0,
                    message=Message(role="assistant", content=_parts(wire.message)),
                    finish_reason=_FINISH.get(wire.finish_reason or "", "stop"),
                )
            ],
            usage=usage_from_wire(wire.usage),
        )

    def stream_parser(self, request: ChatRequest, target: Target) -> CohereStreamParser:
        return CohereStreamParser()

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        try:
            message = _error_decoder.decode(body).message or ""
        except (msgspec.DecodeError, msgspec.ValidationError):
            message = body[:300].decode("utf-8", "replace")
        return perr.build(status, headers, message, provider_code=str(status), cls=_STATUS.get(status))

    def embeddings_request(self, request: EmbeddingRequest, target: Target) -> UpstreamRequest:
        if not all(isinstance(i, str) for i in request.inputs):
            raise UpstreamBadRequest("Cohere embeddings take text inputs, not token ids.")
        body: dict[str, Any] = {
            "model": target.model,
            "texts": request.inputs,
            "input_type": "search_document",  # required by v3+ embed models; the neutral choice
            "embedding_types": ["float"],
        }
        if request.dimensions is not None:
            body["output_dimension"] = request.dimensions
        return UpstreamRequest(url=f"{target.base_url}/v2/embed", headers=target.headers, body=_encode(body))

    def embeddings_response(self, body: bytes, target: Target) -> EmbeddingResponse:
        try:
            wire = _embed_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise perr.malformed("not a v2 embed response", body) from None
        vectors = wire.embeddings.float_ if wire.embeddings is not None else []
        billed = wire.meta.billed_units if wire.meta is not None else None
        return EmbeddingResponse(
            model=target.model,
            data=[Embedding(index=i, vector=v) for i, v in enumerate(vectors)],
            usage=Usage(input_tokens=int(billed.input_tokens or 0) if billed is not None else 0),
        )


class CohereStreamParser:
    """message-start ... message-end, then `data: [DONE]`. Complete on message-end or [DONE]."""

    __slots__ = ("_done", "_tools")

    def __init__(self) -> None:
        self._tools: dict[int, int] = {}  # tool-call event index -> tool call index
        self._done = False

    def feed(self, event: SSEEvent) -> list[Delta]:
        data = event.data
        if data == "[DONE]":
            self._done = True
            return []
        if not data:
            return []
        try:
            ev = _event_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise perr.skipped(data) from None
        d = ev.delta or _EventDelta()
        message = d.message or _Message()
        if ev.type == "content-delta" and isinstance(message.content, _ContentItem) and message.content.text:
            return [TextDelta(text=message.content.text)]
        if ev.type in ("tool-call-start", "tool-call-delta") and isinstance(message.tool_calls, _ToolCall):
            fn = message.tool_calls.function or _Fn()
            if ev.type == "tool-call-start":
                index = self._tools[ev.index] = len(self._tools)
                call_id = message.tool_calls.id
                return [ToolCallDelta(index=index, id=call_id, name=fn.name, arguments=fn.arguments or "")]
            if ev.index in self._tools and fn.arguments:
                return [ToolCallDelta(index=self._tools[ev.index], arguments=fn.arguments)]
            return []
        if ev.type == "message-end":
            if d.finish_reason in _FAILED or d.error:
                raise _failed(d.finish_reason, d.error)
            self._done = True
            out: list[Delta] = [FinishDelta(reason=_FINISH.get(d.finish_reason or "", "stop"))]
            if d.usage is not None:
                out.append(UsageDelta(usage=usage_from_wire(d.usage)))
            return out
        return []  # message-start, content-start/end, tool-plan-delta, citations, debug

    def end(self) -> list[Delta]:
        if self._done:
            return []
        raise UpstreamMalformed("stream ended without message-end")


ADAPTER = CohereAdapter()
