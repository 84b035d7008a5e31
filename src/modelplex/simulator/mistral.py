"""A simulated Mistral API: POST /v1/chat/completions and /v1/embeddings, OpenAI's shapes with
Mistral's differences.

Those differences, from the official `mistralai` SDK and the API's observed answers: usage always
rides on the last stream chunk (there is no `stream_options`, and unknown request fields are a 422
`extra_forbidden`), tool-call ids are 9 alphanumerics (others: 400 `invalid_function_call`, code
3280), a trailing assistant message needs `prefix: true`, and errors are a top-level
`{"object": "error", "message", "type", "param", "code"}`. The tests parse it with `mistralai`.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

from aiohttp import web

from modelplex.simulator import content
from modelplex.simulator.core import Answer, Ask, SimRequest, SimState, respond
from modelplex.simulator.openai import OpenAIWire
from modelplex.simulator.openai import read_ask as read_openai_ask

_ID = re.compile(r"[a-zA-Z0-9]{9}")
# The request fields of the SDK's ChatCompletionRequest; anything else is refused. Kept apart from
# the adapter's own list on purpose: the simulator shares nothing with the adapters.
_FIELDS = frozenset(
    {
        *("model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop", "random_seed"),
        *("metadata", "response_format", "tools", "tool_choice", "presence_penalty", "frequency_penalty"),
        *("min_tokens", "repetition_penalty", "top_k", "logprobs", "top_logprobs", "prompt_logprobs"),
        *("top_prompt_logprobs", "n", "prediction", "parallel_tool_calls", "reasoning_effort"),
        *("prompt_mode", "guardrails", "prompt_cache_key", "service_tier", "safe_prompt"),
    }
)
_ERRORS: dict[str, tuple[int, str | None, str | None, str]] = {
    # kind: (status, type, code, message)
    "400": (400, "invalid_request_error", None, "Invalid request."),
    "401": (401, None, None, "Unauthorized"),
    "403": (403, None, None, "Forbidden"),
    # The real API answers an unknown model with a 400 of this type; a scripted "404" keeps its status.
    "404": (404, "invalid_model", "1500", "Invalid model: {model}"),
    "422": (422, "invalid_request_error", None, "Unprocessable entity."),
    "429": (429, "rate_limited", "1300", "Rate limit exceeded"),
    "500": (500, "internal_server_error", None, "Internal server error"),
    "503": (503, "service_unavailable", None, "Service unavailable"),
    "context_length": (
        400,
        "invalid_request_error",
        None,
        "Prompt contains {count} tokens and 0 draft tokens, too large for model with {limit} maximum"
        " context length",
    ),
    "content_policy": (400, "invalid_request_error", None, "Request blocked by moderation guardrail."),
    "prefill": (
        400,
        "invalid_request_message_order",
        "3230",
        "Expected last role User or Tool but got assistant",
    ),
}


def mistral_id(call_id: str) -> str:
    return hashlib.sha256(call_id.encode()).hexdigest()[:9]


def _usage(a: Answer) -> dict[str, Any]:
    """Cached prompt tokens are a part of prompt_tokens; no cache writes; thinking inside completion."""
    completion = a.output + a.reasoning
    usage: dict[str, Any] = {
        "prompt_tokens": a.input_total,
        "completion_tokens": completion,
        "total_tokens": a.input_total + completion,
    }
    if a.cached:
        usage["prompt_tokens_details"] = {"cached_tokens": a.cached}
    return usage


def _remake(payload: dict[str, Any], answer: Answer) -> dict[str, Any]:
    """OpenAI's payload, Mistral's way: 9-character call ids, its usage, no OpenAI-only fields."""
    for key in ("service_tier", "system_fingerprint"):
        payload.pop(key, None)
    for choice in payload.get("choices") or ():
        for part in ("message", "delta"):
            msg = choice.get(part) or {}
            for key in ("refusal", "annotations"):
                msg.pop(key, None)
            for call in msg.get("tool_calls") or ():
                if "id" in call:
                    call["id"] = mistral_id(call["id"])
    if "usage" in payload:
        payload["usage"] = _usage(answer)
    return payload


class MistralWire(OpenAIWire):
    def body(self, ask: Ask, answer: Answer, request_id: str) -> bytes:
        return json.dumps(_remake(json.loads(super().body(ask, answer, request_id)), answer)).encode()

    def events(self, ask: Ask, answer: Answer, request_id: str) -> tuple[list[bytes], bytes]:
        chunks, done = super().events(ask, answer, request_id)
        payloads = [_remake(json.loads(c[len(b"data: ") :]), answer) for c in chunks]
        payloads = [p for p in payloads if p["choices"]]  # OpenAI's separate usage chunk
        payloads[-1]["usage"] = _usage(answer)  # usage rides on the last chunk, always
        return [b"data: " + json.dumps(p).encode() + b"\n\n" for p in payloads], done

    def error(self, kind: str, ask: Ask | None, message: str) -> tuple[int, bytes]:
        status, etype, code, text = _ERRORS.get(
            kind, (int(kind) if kind.isdigit() else 500, "internal_server_error", None, "Simulated error.")
        )
        count = content.prompt_tokens(ask.texts) if ask else 0
        text = text.format(model=ask.model if ask else "", count=count, limit=message or "32768")
        if etype is None:  # the gateway in front of the API answers auth failures itself
            return status, json.dumps({"message": text, "request_id": "sim"}).encode()
        return status, json.dumps(
            {"object": "error", "message": text, "type": etype, "param": None, "code": code}
        ).encode()


WIRE = MistralWire()


def _refuse(status: int, etype: str, code: str | None, message: Any) -> web.Response:
    body = {"object": "error", "message": message, "type": etype, "param": None, "code": code}
    return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json")


def _problem(body: dict[str, Any]) -> web.Response | None:
    """The checks the real API makes that an OpenAI-shaped request can fail."""
    extra = sorted(set(body) - _FIELDS)
    if extra:
        detail = [
            {"type": "extra_forbidden", "loc": ["body", k], "msg": "Extra inputs are not permitted"}
            for k in extra
        ]
        return web.Response(
            status=422, body=json.dumps({"detail": detail}).encode(), content_type="application/json"
        )
    messages = body.get("messages") or []
    for m in messages:
        ids = [c.get("id", "") for c in m.get("tool_calls") or []] + (
            [m["tool_call_id"]] if "tool_call_id" in m else []
        )
        for call_id in ids:
            if not _ID.fullmatch(call_id):
                text = f"Tool call id was {call_id} but must be a-z, A-Z, 0-9, with a length of 9."
                return _refuse(400, "invalid_function_call", "3280", text)
    last = messages[-1] if messages else {}
    if last.get("role") == "assistant" and not last.get("prefix") and not last.get("tool_calls"):
        text = "Expected last role User or Tool (or Assistant with prefix True) for serving but got assistant"
        return _refuse(400, "invalid_request_message_order", "3230", text)
    return None


def read_ask(body: dict[str, Any]) -> Ask:
    ask = read_openai_ask(body)
    ask.include_usage = True
    last = (body.get("messages") or [{}])[-1]
    if last.get("role") == "assistant" and last.get("prefix"):
        ask.prefill = last.get("content") if isinstance(last.get("content"), str) else None
    return ask


def routes(state: SimState) -> list[web.RouteDef]:
    async def chat(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        if not request.headers.get("authorization", "").startswith("Bearer "):
            _, body = WIRE.error("401", None, "")
            return web.Response(status=401, body=body, content_type="application/json")
        try:
            data = json.loads(raw)
            refused = _problem(data)
            if refused is not None:
                return refused
            ask = read_ask(data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return _refuse(400, "invalid_request_error", None, f"Invalid body: {exc}")
        _, behaviour = state.behaviour(ask.model)
        record = SimRequest(
            at=time.monotonic(),
            path=request.path,
            model=ask.model,
            stream=ask.stream,
            outcome=state.outcome(ask.model, behaviour),
            body=raw,
            headers=dict(request.headers),
        )
        state.log.append(record)
        return await respond(request, state, WIRE, ask, record)

    async def embeddings(request: web.Request) -> web.Response:
        raw = await request.read()
        data = json.loads(raw)
        items = data.get("input")
        texts = [items] if isinstance(items, str) else list(items or [])
        model = data.get("model", "")
        _, behaviour = state.behaviour(model)
        record = SimRequest(
            at=time.monotonic(),
            path=request.path,
            model=model,
            stream=False,
            outcome=state.outcome(model, behaviour),
            body=raw,
            headers=dict(request.headers),
        )
        state.log.append(record)
        record.ended = time.monotonic()
        if record.outcome != "ok":
            status, body = WIRE.error(record.outcome.split(":")[0], None, "")
            return web.Response(status=status, body=body, content_type="application/json")
        dim = int(data.get("output_dimension") or behaviour.embedding_dim)
        out = [
            {
                "object": "embedding",
                "index": i,
                "embedding": [round((len(w) % 7) / 7.0 - 0.5, 4) for w in content.words(t, dim)],
            }
            for i, t in enumerate(texts)
        ]
        tokens = sum(content.count_tokens(t) for t in texts)
        usage = {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens}
        return web.json_response(
            {"id": "embd-sim", "object": "list", "data": out, "model": model, "usage": usage}
        )

    return [web.post("/v1/chat/completions", chat), web.post("/v1/embeddings", embeddings)]
