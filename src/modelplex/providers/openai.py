"""OpenAI Chat Completions and Embeddings: canonical <-> wire. Also the base of every
OpenAI-compatible vendor, which differ only in the declarative settings of `OpenAIAdapter`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from modelplex.config.schema import Deployment
from modelplex.errors import UpstreamAuthError, UpstreamError, UpstreamMalformed
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

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "model_length": "length",  # Mistral: the model's context window ran out
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "eos": "stop",  # some OpenAI-compatible servers
    "error": "error",
}

# Structured error codes (the `code` or `type` field of the error body), never message text.
_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})
_POLICY_CODES = frozenset({"content_policy_violation", "content_filter"})
_ACCOUNT_CODES = frozenset({"insufficient_quota", "billing_hard_limit_reached", "account_deactivated"})


# --- wire structs for what arrives from upstream ---------------------------------------------


class _Fn(msgspec.Struct, gc=False):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct, gc=False):
    id: str | None = None
    type: str | None = None
    function: _Fn | None = None
    index: int | None = None


class _Msg(msgspec.Struct, gc=False):
    role: str | None = None
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None
    refusal: str | None = None


class _Choice(msgspec.Struct, gc=False):
    index: int = 0
    message: _Msg | None = None
    delta: _Msg | None = None
    finish_reason: str | None = None
    logprobs: Any = None


class _PromptDetails(msgspec.Struct, gc=False):
    cached_tokens: int | None = None
    cache_write_tokens: int | None = None


class _CompletionDetails(msgspec.Struct, gc=False):
    reasoning_tokens: int | None = None


class _Usage(msgspec.Struct, gc=False):
    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None
    prompt_cache_hit_tokens: int | None = None  # DeepSeek


class _ErrorBody(msgspec.Struct, gc=False):
    message: str | None = None
    type: str | None = None
    code: str | int | None = None
    param: str | None = None


class _Completion(msgspec.Struct, gc=False):
    id: str = ""
    model: str = ""
    created: int = 0
    choices: list[_Choice] = []
    usage: _Usage | None = None
    system_fingerprint: str | None = None
    error: _ErrorBody | None = None


class _ErrorEnvelope(msgspec.Struct, gc=False):
    error: _ErrorBody | str | None = None
    message: str | None = None  # some compatible servers put it at the top level


class _EmbeddingItem(msgspec.Struct, gc=False):
    index: int
    embedding: list[float] | str


class _Embeddings(msgspec.Struct, gc=False):
    data: list[_EmbeddingItem]
    model: str = ""
    usage: _Usage | None = None


_completion_decoder = msgspec.json.Decoder(_Completion)
_error_decoder = msgspec.json.Decoder(_ErrorEnvelope)
_embeddings_decoder = msgspec.json.Decoder(_Embeddings)
_encode = msgspec.json.Encoder().encode


def usage_from_wire(u: _Usage | None) -> Usage:
    if u is None:
        return Usage()
    prompt = u.prompt_tokens or 0
    completion = u.completion_tokens or 0
    cached = written = 0
    details = u.prompt_tokens_details
    if details is not None:
        cached = details.cached_tokens or 0
        written = details.cache_write_tokens or 0
    if not cached and u.prompt_cache_hit_tokens:
        cached = u.prompt_cache_hit_tokens
    reasoning = 0
    if u.completion_tokens_details is not None and u.completion_tokens_details.reasoning_tokens:
        reasoning = u.completion_tokens_details.reasoning_tokens
    return Usage(
        input_tokens=max(prompt - cached - written, 0),
        cached_input_tokens=cached,
        cache_write_tokens=written,
        output_tokens=max(completion - reasoning, 0),
        reasoning_tokens=reasoning,
    )


def _parts_to_wire(parts: list[Part]) -> str | list[dict[str, Any]]:
    if len(parts) == 1 and isinstance(parts[0], Text):
        return parts[0].text
    out: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, Text):
            out.append({"type": "text", "text": p.text})
        elif isinstance(p, Image):
            url = p.url or f"data:{p.media_type or 'image/png'};base64,{p.data}"
            img: dict[str, Any] = {"url": url}
            if p.detail:
                img["detail"] = p.detail
            out.append({"type": "image_url", "image_url": img})
    return out


def _messages_to_wire(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        results = [p for p in m.content if isinstance(p, ToolResult)]
        out.extend(
            {"role": "tool", "tool_call_id": r.tool_call_id, "content": _parts_to_wire(list(r.content))}
            for r in results
        )
        rest: list[Part] = [p for p in m.content if not isinstance(p, ToolResult)] if results else m.content
        if results and not rest:
            continue
        if m.role == "assistant":
            text = "".join(p.text for p in rest if isinstance(p, Text))
            calls = [
                {"id": p.id, "type": "function", "function": {"name": p.name, "arguments": p.arguments}}
                for p in rest
                if isinstance(p, ToolCall)
            ]
            msg: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                msg["tool_calls"] = calls
        else:
            msg = {"role": m.role, "content": _parts_to_wire(rest)}
        if m.name:
            msg["name"] = m.name
        out.append(msg)
    return out


@dataclass(frozen=True)
class OpenAIAdapter:
    """OpenAI's wire format, with the knobs OpenAI-compatible servers differ in."""

    name: str = "openai"
    default_base_url: str | None = "https://api.openai.com/v1"
    framing: Framing = "sse"
    auth_header: str = "Authorization"
    auth_prefix: str = "Bearer "
    requires_key: bool = True
    max_tokens_field: str = "max_completion_tokens"
    stream_usage: bool = True  # does the server accept stream_options.include_usage
    developer_role: bool = True  # else `developer` messages are sent as `system`
    drop_params: frozenset[str] = frozenset()
    renames: Mapping[str, str] = field(default_factory=dict)  # canonical wire name -> vendor's
    extra_headers: Mapping[str, str] = field(default_factory=dict)

    # -- setup ---------------------------------------------------------------------------------

    def check(self, deployment: Deployment) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if self.requires_key and deployment.api_key is None:
            problems.append(("api_key", f"provider {self.name!r} needs an api_key"))
        if deployment.base_url is None and self.default_base_url is None:
            problems.append(("base_url", f"provider {self.name!r} needs a base_url"))
        return problems

    def prepare(self, deployment: Deployment) -> Target:
        headers = {"content-type": "application/json", **self.extra_headers, **deployment.headers}
        if deployment.api_key is not None:
            headers[self.auth_header] = self.auth_prefix + deployment.api_key.get_secret_value()
        base = (deployment.base_url or self.default_base_url or "").rstrip("/")
        return Target(
            deployment=deployment,
            name=deployment.name,
            provider=deployment.provider,
            model=deployment.model,
            base_url=base,
            headers=headers,
        )

    def url(self, target: Target, path: str) -> str:
        return f"{target.base_url}/{path}"

    # -- chat ----------------------------------------------------------------------------------

    def chat_body(self, r: ChatRequest, target: Target) -> dict[str, Any]:
        messages = _messages_to_wire(r.messages)
        if not self.developer_role:
            for m in messages:
                if m["role"] == "developer":
                    m["role"] = "system"
        body: dict[str, Any] = {"model": target.model, "messages": messages}
        if r.stream:
            body["stream"] = True
            if self.stream_usage:
                body["stream_options"] = {"include_usage": True}
        if r.tools:
            body["tools"] = [
                {"type": "function", "function": _tool_to_wire(t.name, t.description, t.parameters, t.strict)}
                for t in r.tools
            ]
        if r.tool_choice is not None:
            tc = r.tool_choice
            body["tool_choice"] = (
                {"type": "function", "function": {"name": tc.name}} if tc.mode == "tool" else tc.mode
            )
        if r.parallel_tool_calls is not None and r.tools:
            body["parallel_tool_calls"] = r.parallel_tool_calls
        if r.response_format is not None:
            rf = r.response_format
            if rf.type == "json_schema":
                js: dict[str, Any] = {"name": rf.name or "response", "schema": rf.schema or {}}
                if rf.strict is not None:
                    js["strict"] = rf.strict
                body["response_format"] = {"type": "json_schema", "json_schema": js}
            else:
                body["response_format"] = {"type": rf.type}
        if r.max_tokens is not None:
            body[self.max_tokens_field] = r.max_tokens
        for key in (
            "temperature",
            "top_p",
            "seed",
            "presence_penalty",
            "frequency_penalty",
            "logprobs",
            "top_logprobs",
            "user",
        ):
            value = getattr(r, key)
            if value is not None:
                body[key] = value
        if r.stop:
            body["stop"] = r.stop
        if r.n != 1:
            body["n"] = r.n
        if r.passthrough and r.passthrough_dialect == "openai":
            for key, value in r.passthrough.items():
                body.setdefault(key, value)
        for key in self.drop_params:
            body.pop(key, None)
        for key, vendor_key in self.renames.items():
            if key in body:
                body[vendor_key] = body.pop(key)
        return body

    def chat_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        return UpstreamRequest(
            url=self.url(target, "chat/completions"),
            headers=target.headers,
            body=_encode(self.chat_body(request, target)),
            stream=request.stream,
        )

    def chat_response(self, body: bytes, target: Target) -> ChatResponse:
        try:
            wire = _completion_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise perr.malformed("not a chat completion", body) from None
        if wire.error is not None:
            raise self._from_error_body(200, {}, wire.error)
        if not wire.choices:
            raise perr.malformed("chat completion without choices", body)
        choices = []
        for c in wire.choices:
            m = c.message or _Msg()
            parts: list[Part] = []
            if m.content:
                parts.append(Text(text=m.content))
            elif m.refusal:
                parts.append(Text(text=m.refusal))
            for tc in m.tool_calls or ():
                fn = tc.function or _Fn()
                parts.append(ToolCall(id=tc.id or "", name=fn.name or "", arguments=fn.arguments or ""))
            choices.append(
                Choice(
                    index=c.index,
                    message=Message(role="assistant", content=parts),
                    finish_reason=_FINISH.get(c.finish_reason or "", "stop"),
                    logprobs=c.logprobs,
                )
            )
        return ChatResponse(
            id=wire.id,
            model=wire.model or target.model,
            created=wire.created,
            choices=choices,
            usage=usage_from_wire(wire.usage),
            system_fingerprint=wire.system_fingerprint,
        )

    def stream_parser(self, request: ChatRequest, target: Target) -> OpenAIStreamParser:
        return OpenAIStreamParser(self, request.n)

    # -- errors --------------------------------------------------------------------------------

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        try:
            envelope = _error_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            envelope = _ErrorEnvelope(message=body[:500].decode("utf-8", "replace"))
        err = envelope.error
        if isinstance(err, _ErrorBody):
            return self._from_error_body(status, headers, err)
        return perr.build(status, headers, err or envelope.message or "")

    def _from_error_body(self, status: int, headers: Mapping[str, str], e: _ErrorBody) -> UpstreamError:
        code = str(e.code) if e.code is not None else None
        kinds = {code, e.type}
        return perr.build(
            status or 500,
            headers,
            e.message or "",
            provider_code=code or e.type,
            context_length=bool(kinds & _CONTEXT_CODES),
            content_policy=bool(kinds & _POLICY_CODES),
            cls=UpstreamAuthError if kinds & _ACCOUNT_CODES else None,
        )

    # -- embeddings ----------------------------------------------------------------------------

    def embeddings_request(self, request: EmbeddingRequest, target: Target) -> UpstreamRequest:
        body: dict[str, Any] = {
            "model": target.model,
            "input": request.inputs,
            "encoding_format": request.encoding_format,
        }
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        if request.user is not None:
            body["user"] = request.user
        return UpstreamRequest(url=self.url(target, "embeddings"), headers=target.headers, body=_encode(body))

    def embeddings_response(self, body: bytes, target: Target) -> EmbeddingResponse:
        try:
            wire = _embeddings_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise perr.malformed("not an embeddings response", body) from None
        usage = Usage(input_tokens=wire.usage.prompt_tokens or 0) if wire.usage else Usage()
        return EmbeddingResponse(
            model=wire.model or target.model,
            data=[Embedding(index=d.index, vector=d.embedding) for d in wire.data],
            usage=usage,
        )


