"""A simulated Gemini API: models/{model}:generateContent, :streamGenerateContent?alt=sse,
:embedContent and :batchEmbedContents, under /v1beta and /v1.

Bodies follow the Generative Language API reference and the official `google-genai` SDK's types
(camelCase JSON, google.rpc error bodies); the tests parse them with that SDK.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from modelplex.simulator import content
from modelplex.simulator.core import Answer, Ask, SimRequest, SimState, respond

FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool": "STOP"}

_ERRORS: dict[str, tuple[int, str, str]] = {
    # kind: (HTTP status, google.rpc status, message)
    "400": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "401": (401, "UNAUTHENTICATED", "Request had invalid authentication credentials."),
    "403": (403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers. Please use an API key."),
    "404": (404, "NOT_FOUND", "models/{model} is not found for API version v1beta."),
    "408": (408, "DEADLINE_EXCEEDED", "Request timed out."),
    "429": (429, "RESOURCE_EXHAUSTED", "You exceeded your current quota, please check your plan."),
    "500": (500, "INTERNAL", "An internal error has occurred. Please retry."),
    "502": (502, "UNAVAILABLE", "Bad gateway."),
    "503": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    "504": (504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
    "context_length": (
        400,
        "INVALID_ARGUMENT",
        "The input token count ({count}) exceeds the maximum number of tokens allowed ({limit}).",
    ),
    "prefill": (400, "INVALID_ARGUMENT", "Please ensure that the last turn is a user turn."),
}


def _usage(a: Answer, final: bool = True) -> dict[str, Any]:
    """promptTokenCount includes cached content; Gemini has no field for cache writes."""
    usage: dict[str, Any] = {
        "promptTokenCount": a.input_total,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": a.input_total}],
    }
    if not final:
        usage["totalTokenCount"] = a.input_total
        return usage
    usage["candidatesTokenCount"] = a.output
    usage["totalTokenCount"] = a.input_total + a.output + a.reasoning
    if a.cached:
        usage["cachedContentTokenCount"] = a.cached
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": a.cached}]
    if a.reasoning:
        usage["thoughtsTokenCount"] = a.reasoning
    return usage


def _call_part(answer: Answer) -> dict[str, Any]:
    assert answer.tool is not None
    _, name, args = answer.tool
    # Thinking models attach an opaque signature to the first function call of a step.
    return {"functionCall": {"name": name, "args": json.loads(args)}, "thoughtSignature": "c2lnbmF0dXJl"}


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\r\n\r\n"


class GeminiWire:
    stream_content_type = "text/event-stream"

    def body(self, ask: Ask, answer: Answer, request_id: str) -> bytes:
        parts: list[dict[str, Any]] = []
        if answer.tokens:
            parts.append({"text": "".join(answer.tokens)})
        if answer.tool is not None:
            parts.append(_call_part(answer))
        candidates = [
            {
                "content": {"parts": parts, "role": "model"},
                "finishReason": FINISH[answer.finish],
                "index": i,
            }
            for i in range(ask.n)
        ]
        return json.dumps(
            {
                "candidates": candidates,
                "usageMetadata": _usage(answer),
                "modelVersion": ask.model,
                "responseId": f"sim{request_id}",
            }
        ).encode()

    def events(self, ask: Ask, answer: Answer, request_id: str) -> tuple[list[bytes], bytes]:
        pieces: list[list[dict[str, Any]]] = [[{"text": t}] for t in answer.tokens]
        if answer.tool is not None:
            pieces.append([_call_part(answer)])
        if not pieces:
            pieces.append([{"text": ""}])
        chunks = []
        for i, parts in enumerate(pieces):
            last = i == len(pieces) - 1
            candidates = []
            for n in range(ask.n):
                candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": n}
                if last:
                    candidate["finishReason"] = FINISH[answer.finish]
                candidates.append(candidate)
            chunks.append(
                _sse(
                    {
                        "candidates": candidates,
                        "usageMetadata": _usage(answer, final=last),
                        "modelVersion": ask.model,
                        "responseId": f"sim{request_id}",
                    }
                )
            )
        # The stream has no terminator: it is complete when the last chunk has its finishReason.
        return chunks, b""

    def error(self, kind: str, ask: Ask | None, message: str) -> tuple[int, bytes]:
        if kind == "content_policy":
            # A blocked prompt is not an HTTP error: a 200 with promptFeedback and no candidates.
            return 200, json.dumps(
                {
                    "promptFeedback": {
                        "blockReason": "SAFETY",
                        "safetyRatings": [
                            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}
                        ],
                    },
                    "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
                    "modelVersion": ask.model if ask else "",
                }
            ).encode()
        status, rpc, text = _ERRORS.get(kind, _generic(kind))
        count = content.prompt_tokens(ask.texts) if ask else 0
        error: dict[str, Any] = {
            "code": status,
            "message": text.format(model=ask.model if ask else "", count=count, limit=message or "1048576"),
            "status": rpc,
        }
        if status == 429:
            error["details"] = [
                {
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content"}],
                },
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"},
            ]
        return status, json.dumps({"error": error}).encode()

    def malformed(self) -> bytes:
        return b'data: {"candidates": [{"content": \r\n\r\n'


def _generic(kind: str) -> tuple[int, str, str]:
    status = int(kind) if kind.isdigit() else 500
    return status, "INTERNAL" if status >= 500 else "INVALID_ARGUMENT", "Simulated error."


WIRE = GeminiWire()


def _get(d: dict[str, Any], camel: str) -> Any:
    """A field by its JSON name or its proto name: the API's proto3 JSON parser takes both, and the
    SDK sends some nested fields (e.g. `parameters_json_schema`) in snake_case."""
    if camel in d:
        return d[camel]
    return d.get("".join("_" + c.lower() if c.isupper() else c for c in camel))


def _part_text(part: dict[str, Any]) -> str:
    if "text" in part:
        return str(part["text"])
    call = _get(part, "functionCall")
    if call is not None:
        return json.dumps(call.get("args", {}))
    result = _get(part, "functionResponse")
    if result is not None:
        return json.dumps(result.get("response", {}))
    return ""


def _lower_types(schema: Any) -> Any:
    """responseSchema (OpenAPI subset) spells types in capitals; JSON Schema in lower case."""
    if isinstance(schema, dict):
        return {
            k: (v.lower() if k == "type" and isinstance(v, str) else _lower_types(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_lower_types(v) for v in schema]
    return schema


def read_ask(body: dict[str, Any], model: str, stream: bool) -> Ask:
    wire_contents = body.get("contents") or []
    system = _get(body, "systemInstruction") or {}
    system_text = "".join(_part_text(p) for p in system.get("parts") or [])
    texts = ([system_text] if system_text else []) + [
        "".join(_part_text(p) for p in c.get("parts") or []) for c in wire_contents
    ]
    users = [
        "".join(_part_text(p) for p in c.get("parts") or [])
        for c in wire_contents
        if c.get("role", "user") == "user"
    ]
    last = wire_contents[-1] if wire_contents else {}
    last_parts = last.get("parts") or []
    tools = [
        (d["name"], _get(d, "parametersJsonSchema") or _lower_types(d.get("parameters")))
        for t in body.get("tools") or []
        for d in _get(t, "functionDeclarations") or []
    ]
    calling = _get(_get(body, "toolConfig") or {}, "functionCallingConfig") or {}
    allowed = _get(calling, "allowedFunctionNames") or []
    mode = calling.get("mode", "AUTO")
    tool_choice = {"AUTO": "auto", "NONE": "none"}.get(mode, allowed[0] if len(allowed) == 1 else "required")
    config = _get(body, "generationConfig") or {}
    json_mode = _get(config, "responseMimeType") == "application/json"
    schema = _get(config, "responseJsonSchema") or _lower_types(_get(config, "responseSchema"))
    prefill = None
    if last.get("role") == "model" and not any(_get(p, "functionCall") for p in last_parts):
        prefill = "".join(_part_text(p) for p in last_parts)
    return Ask(
        model=model,
        texts=texts,
        last_user=users[-1] if users else "",
        stream=stream,
        n=int(_get(config, "candidateCount") or 1),
        max_tokens=_get(config, "maxOutputTokens"),
        tools=tools,
        tool_choice=tool_choice,
        after_tool_result=any(_get(p, "functionResponse") for p in last_parts),
        json_schema=schema if json_mode else None,
        json_object=json_mode and not schema,
        prefill=prefill,
    )


def _error(status: int, rpc: str, message: str) -> web.Response:
    body = json.dumps({"error": {"code": status, "message": message, "status": rpc}}).encode()
    return web.Response(status=status, body=body, content_type="application/json")


def _vector(text: str, dim: int) -> list[float]:
    return [round((len(w) % 7) / 7.0 - 0.5, 4) for w in content.words(text, dim)]


def routes(state: SimState) -> list[web.RouteDef]:
    async def model_method(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        if not request.headers.get("x-goog-api-key") and not request.query.get("key"):
            status, rpc, text = _ERRORS["403"]
            return _error(status, rpc, text)
        model, _, method = request.match_info["target"].rpartition(":")
        if method not in ("generateContent", "streamGenerateContent", "embedContent", "batchEmbedContents"):
            return _error(404, "NOT_FOUND", f"Method not found: {method}")
        try:
            data = json.loads(raw)
            if method.endswith("EmbedContents") or method == "embedContent":
                return _embed(state, request, model, method, data, raw)
            ask = read_ask(data, model, stream=method == "streamGenerateContent")
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
            return _error(400, "INVALID_ARGUMENT", f"Invalid JSON payload received: {exc!r}")
        if ask.stream and request.query.get("alt") != "sse":
            return _error(400, "INVALID_ARGUMENT", "This simulator streams with alt=sse only.")
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

    return [
        web.post("/v1beta/models/{target}", model_method),
        web.post("/v1/models/{target}", model_method),
    ]


def _embed(
    state: SimState, request: web.Request, model: str, method: str, data: dict[str, Any], raw: bytes
) -> web.Response:
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
    items = data["requests"] if method == "batchEmbedContents" else [data]
    vectors = []
    for item in items:
        text = "".join(_part_text(p) for p in item["content"].get("parts") or [])
        dim = int(_get(item, "outputDimensionality") or behaviour.embedding_dim)
        vectors.append({"values": _vector(text, dim)})
    if method == "embedContent":
        return web.json_response({"embedding": vectors[0]})
    return web.json_response({"embeddings": vectors})
