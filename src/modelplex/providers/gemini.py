"""Google Gemini (Generative Language API): generateContent, streamGenerateContent?alt=sse and
batchEmbedContents, canonical <-> wire.

Errors map from the google.rpc status of the error body (`error.status`, e.g. RESOURCE_EXHAUSTED)
and its ErrorInfo reason (an invalid key is a 400 INVALID_ARGUMENT with reason API_KEY_INVALID);
a blocked prompt is a 200 whose `promptFeedback.blockReason` is set. Gemini has no structured
signal for an over-long prompt (a plain INVALID_ARGUMENT), so that is a plain bad request.
Field names and enums follow the API reference and the official `google-genai` SDK (types.py,
models.py `_GenerateContentParameters_to_mldev`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from modelplex.config.schema import Deployment
from modelplex.errors import (
    ContentPolicyViolation,
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

API_BASE = "https://generativelanguage.googleapis.com/v1beta"

# Gemini 3 rejects a replayed functionCall without the thoughtSignature it came with. The canonical
# types carry no signature, so replayed calls get the sentinel Google documents for history the
# model did not produce (ai.google.dev/gemini-api/docs/thought-signatures).
SKIP_SIGNATURE = "skip_thought_signature_validator"
# Ids this adapter made up for calls Gemini returned without one; never sent back as `id`.
_GENERATED = "gmcall_"

_FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "MODEL_ARMOR": "content_filter",
    "MALFORMED_FUNCTION_CALL": "error",
    "UNEXPECTED_TOOL_CALL": "error",
    "TOO_MANY_TOOL_CALLS": "error",
    "MALFORMED_RESPONSE": "error",
    "MISSING_THOUGHT_SIGNATURE": "error",
}

_STATUS: dict[str, type[UpstreamError]] = {
    "INVALID_ARGUMENT": UpstreamBadRequest,
    "OUT_OF_RANGE": UpstreamBadRequest,
    # "Free tier not available in your country; enable billing" (troubleshooting guide): the
    # deployment cannot serve anything, so it is treated like a credential problem.
    "FAILED_PRECONDITION": UpstreamAuthError,
    "UNAUTHENTICATED": UpstreamAuthError,
    "PERMISSION_DENIED": UpstreamAuthError,
    "NOT_FOUND": UpstreamNotFound,
    "RESOURCE_EXHAUSTED": UpstreamRateLimited,
    "INTERNAL": UpstreamServerError,
    "UNAVAILABLE": UpstreamServerError,
    "DEADLINE_EXCEEDED": UpstreamServerError,
    "ABORTED": UpstreamServerError,
    "CANCELLED": UpstreamServerError,
    "UNKNOWN": UpstreamServerError,
}
_KEY_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_SERVICE_BLOCKED"})


# --- wire structs of what arrives ------------------------------------------------------------


class _FunctionCall(msgspec.Struct, rename="camel"):
    name: str = ""
    args: Any = None
    id: str | None = None


class _Part(msgspec.Struct, rename="camel"):
    text: str | None = None
    thought: bool | None = None
    function_call: _FunctionCall | None = None


class _Content(msgspec.Struct, rename="camel"):
    parts: list[_Part] = []
    role: str | None = None


class _Candidate(msgspec.Struct, rename="camel"):
    content: _Content | None = None
    finish_reason: str | None = None
    index: int = 0


class _UsageMetadata(msgspec.Struct, rename="camel"):
    prompt_token_count: int = 0
    cached_content_token_count: int = 0
    candidates_token_count: int = 0
    thoughts_token_count: int = 0
    tool_use_prompt_token_count: int = 0


class _PromptFeedback(msgspec.Struct, rename="camel"):
    block_reason: str | None = None


class _ErrorDetail(msgspec.Struct, rename="camel"):
    reason: str | None = None
    retry_delay: str | None = None  # google.rpc.RetryInfo, e.g. "17s"


class _ErrorBody(msgspec.Struct):
    code: int = 0
    message: str = ""
    status: str | None = None
    details: list[_ErrorDetail] = []


class _Response(msgspec.Struct, rename="camel"):
    candidates: list[_Candidate] = []
    usage_metadata: _UsageMetadata | None = None
    prompt_feedback: _PromptFeedback | None = None
    model_version: str = ""
    response_id: str = ""
    error: _ErrorBody | None = None


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorBody | None = None


class _Values(msgspec.Struct):
    values: list[float] = []


class _Embeddings(msgspec.Struct):
    embeddings: list[_Values] = []


_response_decoder = msgspec.json.Decoder(_Response)
_error_decoder = msgspec.json.Decoder(_ErrorEnvelope)
_embeddings_decoder = msgspec.json.Decoder(_Embeddings)
_encode = msgspec.json.Encoder().encode


def usage_from_wire(u: _UsageMetadata | None) -> Usage:
    """promptTokenCount includes the cached content; thoughtsTokenCount is apart from candidates;
    tool-use prompt tokens (results of built-in tools fed back) are billed as input."""
    if u is None:
        return Usage()
    cached = min(u.cached_content_token_count, u.prompt_token_count)
    return Usage(
        input_tokens=u.prompt_token_count - cached + u.tool_use_prompt_token_count,
        cached_input_tokens=cached,
        output_tokens=u.candidates_token_count,
        reasoning_tokens=u.thoughts_token_count,
    )


def _arguments(arguments: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(arguments) if arguments else {}
    except msgspec.DecodeError:
        return {"_raw_arguments": arguments}
    return value if isinstance(value, dict) else {"value": value}


def _image(p: Image) -> dict[str, Any]:
    if p.data is not None:
        return {"inlineData": {"mimeType": p.media_type or "image/png", "data": p.data}}
    # fileData takes Files API URIs (and, on newer models, public URLs); no fetching happens here.
    return {"fileData": {"mimeType": p.media_type or "image/jpeg", "fileUri": p.url or ""}}


def _result(r: ToolResult, name: str) -> dict[str, Any]:
    text = "".join(c.text for c in r.content if isinstance(c, Text))
    # "Use "output" key to specify function output and "error" key to specify error details".
    response: dict[str, Any] = {"error" if r.is_error else "output": text}
    call: dict[str, Any] = {"name": name, "response": response}
    if not r.tool_call_id.startswith(_GENERATED):
        call["id"] = r.tool_call_id
    return {"functionResponse": call}


def _parts(m: Message, names: Mapping[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    signed = False
    for p in m.content:
        if isinstance(p, Text):
            if p.text:
                out.append({"text": p.text})
        elif isinstance(p, Image):
            out.append(_image(p))
        elif isinstance(p, ToolCall):
            call: dict[str, Any] = {"name": p.name, "args": _arguments(p.arguments)}
            if not p.id.startswith(_GENERATED):
                call["id"] = p.id
            part: dict[str, Any] = {"functionCall": call}
            if not signed:  # only the first call of a step carries a signature
                part["thoughtSignature"] = SKIP_SIGNATURE
                signed = True
            out.append(part)
        else:
            out.append(_result(p, names.get(p.tool_call_id, p.tool_call_id)))
    return out


def contents(messages: list[Message]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(systemInstruction parts, contents). Tool results need the function's name, which only the
    assistant turn that called it knows; same-role turns merge (tool results join the user turn)."""
    names = {p.id: p.name for m in messages for p in m.content if isinstance(p, ToolCall)}
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role in ("system", "developer"):
            system.extend({"text": p.text} for p in m.content if isinstance(p, Text) and p.text)
            continue
        role = "model" if m.role == "assistant" else "user"
        parts = _parts(m, names)
        if not parts:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["parts"].extend(parts)
        else:
            out.append({"role": role, "parts": parts})
    return system, out


