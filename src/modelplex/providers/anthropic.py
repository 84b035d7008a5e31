"""Anthropic Messages API: canonical <-> wire, streaming events, tool use, prompt-caching usage.

Errors map from the structured `error.type`. Anthropic has no structured code for "prompt is too
long" (it is an `invalid_request_error` told apart only by its message), so this adapter reports
it as a plain bad request; context-window routing relies on the up-front size check instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from modelplex.config.schema import Deployment
from modelplex.errors import (
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamMalformed,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamServerError,
)
from modelplex.providers import errors as perr
from modelplex.providers.base import Framing, SSEEvent, Target, UpstreamRequest
from modelplex.types import (
    ChatRequest,
    ChatResponse,
    Choice,
    Delta,
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
    Usage,
    UsageDelta,
)

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096

_STOP: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

_ERROR_TYPES: dict[str, type[UpstreamError]] = {
    "invalid_request_error": UpstreamBadRequest,
    "request_too_large": UpstreamBadRequest,
    "authentication_error": UpstreamAuthError,
    "permission_error": UpstreamAuthError,
    "billing_error": UpstreamAuthError,
    "not_found_error": UpstreamNotFound,
    "rate_limit_error": UpstreamRateLimited,
    "api_error": UpstreamServerError,
    "overloaded_error": UpstreamServerError,
    "timeout_error": UpstreamServerError,
}


# --- wire structs of what arrives ------------------------------------------------------------


class _OutputDetails(msgspec.Struct, gc=False):
    thinking_tokens: int | None = None


class _Usage(msgspec.Struct, gc=False):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None
    output_tokens_details: _OutputDetails | None = None


class _Block(msgspec.Struct, gc=False):
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None


class _Message(msgspec.Struct, gc=False):
    id: str = ""
    model: str = ""
    content: list[_Block] = []
    stop_reason: str | None = None
    usage: _Usage | None = None


class _ErrorBody(msgspec.Struct, gc=False):
    type: str = "api_error"
    message: str = ""


class _ErrorEnvelope(msgspec.Struct, gc=False):
    error: _ErrorBody | None = None


class _Delta(msgspec.Struct, gc=False):
    type: str | None = None
    text: str | None = None
    partial_json: str | None = None
    stop_reason: str | None = None


class _Event(msgspec.Struct, gc=False):
    type: str
    index: int = 0
    message: _Message | None = None
    content_block: _Block | None = None
    delta: _Delta | None = None
    usage: _Usage | None = None
    error: _ErrorBody | None = None


_message_decoder = msgspec.json.Decoder(_Message)
_event_decoder = msgspec.json.Decoder(_Event)
_error_decoder = msgspec.json.Decoder(_ErrorEnvelope)
_encode = msgspec.json.Encoder().encode


def usage_from_wire(u: _Usage | None) -> Usage:
    if u is None:
        return Usage()
    output = u.output_tokens or 0
    thinking = 0
    if u.output_tokens_details is not None and u.output_tokens_details.thinking_tokens:
        thinking = min(u.output_tokens_details.thinking_tokens, output)
    return Usage(
        input_tokens=u.input_tokens or 0,
        output_tokens=output - thinking,
        cached_input_tokens=u.cache_read_input_tokens or 0,
        cache_write_tokens=u.cache_creation_input_tokens or 0,
        reasoning_tokens=thinking,
    )


def _image(p: Image) -> dict[str, Any]:
    if p.url:
        return {"type": "image", "source": {"type": "url", "url": p.url}}
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": p.media_type or "image/png", "data": p.data or ""},
    }


def _text(p: Text) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": p.text}
    if p.cache_control:
        block["cache_control"] = p.cache_control
    return block


def _tool_input(arguments: str) -> Any:
    try:
        value = msgspec.json.decode(arguments) if arguments else {}
    except msgspec.DecodeError:
        return {"_raw_arguments": arguments}
    return value if isinstance(value, dict) else {"value": value}


def _blocks(parts: list[Part]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, Text):
            if p.text:
                out.append(_text(p))
        elif isinstance(p, Image):
            out.append(_image(p))
        elif isinstance(p, ToolCall):
            out.append({"type": "tool_use", "id": p.id, "name": p.name, "input": _tool_input(p.arguments)})
        else:
            content = [_text(c) if isinstance(c, Text) else _image(c) for c in p.content]
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": p.tool_call_id, "content": content}
            if p.is_error:
                block["is_error"] = True
            out.append(block)
    return out


def _messages(messages: list[Message]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, messages). Tool results join the following user turn; same-role turns merge."""
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role in ("system", "developer"):
            system.extend(_text(p) for p in m.content if isinstance(p, Text))
            continue
        role = "assistant" if m.role == "assistant" else "user"
        blocks = _blocks(m.content)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return system, out