def _tool_to_wire(
    name: str, description: str | None, parameters: dict[str, Any], strict: bool | None
) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": name, "parameters": parameters or {"type": "object", "properties": {}}}
    if description:
        fn["description"] = description
    if strict is not None:
        fn["strict"] = strict
    return fn


class OpenAIStreamParser:
    """chat.completion.chunk events -> deltas. Complete on `[DONE]` or a finish for every choice."""

    __slots__ = ("_adapter", "_choices", "_done", "_finished")

    def __init__(self, adapter: OpenAIAdapter, n: int) -> None:
        self._adapter = adapter
        self._choices = max(n, 1)
        self._finished: set[int] = set()
        self._done = False

    def feed(self, event: SSEEvent) -> list[Delta]:
        data = event.data
        if data == "[DONE]":
            self._done = True
            return []
        if not data:
            return []
        try:
            chunk = _completion_decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise perr.skipped(data) from None
        if chunk.error is not None:
            raise self._adapter._from_error_body(500, {}, chunk.error)
        out: list[Delta] = []
        for c in chunk.choices:
            d = c.delta
            if d is not None:
                if d.content:
                    out.append(TextDelta(text=d.content, choice=c.index, logprobs=c.logprobs))
                elif d.refusal:
                    out.append(TextDelta(text=d.refusal, choice=c.index))
                for tc in d.tool_calls or ():
                    fn = tc.function or _Fn()
                    out.append(
                        ToolCallDelta(
                            index=tc.index or 0,
                            id=tc.id,
                            name=fn.name,
                            arguments=fn.arguments or "",
                            choice=c.index,
                        )
                    )
            if c.finish_reason:
                self._finished.add(c.index)
                out.append(FinishDelta(reason=_FINISH.get(c.finish_reason, "stop"), choice=c.index))
        if chunk.usage is not None:
            out.append(UsageDelta(usage=usage_from_wire(chunk.usage)))
        return out

    def end(self) -> list[Delta]:
        if self._done or len(self._finished) >= self._choices:
            return []
        raise UpstreamMalformed("stream ended without a finish_reason or [DONE]")


ADAPTER = OpenAIAdapter()