def _generation_config(r: ChatRequest) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for key, wire in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("max_tokens", "maxOutputTokens"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
        ("logprobs", "responseLogprobs"),
        ("top_logprobs", "logprobs"),
    ):
        value = getattr(r, key)
        if value is not None:
            config[wire] = value
    if r.stop:
        config["stopSequences"] = r.stop
    if r.n != 1:
        config["candidateCount"] = r.n
    rf = r.response_format
    if rf is not None and rf.type != "text":
        config["responseMimeType"] = "application/json"
        if rf.type == "json_schema" and rf.schema:
            # responseJsonSchema takes JSON Schema as is; responseSchema is an OpenAPI subset.
            config["responseJsonSchema"] = rf.schema
    return config


def _tools(r: ChatRequest) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    declarations = []
    for t in r.tools or ():
        fn: dict[str, Any] = {"name": t.name}
        if t.description:
            fn["description"] = t.description
        if t.parameters:
            fn["parametersJsonSchema"] = t.parameters
        declarations.append(fn)
    tc = r.tool_choice
    if not declarations or tc is None or tc.mode == "auto":
        return [{"functionDeclarations": declarations}] if declarations else [], None
    config: dict[str, Any] = {"mode": {"none": "NONE", "required": "ANY", "tool": "ANY"}[tc.mode]}
    if tc.mode == "tool" and tc.name:
        config["allowedFunctionNames"] = [tc.name]
    return [{"functionDeclarations": declarations}], {"functionCallingConfig": config}