@dataclass(frozen=True)
class AnthropicAdapter:
    name: str = "anthropic"
    default_base_url: str | None = "https://api.anthropic.com"
    framing: Framing = "sse"

    def check(self, deployment: Deployment) -> list[tuple[str, str]]:
        if deployment.api_key is None:
            return [("api_key", "provider 'anthropic' needs an api_key")]
        return []

    def prepare(self, deployment: Deployment) -> Target:
        headers = {
            "content-type": "application/json",
            "anthropic-version": deployment.api_version or API_VERSION,
            **deployment.headers,
        }
        if deployment.api_key is not None:
            headers["x-api-key"] = deployment.api_key.get_secret_value()
        return Target(
            deployment=deployment,
            name=deployment.name,
            provider=deployment.provider,
            model=deployment.model,
            base_url=(deployment.base_url or self.default_base_url or "").rstrip("/"),
            headers=headers,
        )

    def chat_body(self, r: ChatRequest, target: Target) -> dict[str, Any]:
        system, messages = _messages(r.messages)
        max_tokens = r.max_tokens or target.deployment.capabilities.max_output_tokens or DEFAULT_MAX_TOKENS
        body: dict[str, Any] = {"model": target.model, "messages": messages, "max_tokens": max_tokens}
        if r.response_format is not None and r.response_format.type != "text":
            # No JSON mode in the Messages API: ask for it in the system prompt.
            schema = r.response_format.schema
            instruction = "Respond with a single JSON object and nothing else."
            if schema:
                instruction += " It must match this JSON schema: " + _encode(schema).decode()
            system.append({"type": "text", "text": instruction})
        if system:
            plain = all(set(b) == {"type", "text"} for b in system)
            body["system"] = "\n\n".join(b["text"] for b in system) if plain and len(system) == 1 else system
        if r.stream:
            body["stream"] = True
        if r.tools:
            body["tools"] = [
                {
                    "name": t.name,
                    "input_schema": t.parameters or {"type": "object", "properties": {}},
                    **({"description": t.description} if t.description else {}),
                }
                for t in r.tools
            ]
            choice: dict[str, Any] | None = None
            if r.tool_choice is not None:
                mode = r.tool_choice.mode
                choice = {"type": {"auto": "auto", "required": "any", "tool": "tool", "none": "none"}[mode]}
                if mode == "tool":
                    choice["name"] = r.tool_choice.name
            if r.parallel_tool_calls is False:
                choice = choice or {"type": "auto"}
                choice["disable_parallel_tool_use"] = True
            if choice is not None:
                body["tool_choice"] = choice
        if r.temperature is not None:
            body["temperature"] = min(r.temperature, 1.0)  # OpenAI's range is 0-2, Anthropic's 0-1
        if r.top_p is not None:
            body["top_p"] = r.top_p
        if r.top_k is not None:
            body["top_k"] = r.top_k
        if r.stop:
            body["stop_sequences"] = r.stop
        if r.user:
            body["metadata"] = {"user_id": r.user}
        if r.passthrough and r.passthrough_dialect == "anthropic":
            for key, value in r.passthrough.items():
                body.setdefault(key, value)
        return body

    def chat_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        return UpstreamRequest(
            url=f"{target.base_url}/v1/messages",
            headers=target.headers,
            body=_encode(self.chat_body(request, target)),
            stream=request.stream,
        )

    def chat_response(self, body: bytes, target: Target) -> ChatResponse:
        try:
            wire = _message_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise perr.malformed("not a Messages API response", body) from None
        parts: list[Part] = []
        for b in wire.content:
            if b.type == "text" and b.text:
                parts.append(Text(text=b.text))
            elif b.type == "tool_use":
                parts.append(
                    ToolCall(id=b.id or "", name=b.name or "", arguments=_encode(b.input or {}).decode())
                )
        return ChatResponse(
            id=wire.id,
            model=wire.model or target.model,
            choices=[
                Choice(
                    index=0,
                    message=Message(role="assistant", content=parts),
                    finish_reason=_STOP.get(wire.stop_reason or "", "stop"),
                )
            ],
            usage=usage_from_wire(wire.usage),
        )

    def stream_parser(self, request: ChatRequest, target: Target) -> AnthropicStreamParser:
        return AnthropicStreamParser(self)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        try:
            err = _error_decoder.decode(body).error
        except (msgspec.DecodeError, msgspec.ValidationError):
            err = None
        if err is None:
            return perr.build(status, headers, body[:300].decode("utf-8", "replace"))
        return self._from_error(status, headers, err)

    def _from_error(self, status: int, headers: Mapping[str, str], err: _ErrorBody) -> UpstreamError:
        cls = _ERROR_TYPES.get(err.type)
        return perr.build(status, headers, err.message, provider_code=err.type, cls=cls)

    def embeddings_request(self, request: EmbeddingRequest, target: Target) -> UpstreamRequest:
        raise UpstreamBadRequest("Anthropic has no embeddings API.")

    def embeddings_response(self, body: bytes, target: Target) -> EmbeddingResponse:
        raise UpstreamBadRequest("Anthropic has no embeddings API.")


