"""The OpenAI dialect inbound: Chat Completions and Embeddings requests, answers, streams, errors."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from modelplex.context import RequestContext
from modelplex.errors import (
    AllAttemptsFailed,
    InvalidRequest,
    LimitExceeded,
    ModelplexError,
    StreamInterrupted,
)
from modelplex.server.dialect import bearer, decode_error
from modelplex.server.http import SSE, Scope
from modelplex.types import (
    ChatRequest,
    ChatResponse,
    Delta,
    EmbeddingRequest,
    EmbeddingResponse,
    FinishDelta,
    Image,
    Message,
    Part,
    ResponseFormat,
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


class _TextPart(msgspec.Struct, tag="text", tag_field="type", gc=False):
    text: str


class _ImageURL(msgspec.Struct, gc=False):
    url: str
    detail: str | None = None


class _ImagePart(msgspec.Struct, tag="image_url", tag_field="type", gc=False):
    image_url: _ImageURL


_Part = _TextPart | _ImagePart


class _Fn(msgspec.Struct, gc=False):
    name: str
    arguments: str = ""


class _ToolCall(msgspec.Struct, gc=False):
    id: str
    function: _Fn
    type: Literal["function"] = "function"


class _Message(msgspec.Struct, gc=False):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_Part] | None = None
    name: str | None = None
    tool_calls: list[_ToolCall] | None = None
    tool_call_id: str | None = None
    refusal: str | None = None


class _FnDef(msgspec.Struct, gc=False):
    name: Annotated[str, Meta(min_length=1, max_length=128)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class _ToolDef(msgspec.Struct, gc=False):
    function: _FnDef
    type: Literal["function"] = "function"


class _NamedFn(msgspec.Struct, gc=False):
    name: str


class _ToolChoiceObj(msgspec.Struct, gc=False):
    function: _NamedFn
    type: Literal["function"] = "function"


class _JsonSchema(msgspec.Struct, gc=False):
    name: str
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class _ResponseFormat(msgspec.Struct, gc=False):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: _JsonSchema | None = None


class _StreamOptions(msgspec.Struct, gc=False):
    include_usage: bool = False


Temperature = Annotated[float, Meta(ge=0, le=2)]
Penalty = Annotated[float, Meta(ge=-2, le=2)]
PositiveInt = Annotated[int, Meta(ge=1)]


class _ChatRequest(msgspec.Struct, gc=False):
    model: Annotated[str, Meta(min_length=1)]
    messages: Annotated[list[_Message], Meta(min_length=1)]
    stream: bool = False
    stream_options: _StreamOptions | None = None
    tools: list[_ToolDef] | None = None
    tool_choice: Literal["auto", "none", "required"] | _ToolChoiceObj | None = None
    parallel_tool_calls: bool | None = None
    response_format: _ResponseFormat | None = None
    temperature: Temperature | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    stop: str | Annotated[list[str], Meta(max_length=4)] | None = None
    n: Annotated[int, Meta(ge=1, le=128)] = 1
    seed: int | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None


_KNOWN = frozenset(_ChatRequest.__struct_fields__)
_decode_any = msgspec.json.Decoder()
_encode = msgspec.json.Encoder().encode


def _parts(content: str | list[_Part] | None) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [Text(text=content)]
    out: list[Part] = []
    for p in content:
        if isinstance(p, _TextPart):
            out.append(Text(text=p.text))
        else:
            out.append(_image(p.image_url))
    return out


def _image(img: _ImageURL) -> Image:
    url = img.url
    if url.startswith("data:"):
        header, _, data = url[5:].partition(",")
        media_type = header.split(";", 1)[0] or None
        return Image(data=data, media_type=media_type, detail=img.detail)
    return Image(url=url, detail=img.detail)


def _message(i: int, m: _Message) -> Message:
    if m.role == "tool":
        if not m.tool_call_id:
            raise InvalidRequest(
                f"messages[{i}]: a tool message needs tool_call_id.", param=f"messages[{i}].tool_call_id"
            )
        texts = [p for p in _parts(m.content) if isinstance(p, Text | Image)]
        return Message(role="tool", content=[ToolResult(tool_call_id=m.tool_call_id, content=texts)])
    parts = _parts(m.content)
    if m.role == "assistant":
        if not parts and m.refusal:
            parts = [Text(text=m.refusal)]
        for tc in m.tool_calls or ():
            parts.append(ToolCall(id=tc.id, name=tc.function.name, arguments=tc.function.arguments))
    elif m.tool_calls:
        raise InvalidRequest(
            f"messages[{i}]: only assistant messages carry tool_calls.", param=f"messages[{i}].tool_calls"
        )
    return Message(role=m.role, content=parts, name=m.name)


def parse_chat(body: bytes) -> ChatRequest:
    try:
        raw = _decode_any.decode(body)
        if not isinstance(raw, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        wire = msgspec.convert(raw, _ChatRequest)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError) as exc:
        raise decode_error(exc) from None
    extra = {k: v for k, v in raw.items() if k not in _KNOWN}
    tools = (
        [
            Tool(
                name=t.function.name,
                description=t.function.description,
                parameters=t.function.parameters or {},
                strict=t.function.strict,
            )
            for t in wire.tools
        ]
        if wire.tools
        else None
    )
    choice: ToolChoice | None = None
    if isinstance(wire.tool_choice, str):
        choice = ToolChoice(mode=wire.tool_choice)
    elif wire.tool_choice is not None:
        choice = ToolChoice(mode="tool", name=wire.tool_choice.function.name)
    rf: ResponseFormat | None = None
    if wire.response_format is not None:
        f = wire.response_format
        if f.type == "json_schema":
            if f.json_schema is None:
                raise InvalidRequest(
                    "response_format json_schema needs a json_schema object.",
                    param="response_format.json_schema",
                )
            rf = ResponseFormat(
                type="json_schema",
                name=f.json_schema.name,
                schema=f.json_schema.schema,
                strict=f.json_schema.strict,
            )
        else:
            rf = ResponseFormat(type=f.type)
    return ChatRequest(
        model=wire.model,
        messages=[_message(i, m) for i, m in enumerate(wire.messages)],
        stream=wire.stream,
        include_usage=bool(wire.stream_options and wire.stream_options.include_usage),
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=wire.parallel_tool_calls,
        response_format=rf,
        temperature=wire.temperature,
        top_p=wire.top_p,
        max_tokens=wire.max_completion_tokens if wire.max_completion_tokens is not None else wire.max_tokens,
        stop=[wire.stop] if isinstance(wire.stop, str) else wire.stop,
        n=wire.n,
        seed=wire.seed,
        presence_penalty=wire.presence_penalty,
        frequency_penalty=wire.frequency_penalty,
        logprobs=wire.logprobs,
        top_logprobs=wire.top_logprobs,
        user=wire.user,
        metadata=wire.metadata,
        passthrough=extra or None,
        passthrough_dialect="openai" if extra else None,
    )


# --- answers -----------------------------------------------------------------------------------


def usage_to_wire(u: Usage) -> dict[str, Any]:
    prompt, completion = u.prompt_total, u.completion_total
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {
            "cached_tokens": u.cached_input_tokens,
            "cache_write_tokens": u.cache_write_tokens,
        },
        "completion_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
    }


def response_id(ctx: RequestContext) -> str:
    return f"chatcmpl-{ctx.request_id}"


def render_chat(response: ChatResponse, request: ChatRequest, ctx: RequestContext) -> bytes:
    choices = []
    for c in response.choices:
        text = "".join(p.text for p in c.message.content if isinstance(p, Text))
        calls = [
            {"id": p.id, "type": "function", "function": {"name": p.name, "arguments": p.arguments}}
            for p in c.message.content
            if isinstance(p, ToolCall)
        ]
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text or (None if calls else ""),
            "refusal": None,
        }
        if calls:
            message["tool_calls"] = calls
        choices.append(
            {"index": c.index, "message": message, "logprobs": c.logprobs, "finish_reason": c.finish_reason}
        )
    return _encode(
        {
            "id": response_id(ctx),
            "object": "chat.completion",
            "created": response.created or int(ctx.wall_started),
            "model": response.model,
            "choices": choices,
            "usage": usage_to_wire(response.usage),
            "system_fingerprint": response.system_fingerprint,
        }
    )


class OpenAIStreamEncoder:
    """Canonical deltas -> `chat.completion.chunk` events, ending in `[DONE]` only on success."""

    content_type = SSE

    def __init__(self, request: ChatRequest, ctx: RequestContext, model: str) -> None:
        head = _encode(
            {
                "id": response_id(ctx),
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
            }
        )
        # Each event is this prefix, the choices array, and the suffix: only choices are encoded.
        self._prefix = b"data: " + head[:-1] + b',"choices":'
        self._include_usage = request.include_usage
        self._n = max(request.n, 1)

    def _event(self, choices: list[dict[str, Any]], extra: bytes = b"") -> bytes:
        return self._prefix + _encode(choices) + extra + b"}\n\n"

    def start(self) -> bytes:
        return b"".join(
            self._event(
                [
                    {
                        "index": i,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
            for i in range(self._n)
        )

    def delta(self, d: Delta) -> bytes:
        if isinstance(d, TextDelta):
            return self._event(
                [
                    {
                        "index": d.choice,
                        "delta": {"content": d.text},
                        "logprobs": d.logprobs,
                        "finish_reason": None,
                    }
                ]
            )
        if isinstance(d, ToolCallDelta):
            call: dict[str, Any] = {"index": d.index}
            if d.id is not None:
                call["id"] = d.id
                call["type"] = "function"
            fn: dict[str, Any] = {"arguments": d.arguments}
            if d.name is not None:
                fn["name"] = d.name
            call["function"] = fn
            return self._event(
                [
                    {
                        "index": d.choice,
                        "delta": {"tool_calls": [call]},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
        if isinstance(d, FinishDelta):
            return self._event(
                [{"index": d.choice, "delta": {}, "logprobs": None, "finish_reason": d.reason}]
            )
        if isinstance(d, UsageDelta):
            return b""
        raise TypeError(f"unknown delta {d!r}")

    def end(self, usage: Usage) -> bytes:
        tail = b""
        if self._include_usage:
            tail = self._event([], b',"usage":' + _encode(usage_to_wire(usage)))
        return tail + b"data: [DONE]\n\n"

    def error(self, exc: ModelplexError) -> bytes:
        _, body = render_error(exc)
        return b"data: " + body + b"\n\n"


# --- errors --------------------------------------------------------------------------------------

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def render_error(exc: ModelplexError) -> tuple[int, bytes]:
    status = exc.status
    error_type = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    code: str | None = exc.code
    if isinstance(exc, StreamInterrupted):
        error_type = "server_error"
    if isinstance(exc, LimitExceeded | AllAttemptsFailed) and status == 429:
        error_type = "rate_limit_error"
    param = getattr(exc, "param", None)
    return status, _encode(
        {"error": {"message": exc.message, "type": error_type, "param": param, "code": code}}
    )


# --- embeddings and models -------------------------------------------------------------------


class _EmbeddingRequest(msgspec.Struct, gc=False):
    model: Annotated[str, Meta(min_length=1)]
    input: str | Annotated[list[Any], Meta(min_length=1)]
    dimensions: PositiveInt | None = None
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None


_embedding_decoder = msgspec.json.Decoder(_EmbeddingRequest)


def _embedding_inputs(value: str | list[Any]) -> list[str] | list[list[int]]:
    """A string, a list of strings, a list of token ids, or a list of token-id lists."""
    if isinstance(value, str):
        return [value]
    if all(isinstance(v, str) for v in value):
        return list(value)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [list(value)]
    if all(
        isinstance(v, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in v) for v in value
    ):
        return [list(v) for v in value]
    raise InvalidRequest("input must be a string, a list of strings, or token ids.", param="input")


def parse_embeddings(body: bytes) -> EmbeddingRequest:
    try:
        wire = _embedding_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError) as exc:
        raise decode_error(exc) from None
    return EmbeddingRequest(
        model=wire.model,
        inputs=_embedding_inputs(wire.input),
        dimensions=wire.dimensions,
        encoding_format=wire.encoding_format,
        user=wire.user,
    )


def render_embeddings(response: EmbeddingResponse) -> bytes:
    return _encode(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": e.index, "embedding": e.vector} for e in response.data],
            "model": response.model,
            "usage": {
                "prompt_tokens": response.usage.input_tokens,
                "total_tokens": response.usage.input_tokens,
            },
        }
    )


class OpenAIDialect:
    name = "openai"

    def credential(self, scope: Scope) -> str | None:
        return bearer(scope)

    def parse_chat(self, body: bytes) -> ChatRequest:
        return parse_chat(body)

    def render_chat(self, response: ChatResponse, request: ChatRequest, ctx: RequestContext) -> bytes:
        return render_chat(response, request, ctx)

    def stream_encoder(self, request: ChatRequest, ctx: RequestContext, model: str) -> OpenAIStreamEncoder:
        return OpenAIStreamEncoder(request, ctx, model)

    def render_error(self, exc: ModelplexError) -> tuple[int, bytes]:
        return render_error(exc)


DIALECT = OpenAIDialect()
