"""AWS Bedrock Converse and ConverseStream: canonical <-> wire, SigV4-signed, event-stream framed.

Shapes, stop reasons and error types follow the bedrock-runtime service model (botocore
`data/bedrock-runtime/2023-09-30/service-2.json`). Errors map from the error type AWS names in the
`x-amzn-ErrorType` header (or a body `__type`), and from `:exception-type` for in-stream
exceptions. A too-long prompt is a plain ValidationException with no structured signal, and content
filtering is a stop reason (`guardrail_intervened`, `content_filtered`) rather than an error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

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
from modelplex.providers.base import BinaryEvent, Framing, Target, UpstreamRequest
from modelplex.providers.bedrock_sigv4 import Credentials, sign
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

SERVICE = "bedrock"  # the signing name; the endpoint prefix is bedrock-runtime

_STOP: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    "malformed_model_output": "error",
    "malformed_tool_use": "error",
}

_ERRORS: dict[str, type[UpstreamError]] = {
    "ValidationException": UpstreamBadRequest,
    "ConflictException": UpstreamBadRequest,
    "AccessDeniedException": UpstreamAuthError,
    "UnrecognizedClientException": UpstreamAuthError,
    "InvalidSignatureException": UpstreamAuthError,
    "IncompleteSignatureException": UpstreamAuthError,
    "MissingAuthenticationTokenException": UpstreamAuthError,
    "ExpiredTokenException": UpstreamAuthError,
    "ResourceNotFoundException": UpstreamNotFound,
    "ThrottlingException": UpstreamRateLimited,
    "ServiceQuotaExceededException": UpstreamRateLimited,
    # Retried by the SDKs, but not as throttling (service model: retryable.throttling = false).
    "ModelNotReadyException": UpstreamServerError,
    "ModelTimeoutException": UpstreamServerError,
    "ModelErrorException": UpstreamServerError,
    "ModelStreamErrorException": UpstreamServerError,
    "InternalServerException": UpstreamServerError,
    "ServiceUnavailableException": UpstreamServerError,
}
# HTTP status of the in-stream exception shapes (the service model's `error.httpStatusCode`).
_STREAM_STATUS = {
    "ValidationException": 400,
    "ThrottlingException": 429,
    "ModelStreamErrorException": 424,
    "InternalServerException": 500,
    "ServiceUnavailableException": 503,
}
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}


# --- wire structs of what arrives ------------------------------------------------------------


class _ToolUse(msgspec.Struct, rename="camel"):
    tool_use_id: str = ""
    name: str = ""
    input: Any = None


class _Block(msgspec.Struct, rename="camel"):
    text: str | None = None
    tool_use: _ToolUse | None = None


class _Message(msgspec.Struct):
    role: str = "assistant"
    content: list[_Block] = []


class _Output(msgspec.Struct):
    message: _Message | None = None


class _Usage(msgspec.Struct, rename="camel"):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0


class _Converse(msgspec.Struct, rename="camel"):
    output: _Output | None = None
    stop_reason: str | None = None
    usage: _Usage | None = None


class _ToolUseDelta(msgspec.Struct):
    input: str = ""


class _DeltaBlock(msgspec.Struct, rename="camel"):
    text: str | None = None
    tool_use: _ToolUseDelta | None = None


class _Start(msgspec.Struct, rename="camel"):
    tool_use: _ToolUse | None = None


class _StreamEvent(msgspec.Struct, rename="camel"):
    content_block_index: int = 0
    start: _Start | None = None
    delta: _DeltaBlock | None = None
    stop_reason: str | None = None
    usage: _Usage | None = None


class _ErrorBody(msgspec.Struct):
    message: str | None = None
    Message: str | None = None
    type_: str | None = msgspec.field(default=None, name="__type")
    code: str | None = None


_converse_decoder = msgspec.json.Decoder(_Converse)
_event_decoder = msgspec.json.Decoder(_StreamEvent)
_error_decoder = msgspec.json.Decoder(_ErrorBody)
_encode = msgspec.json.Encoder().encode


def usage_from_wire(u: _Usage | None) -> Usage:
    """inputTokens excludes cache reads and writes; reasoning is not reported apart."""
    if u is None:
        return Usage()
    return Usage(
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cached_input_tokens=u.cache_read_input_tokens,
        cache_write_tokens=u.cache_write_input_tokens,
    )


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(arguments) if arguments else {}
    except msgspec.DecodeError:
        return {"_raw_arguments": arguments}
    return value if isinstance(value, dict) else {"value": value}


def _image(p: Image) -> dict[str, Any]:
    if p.data is not None:
        fmt = _IMAGE_FORMATS.get((p.media_type or "image/png").lower(), "png")
        return {"image": {"format": fmt, "source": {"bytes": p.data}}}
    if p.url and p.url.startswith("s3://"):
        fmt = _IMAGE_FORMATS.get((p.media_type or "image/png").lower(), "png")
        return {"image": {"format": fmt, "source": {"s3Location": {"uri": p.url}}}}
    raise UpstreamBadRequest("Bedrock Converse takes images inline (base64) or from S3, not by URL.")


def _blocks(parts: list[Part]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in parts:
        if isinstance(p, Text):
            if p.text:  # Converse refuses blank text blocks
                out.append({"text": p.text})
        elif isinstance(p, Image):
            out.append(_image(p))
        elif isinstance(p, ToolCall):
            out.append({"toolUse": {"toolUseId": p.id, "name": p.name, "input": _tool_input(p.arguments)}})
        else:
            result: list[dict[str, Any]] = [
                {"text": c.text} if isinstance(c, Text) else _image(c)
                for c in p.content
                if not isinstance(c, Text) or c.text
            ]
            # A tool result needs a content block, and blank text is refused: say there was none.
            block: dict[str, Any] = {
                "toolUseId": p.tool_call_id,
                "content": result or [{"text": "(no output)"}],
            }
            if p.is_error:
                block["status"] = "error"
            out.append({"toolResult": block})
    return out


def messages(msgs: list[Message]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, messages). Tool results ride in user turns; same-role turns merge."""
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for m in msgs:
        if m.role in ("system", "developer"):
            system.extend({"text": p.text} for p in m.content if isinstance(p, Text) and p.text)
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