class AnthropicStreamParser:
    """message_start ... message_stop -> deltas. Complete on message_stop or a stop_reason."""

    __slots__ = ("_adapter", "_done", "_stopped", "_tools")

    def __init__(self, adapter: AnthropicAdapter) -> None:
        self._adapter = adapter
        self._tools: dict[int, int] = {}  # content block index -> tool call index
        self._stopped = False
        self._done = False

    def feed(self, event: SSEEvent) -> list[Delta]:
        if not event.data:
            return []
        try:
            ev = _event_decoder.decode(event.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise perr.skipped(event.data) from None
        kind = ev.type
        if kind == "content_block_delta" and ev.delta is not None:
            d = ev.delta
            if d.type == "text_delta" and d.text:
                return [TextDelta(text=d.text)]
            if d.type == "input_json_delta" and d.partial_json and ev.index in self._tools:
                return [ToolCallDelta(index=self._tools[ev.index], arguments=d.partial_json)]
            return []
        if kind == "content_block_start" and ev.content_block is not None:
            block = ev.content_block
            if block.type == "tool_use":
                self._tools[ev.index] = len(self._tools)
                return [
                    ToolCallDelta(index=self._tools[ev.index], id=block.id, name=block.name, arguments="")
                ]
            if block.type == "text" and block.text:
                return [TextDelta(text=block.text)]
            return []
        if kind == "message_start" and ev.message is not None:
            u = usage_from_wire(ev.message.usage)
            # message_start's output count is a placeholder; the final one comes in message_delta.
            return [
                UsageDelta(
                    usage=Usage(
                        input_tokens=u.input_tokens,
                        cached_input_tokens=u.cached_input_tokens,
                        cache_write_tokens=u.cache_write_tokens,
                    )
                )
            ]
        if kind == "message_delta":
            out: list[Delta] = []
            if ev.delta is not None and ev.delta.stop_reason:
                self._stopped = True
                out.append(FinishDelta(reason=_STOP.get(ev.delta.stop_reason, "stop")))
            if ev.usage is not None:
                out.append(UsageDelta(usage=usage_from_wire(ev.usage)))
            return out
        if kind == "message_stop":
            self._done = True
            return []
        if kind == "error":
            err = ev.error or _ErrorBody()
            raise self._adapter._from_error(500 if err.type != "overloaded_error" else 529, {}, err)
        return []  # ping, content_block_stop, unknown future events

    def end(self) -> list[Delta]:
        if self._done or self._stopped:
            return []
        raise UpstreamMalformed("stream ended without message_stop or a stop_reason")


ADAPTER = AnthropicAdapter()