def _call_id(response_id: str, fc: _FunctionCall, i: int) -> str:
    """An id for a call Gemini sent without one, unique per response (responseId) and call."""
    seed = f"{response_id}:{i}:{fc.name}:{_encode(fc.args)!r}"
    return _GENERATED + hashlib.sha256(seed.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class GeminiAdapter:
    name: str = "gemini"
    default_base_url: str | None = API_BASE
    framing: Framing = "sse"

    def check(self, deployment: Deployment) -> list[tuple[str, str]]:
        if deployment.api_key is None:
            return [("api_key", "provider 'gemini' needs an api_key")]
        return []

    def prepare(self, deployment: Deployment) -> Target:
        headers = {"content-type": "application/json", **deployment.headers}
        if deployment.api_key is not None:
            headers["x-goog-api-key"] = deployment.api_key.get_secret_value()
        return Target(
            deployment=deployment,
            name=deployment.name,
            provider=deployment.provider,
            model=deployment.model,
            base_url=(deployment.base_url or API_BASE).rstrip("/"),
            headers=headers,
        )

    def url(self, target: Target, method: str) -> str:
        model = target.model if "/" in target.model else f"models/{target.model}"
        return f"{target.base_url}/{model}:{method}"

    def chat_body(self, r: ChatRequest, target: Target) -> dict[str, Any]:
        system, wire_contents = contents(r.messages)
        body: dict[str, Any] = {"contents": wire_contents}
        if system:
            body["systemInstruction"] = {"parts": system}
        tools, tool_config = _tools(r)
        if tools:
            body["tools"] = tools
        if tool_config is not None:
            body["toolConfig"] = tool_config
        config = _generation_config(r)
        if config:
            body["generationConfig"] = config
        return body

    def chat_request(self, request: ChatRequest, target: Target) -> UpstreamRequest:
        method = "streamGenerateContent?alt=sse" if request.stream else "generateContent"
        return UpstreamRequest(
            url=self.url(target, method),
            headers=target.headers,
            body=_encode(self.chat_body(request, target)),
            stream=request.stream,
        )

    def chat_response(self, body: bytes, target: Target) -> ChatResponse:
        try:
            wire = _response_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise perr.malformed("not a generateContent response", body) from None
        if wire.error is not None:
            raise self._from_error(wire.error.code or 500, {}, wire.error)
        _raise_if_blocked(wire)
        if not wire.candidates:
            raise perr.malformed("generateContent response without candidates", body)
        choices = []
        for c in wire.candidates:
            parts: list[Part] = []
            text = "".join(p.text or "" for p in _content_parts(c) if p.text and not p.thought)
            if text:
                parts.append(Text(text=text))
            calls = [p.function_call for p in _content_parts(c) if p.function_call is not None]
            parts.extend(
                ToolCall(
                    id=fc.id or _call_id(wire.response_id, fc, i),
                    name=fc.name,
                    arguments=_encode(fc.args or {}).decode(),
                )
                for i, fc in enumerate(calls)
            )
            choices.append(
                Choice(
                    index=c.index,
                    message=Message(role="assistant", content=parts),
                    finish_reason=_finish(c.finish_reason, bool(calls)),
                )
            )
        return ChatResponse(
            id=wire.response_id,
            model=wire.model_version or target.model,
            choices=choices,
            usage=usage_from_wire(wire.usage_metadata),
        )

    def stream_parser(self, request: ChatRequest, target: Target) -> GeminiStreamParser:
        return GeminiStreamParser(self, request.n)

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        try:
            err = _error_decoder.decode(body).error
        except (msgspec.DecodeError, msgspec.ValidationError):
            err = None
        if err is None:
            return perr.build(status, headers, body[:300].decode("utf-8", "replace"))
        return self._from_error(status, headers, err)

    def _from_error(self, status: int, headers: Mapping[str, str], err: _ErrorBody) -> UpstreamError:
        reasons = {d.reason for d in err.details if d.reason}
        cls = UpstreamAuthError if reasons & _KEY_REASONS else _STATUS.get(err.status or "")
        built = perr.build(status, headers, err.message, provider_code=err.status, cls=cls)
        if built.retry_after is None:
            built.retry_after = _retry_delay(err)
        return built

    def embeddings_request(self, request: EmbeddingRequest, target: Target) -> UpstreamRequest:
        model = target.model if "/" in target.model else f"models/{target.model}"
        items = []
        for text in request.inputs:
            if not isinstance(text, str):
                raise UpstreamBadRequest("Gemini embeddings take text inputs, not token ids.")
            item: dict[str, Any] = {"model": model, "content": {"parts": [{"text": text}]}}
            if request.dimensions is not None:
                item["outputDimensionality"] = request.dimensions
            items.append(item)
        return UpstreamRequest(
            url=self.url(target, "batchEmbedContents"),
            headers=target.headers,
            body=_encode({"requests": items}),
        )

    def embeddings_response(self, body: bytes, target: Target) -> EmbeddingResponse:
        try:
            wire = _embeddings_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise perr.malformed("not a batchEmbedContents response", body) from None
        # The Gemini API reports no token usage for embeddings (only Vertex AI does): the count
        # stays 0 and is marked as an estimate rather than passed off as measured.
        return EmbeddingResponse(
            model=target.model,
            data=[Embedding(index=i, vector=e.values) for i, e in enumerate(wire.embeddings)],
            usage=Usage(estimated=True),
        )


def _content_parts(c: _Candidate) -> list[_Part]:
    return c.content.parts if c.content is not None else []


def _finish(reason: str | None, called: bool) -> FinishReason:
    finish = _FINISH.get(reason or "", "stop")
    # Gemini reports STOP after function calls; callers expect tool_calls.
    return "tool_calls" if called and finish == "stop" else finish


def _raise_if_blocked(wire: _Response) -> None:
    feedback = wire.prompt_feedback
    if feedback is not None and feedback.block_reason:
        raise ContentPolicyViolation(
            f"prompt blocked: {feedback.block_reason}",
            upstream_status=200,
            provider_code=feedback.block_reason,
        )


def _retry_delay(err: _ErrorBody) -> float | None:
    for d in err.details:
        if d.retry_delay and d.retry_delay.endswith("s"):
            try:
                value = float(d.retry_delay[:-1])
            except ValueError:
                continue
            if 0 <= value <= perr.MAX_RETRY_AFTER_S:
                return value
    return None


class GeminiStreamParser:
    """Each SSE event is a whole GenerateContentResponse chunk; there is no terminator, so the
    stream is complete once every candidate has a finishReason. Function calls arrive whole."""

    __slots__ = ("_adapter", "_calls", "_candidates", "_finished")

    def __init__(self, adapter: GeminiAdapter, n: int) -> None:
        self._adapter = adapter
        self._candidates = max(n, 1)
        self._finished: set[int] = set()
        self._calls: dict[int, int] = {}  # candidate -> tool calls so far

    def feed(self, event: SSEEvent) -> list[Delta]:
        if not event.data:
            return []
        try:
            chunk = _response_decoder.decode(event.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise perr.skipped(event.data) from None
        if chunk.error is not None:
            raise self._adapter._from_error(chunk.error.code or 500, {}, chunk.error)
        _raise_if_blocked(chunk)
        out: list[Delta] = []
        finishing = False
        for c in chunk.candidates:
            for p in _content_parts(c):
                if p.text and not p.thought:
                    out.append(TextDelta(text=p.text, choice=c.index))
                elif p.function_call is not None:
                    out.append(self._call(chunk.response_id, c.index, p.function_call))
            if c.finish_reason:
                finishing = True
                self._finished.add(c.index)
                reason = _finish(c.finish_reason, self._calls.get(c.index, 0) > 0)
                out.append(FinishDelta(reason=reason, choice=c.index))
        # usageMetadata repeats in every chunk with running counts; the finishing chunk has the
        # final ones (a later chunk, if any, still wins in Usage.merge).
        if chunk.usage_metadata is not None and (finishing or self._finished):
            out.append(UsageDelta(usage=usage_from_wire(chunk.usage_metadata)))
        return out

    def _call(self, response_id: str, choice: int, fc: _FunctionCall) -> ToolCallDelta:
        i = self._calls.get(choice, 0)
        self._calls[choice] = i + 1
        return ToolCallDelta(
            index=i,
            id=fc.id or _call_id(response_id, fc, i),
            name=fc.name,
            arguments=_encode(fc.args or {}).decode(),
            choice=choice,
        )

    def end(self) -> list[Delta]:
        if len(self._finished) >= self._candidates:
            return []
        raise UpstreamMalformed("stream ended before every candidate had a finishReason")


ADAPTER = GeminiAdapter()