def _tool_config(r: ChatRequest) -> dict[str, Any] | None:
    specs = []
    for t in r.tools or ():
        spec: dict[str, Any] = {
            "name": t.name,
            "inputSchema": {"json": t.parameters or {"type": "object", "properties": {}}},
        }
        if t.description:
            spec["description"] = t.description
        specs.append({"toolSpec": spec})
    if not specs:
        # Converse refuses toolUse / toolResult blocks without a toolConfig: declare the tools the
        # history names, with an open schema.
        names = sorted({p.name for m in r.messages for p in m.content if isinstance(p, ToolCall)})
        specs = [{"toolSpec": {"name": n, "inputSchema": {"json": {"type": "object"}}}} for n in names]
        return {"tools": specs} if specs else None
    config: dict[str, Any] = {"tools": specs}
    tc = r.tool_choice
    # Converse has no "none": the tools stay declared (history may need them) with no choice forced.
    if tc is not None and tc.mode == "required":
        config["toolChoice"] = {"any": {}}
    elif tc is not None and tc.mode == "tool" and tc.name:
        config["toolChoice"] = {"tool": {"name": tc.name}}
    return config


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class BedrockAdapter:
    name: str = "bedrock"
    default_base_url: str | None = None  # https://bedrock-runtime.{region}.amazonaws.com
    framing: Framing = "aws-eventstream"
    # The signing time. Reading the clock is the adapter's only contact with the world.
    clock: Callable[[], datetime] = field(default=_utcnow, compare=False)

    def check(self, deployment: Deployment) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if not deployment.region:
            problems.append(("region", "provider 'bedrock' needs a region (e.g. us-east-1)"))
        has_key_id = deployment.aws_access_key_id is not None
        has_secret = deployment.aws_secret_access_key is not None
        if has_key_id != has_secret:
            field_name = "aws_secret_access_key" if has_key_id else "aws_access_key_id"
            problems.append((field_name, "aws_access_key_id and aws_secret_access_key go together"))
        if not has_key_id and not has_secret and deployment.api_key is None:
            problems.append(
                ("aws_access_key_id", "provider 'bedrock' needs AWS credentials or a Bedrock api_key")
            )
        return problems

    def prepare(self, deployment: Deployment) -> Target:
        headers = {"content-type": "application/json", **deployment.headers}
        if deployment.aws_access_key_id is None and deployment.api_key is not None:
            # A Bedrock API key is a bearer token (service model auth: smithy.api#httpBearerAuth).
            headers["authorization"] = "Bearer " + deployment.api_key.get_secret_value()
        base = deployment.base_url or f"https://bedrock-runtime.{deployment.region}.amazonaws.com"
        return Target(
            deployment=deployment,
            name=deployment.name,
            provider=deployment.provider,
            model=deployment.model,
            base_url=base.rstrip("/"),
            headers=headers,
        )

    def chat_body(self, r: ChatRequest, target: Target) -> dict[str, Any]:
        system, wire_messages = messages(r.messages)
        body: dict[str, Any] = {"messages": wire_messages}
        if system:
            body["system"] = system
        inference: dict[str, Any] = {}
        if r.max_tokens is not None:
            inference["maxTokens"] = r.max_tokens
        if r.temperature is not None:
            inference["temperature"] = min(r.temperature, 1.0)  # Converse takes 0-1
        if r.top_p is not None:
            inference["topP"] = r.top_p
        if r.stop:
            inference["stopSequences"] = r.stop
        if inference:
            body["inferenceConfig"] = inference
        tools = _tool_config(r)
        if tools is not None:
            body["toolConfig"] = tools
        rf = r.response_format
        if rf is not None and rf.type != "text":
            schema = rf.schema if rf.type == "json_schema" and rf.schema else {"type": "object"}
            # Structured output (OutputConfig.textFormat): the schema travels as a JSON string.
            definition = {"schema": _encode(schema).decode(), "name": rf.name or "response"}
            body["outputConfig"] = {
                "textFormat": {"type": "json_schema", "structure": {"jsonSchema": definition}}
            }
        return body

    def url(self, target: Target, stream: bool) -> str:
        # ':' stays as is: the HTTP client would decode %3A anyway, and SigV4 signs the path as sent.
        model = quote(target.model, safe=":")
        return f"{target.base_url}/model/{model}/{'converse-stream' if stream else 'converse'}"

    def chat_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        url = self.url(target, request.stream)
        body = _encode(self.chat_body(request, target))
        d = target.deployment
        headers = target.headers
        if d.aws_access_key_id is not None and d.aws_secret_access_key is not None:
            credentials = Credentials(
                access_key=d.aws_access_key_id.get_secret_value(),
                secret_key=d.aws_secret_access_key.get_secret_value(),
                session_token=d.aws_session_token.get_secret_value() if d.aws_session_token else None,
            )
            headers = sign(
                "POST",
                url,
                headers,
                body,
                credentials=credentials,
                region=d.region or "",
                service=SERVICE,
                now=self.clock(),
            )
        return UpstreamRequest(url=url, headers=headers, body=body, stream=request.stream)

    def chat_response(self, body: bytes, target: Target) -> ChatResponse:
        try:
            wire = _converse_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise perr.malformed("not a Converse response", body) from None
        if wire.output is None or wire.output.message is None:
            raise perr.malformed("Converse response without an output message", body)
        parts: list[Part] = []
        text = "".join(b.text for b in wire.output.message.content if b.text)
        if text:
            parts.append(Text(text=text))
        parts.extend(
            ToolCall(
                id=b.tool_use.tool_use_id,
                name=b.tool_use.name,
                arguments=_encode(b.tool_use.input or {}).decode(),
            )
            for b in wire.output.message.content
            if b.tool_use is not None
        )
        return ChatResponse(
            id="",
            model=target.model,
            choices=[
                Choice(
                    index=0,
                    message=Message(role="assistant", content=parts),
                    finish_reason=_STOP.get(wire.stop_reason or "", "stop"),
                )
            ],
            usage=usage_from_wire(wire.usage),
        )

    def stream_parser(self, request: ChatRequest, target: Target) -> BedrockStreamParser:
        return BedrockStreamParser()

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        try:
            err = _error_decoder.decode(body) if body else _ErrorBody()
        except (msgspec.DecodeError, msgspec.ValidationError):
            err = _ErrorBody(message=body[:300].decode("utf-8", "replace"))
        kind = _header(headers, "x-amzn-errortype") or err.type_ or err.code or ""
        # "ThrottlingException:http://internal.amazon.com/coral/..." or "com.amazon...#Throttling..."
        kind = kind.split(":", 1)[0].rsplit("#", 1)[-1]
        message = err.message or err.Message or ""
        return perr.build(status, headers, message, provider_code=kind or None, cls=_ERRORS.get(kind))

    def embeddings_request(self, request: EmbeddingRequest, target: Target) -> UpstreamRequest:
        raise UpstreamBadRequest("Bedrock embeddings (InvokeModel) are not supported by this adapter.")

    def embeddings_response(self, body: bytes, target: Target) -> EmbeddingResponse:
        raise UpstreamBadRequest("Bedrock embeddings (InvokeModel) are not supported by this adapter.")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    return next((v for k, v in headers.items() if k.lower() == name), None)


