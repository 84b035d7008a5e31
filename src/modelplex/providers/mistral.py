"""Mistral's chat completions: OpenAI's wire format with a few differences, as a thin subclass.

What differs (official `mistralai` SDK `client/models/chatcompletionrequest.py`, API reference):
`random_seed` for `seed`, `max_tokens`, no `user`, no `stream_options` (usage comes in the last chunk
anyway), tool_choice `any` for "required", a trailing assistant message continues only with
`prefix: true`, and tool-call ids must match ^[a-zA-Z0-9]{9}$ (other ids are refused with a 400
`invalid_function_call`, code 3280), so other providers' ids are mapped to stable 9-character ones.
Errors are a top-level `{"object": "error", "message", "type", "param", "code"}`; an unknown model
is a 400 of type `invalid_model`. An over-long prompt has no structured type (message text only).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from modelplex.errors import UpstreamError, UpstreamNotFound, UpstreamRateLimited
from modelplex.providers import errors as perr
from modelplex.providers.base import SSEEvent, Target, UpstreamRequest
from modelplex.providers.openai import OpenAIAdapter, OpenAIStreamParser
from modelplex.types import ChatRequest, ChatResponse, Delta, EmbeddingRequest

_ID = re.compile(r"[a-zA-Z0-9]{9}")
# The fields of the SDK's ChatCompletionRequest. The API refuses any other (422 extra_forbidden), so
# fields an OpenAI caller passed through, like `store` or `service_tier` values, are left out.
FIELDS = frozenset(
    {
        *("model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop", "random_seed"),
        *("metadata", "response_format", "tools", "tool_choice", "presence_penalty", "frequency_penalty"),
        *("min_tokens", "repetition_penalty", "top_k", "logprobs", "top_logprobs", "prompt_logprobs"),
        *("top_prompt_logprobs", "n", "prediction", "parallel_tool_calls", "reasoning_effort"),
        *("prompt_mode", "guardrails", "prompt_cache_key", "service_tier", "safe_prompt"),
    }
)
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Types that say more than the status; the rest (invalid_request_error, ...) follow the status.
_TYPES: dict[str, type[UpstreamError]] = {
    "invalid_model": UpstreamNotFound,  # sent as a 400
    "rate_limited": UpstreamRateLimited,
}


def tool_call_id(original: str) -> str:
    """A Mistral-valid id: kept when it already is one, else derived from a hash of the original, so
    a call and its result map to the same id in every request of a conversation."""
    if _ID.fullmatch(original):
        return original
    n = int.from_bytes(hashlib.sha256(original.encode()).digest()[:8], "big")
    out = []
    for _ in range(9):
        n, digit = divmod(n, len(_ALPHABET))
        out.append(_ALPHABET[digit])
    return "".join(out)


_CHUNKED = re.compile(rb'"content"\s*:\s*\[')


def flatten_content(raw: bytes) -> bytes:
    """Reasoning models answer with content chunks (`[{"type": "thinking", ...}, {"type": "text",
    "text": ...}]`, the SDK's ContentChunk union); keep the text so OpenAI's parser reads it."""
    if not _CHUNKED.search(raw):
        return raw
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return raw
    choices = data.get("choices") if isinstance(data, dict) else None
    for choice in choices or ():
        for key in ("message", "delta"):
            msg = choice.get(key) if isinstance(choice, dict) else None
            if isinstance(msg, dict) and isinstance(msg.get("content"), list):
                texts = [
                    c.get("text", "")
                    for c in msg["content"]
                    if isinstance(c, dict) and c.get("type") == "text"
                ]
                msg["content"] = "".join(texts)
    return msgspec.json.encode(data)


class MistralStreamParser(OpenAIStreamParser):
    __slots__ = ()

    def feed(self, event: SSEEvent) -> list[Delta]:
        if event.data and event.data != "[DONE]":
            event = SSEEvent(event.event, flatten_content(event.data.encode()).decode())
        return super().feed(event)


class _Error(msgspec.Struct):
    message: Any = None  # a string, or {"detail": [...]} for validation errors
    type: str | None = None
    code: str | int | None = None
    detail: Any = None
    error: Any = None  # an OpenAI-style envelope, from proxies in front of Mistral


_error_decoder = msgspec.json.Decoder(_Error)


@dataclass(frozen=True)
class MistralAdapter(OpenAIAdapter):
    name: str = "mistral"
    default_base_url: str | None = "https://api.mistral.ai/v1"
    max_tokens_field: str = "max_tokens"
    stream_usage: bool = False
    developer_role: bool = False
    drop_params: frozenset[str] = frozenset({"user"})
    renames: Mapping[str, str] = field(default_factory=lambda: {"seed": "random_seed"})

    def chat_body(self, r: ChatRequest, target: Target) -> dict[str, Any]:
        body = {k: v for k, v in super().chat_body(r, target).items() if k in FIELDS}
        if body.get("tool_choice") == "required":
            body["tool_choice"] = "any"
        messages: list[dict[str, Any]] = body["messages"]
        for m in messages:
            if m["role"] != "tool":
                m.pop("name", None)  # only tool messages take a name
            for call in m.get("tool_calls") or ():
                call["id"] = tool_call_id(call["id"])
            if "tool_call_id" in m:
                m["tool_call_id"] = tool_call_id(m["tool_call_id"])
        last = messages[-1] if messages else {}
        if last.get("role") == "assistant" and last.get("content") and not last.get("tool_calls"):
            last["prefix"] = True  # continue the assistant's text instead of refusing it
        return body

    def chat_response(self, body: bytes, target: Target) -> ChatResponse:
        return super().chat_response(flatten_content(body), target)

    def stream_parser(self, request: ChatRequest, target: Target) -> MistralStreamParser:
        return MistralStreamParser(self, request.n)

    def embeddings_request(self, request: EmbeddingRequest, target: Target) -> UpstreamRequest:
        body: dict[str, Any] = {"model": target.model, "input": request.inputs}
        if request.dimensions is not None:
            body["output_dimension"] = request.dimensions
        return UpstreamRequest(
            url=self.url(target, "embeddings"), headers=target.headers, body=msgspec.json.encode(body)
        )

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> UpstreamError:
        try:
            err = _error_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return perr.build(status, headers, body[:300].decode("utf-8", "replace"))
        if isinstance(err.error, dict):
            return super().error(status, headers, body)
        message = (
            err.message if isinstance(err.message, str) else msgspec.json.encode(err.message or err.detail)
        )
        text = message if isinstance(message, str) else message.decode()
        code = err.type or (str(err.code) if err.code is not None else None)
        return perr.build(status, headers, text, provider_code=code, cls=_TYPES.get(err.type or ""))


ADAPTER = MistralAdapter()