def _exception(kind: str, payload: bytes) -> UpstreamError:
    """An in-stream `:message-type: exception` event; its type is the member name
    (`throttlingException`), i.e. the shape name with a lower-case first letter."""
    shape = kind[:1].upper() + kind[1:]
    try:
        message = _error_decoder.decode(payload).message or ""
    except (msgspec.DecodeError, msgspec.ValidationError):
        message = payload[:300].decode("utf-8", "replace")
    status = _STREAM_STATUS.get(shape, 500)
    return perr.build(
        status, {}, message or shape, provider_code=shape, cls=_ERRORS.get(shape, UpstreamServerError)
    )


class BedrockStreamParser:
    """ConverseStream events -> deltas: messageStart, contentBlockStart/Delta/Stop, messageStop,
    metadata (usage). Complete once messageStop has arrived; metadata follows it."""

    __slots__ = ("_stopped", "_tools")

    def __init__(self) -> None:
        self._tools: dict[int, int] = {}  # content block index -> tool call index
        self._stopped = False

    def feed(self, event: BinaryEvent) -> list[Delta]:
        kind = event.headers.get(":message-type", "event")
        if kind == "exception":
            raise _exception(event.headers.get(":exception-type", "internalServerException"), event.payload)
        if kind == "error":
            code = event.headers.get(":error-code", "InternalServerException")
            message = event.headers.get(":error-message", code)
            raise perr.build(500, {}, message, provider_code=code, cls=_ERRORS.get(code, UpstreamServerError))
        name = event.headers.get(":event-type", "")
        try:
            ev = _event_decoder.decode(event.payload) if event.payload else _StreamEvent()
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise perr.skipped(event.payload) from None
        if name == "contentBlockDelta" and ev.delta is not None:
            d = ev.delta
            if d.text:
                return [TextDelta(text=d.text)]
            if d.tool_use is not None and ev.content_block_index in self._tools:
                return [ToolCallDelta(index=self._tools[ev.content_block_index], arguments=d.tool_use.input)]
            return []
        if name == "contentBlockStart" and ev.start is not None and ev.start.tool_use is not None:
            use = ev.start.tool_use
            index = self._tools[ev.content_block_index] = len(self._tools)
            return [ToolCallDelta(index=index, id=use.tool_use_id, name=use.name, arguments="")]
        if name == "messageStop":
            self._stopped = True
            return [FinishDelta(reason=_STOP.get(ev.stop_reason or "", "stop"))]
        if name == "metadata" and ev.usage is not None:
            return [UsageDelta(usage=usage_from_wire(ev.usage))]
        return []  # messageStart, contentBlockStop, reasoning and citation deltas, future events

    def end(self) -> list[Delta]:
        if self._stopped:
            return []
        raise UpstreamMalformed("stream ended without messageStop")


ADAPTER = BedrockAdapter()
