"""A simulated OpenAI: /v1/chat/completions (JSON and SSE), /v1/embeddings, /v1/models.

Bodies follow OpenAI's API reference and the official `openai` SDK's types; the tests parse them
with that SDK, so this file and modelplex's adapter cannot share one misunderstanding.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from modelplex.simulator import content
from modelplex.simulator.core import Answer, Ask, SimRequest, SimState, respond

FINISH = {"stop": "stop", "length": "length", "tool": "tool_calls"}

_ERRORS: dict[str, tuple[int, str, str | None, str]] = {
    # kind: (status, type, code, message)
    "400": (400, "invalid_request_error", None, "Invalid request."),
    "401": (401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided: sk-***."),
    "403": (403, "invalid_request_error", "unsupported_country_region_territory", "Country not supported."),
    "404": (
        404,
        "invalid_request_error",
        "model_not_found",
        "The model does not exist or you do not have access to it.",
    ),
    "408": (408, "timeout", None, "Request timed out."),
    "413": (413, "invalid_request_error", None, "Request too large."),
    "422": (422, "invalid_request_error", None, "Unprocessable entity."),
    "429": (429, "requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    "500": (
        500,
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    "502": (502, "server_error", None, "Bad gateway."),
    "503": (503, "server_error", None, "The engine is currently overloaded, please try again later."),
    "504": (504, "server_error", None, "Gateway timeout."),
    "context_length": (
        400,
        "invalid_request_error",
        "context_length_exceeded",
        "This model's maximum context length is {limit} tokens. Please reduce the length of the messages.",
    ),
    "content_policy": (
        400,
        "invalid_request_error",
        "content_policy_violation",
        "Your request was rejected as a result of our safety system.",
    ),
    "prefill": (400, "invalid_request_error", None, "The last message cannot be from the assistant."),
}


def _usage(a: Answer) -> dict[str, Any]:
    completion = a.output + a.reasoning
    return {
        "prompt_tokens": a.input_total,
        "completion_tokens": completion,
        "total_tokens": a.input_total + completion,
        "prompt_tokens_details": {
            "cached_tokens": a.cached,
            "cache_write_tokens": a.cache_write,
            "audio_tokens": 0,
        },
        "completion_tokens_details": {
            "reasoning_tokens": a.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


class OpenAIWire:
    stream_content_type = "text/event-stream; charset=utf-8"

    def body(self, ask: Ask, answer: Answer, request_id: str) -> bytes:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(answer.tokens) or None,
            "refusal": None,
            "annotations": [],
        }
        if answer.tool is not None:
            call_id, name, args = answer.tool
            message["tool_calls"] = [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
            ]
        choices = [
            {"index": i, "message": message, "logprobs": None, "finish_reason": FINISH[answer.finish]}
            for i in range(ask.n)
        ]
        return json.dumps(
            {
                "id": f"chatcmpl-sim{request_id}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": ask.model,
                "choices": choices,
                "usage": _usage(answer),
                "service_tier": "default",
                "system_fingerprint": "fp_sim",
            }
        ).encode()

    def events(self, ask: Ask, answer: Answer, request_id: str) -> tuple[list[bytes], bytes]:
        head = {
            "id": f"chatcmpl-sim{request_id}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": ask.model,
            "system_fingerprint": "fp_sim",
        }

        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            return b"data: " + json.dumps({**head, "choices": choices, **extra}).encode() + b"\n\n"

        chunks = [
            event(
                [
                    {
                        "index": i,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                    for i in range(ask.n)
                ]
            )
        ]
        for token in answer.tokens:
            chunks.extend(
                event([{"index": i, "delta": {"content": token}, "logprobs": None, "finish_reason": None}])
                for i in range(ask.n)
            )
        if answer.tool is not None:
            call_id, name, args = answer.tool
            chunks.append(
                event(
                    [
                        {
                            "index": 0,
                            "delta": {
                                "tool_calls": [
                                    {
                                        "index": 0,
                                        "id": call_id,
                                        "type": "function",
                                        "function": {"name": name, "arguments": ""},
                                    }
                                ]
                            },
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ]
                )
            )
            for piece in content.split_in(args, 3):
                chunks.append(
                    event(
                        [
                            {
                                "index": 0,
                                "delta": {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]},
                                "logprobs": None,
                                "finish_reason": None,
                            }
                        ]
                    )
                )
        chunks.extend(
            event([{"index": i, "delta": {}, "logprobs": None, "finish_reason": FINISH[answer.finish]}])
            for i in range(ask.n)
        )
        if ask.include_usage:
            chunks.append(event([], usage=_usage(answer)))
        return chunks, b"data: [DONE]\n\n"

    def error(self, kind: str, ask: Ask | None, message: str) -> tuple[int, bytes]:
        status, etype, code, text = _ERRORS.get(
            kind, (int(kind) if kind.isdigit() else 500, "server_error", None, "Simulated error.")
        )
        text = text.format(limit=message or "8192")
        return status, json.dumps(
            {"error": {"message": text, "type": etype, "param": None, "code": code}}
        ).encode()

    def malformed(self) -> bytes:
        return b'data: {"id": "chatcmpl-broken", "choices": [\n\n'


WIRE = OpenAIWire()


def _text(content_value: Any) -> str:
    if isinstance(content_value, str):
        return content_value
    if isinstance(content_value, list):
        return "".join(p.get("text", "") for p in content_value if isinstance(p, dict))
    return ""


def read_ask(body: dict[str, Any]) -> Ask:
    messages = body.get("messages") or []
    texts = [_text(m.get("content")) for m in messages if isinstance(m, dict)]
    for m in messages:
        for tc in m.get("tool_calls") or []:
            texts.append(tc.get("function", {}).get("arguments", ""))
    users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
    tools = [
        (t["function"]["name"], t["function"].get("parameters"))
        for t in body.get("tools") or []
        if isinstance(t, dict) and "function" in t
    ]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        choice = choice.get("function", {}).get("name")
    rf = body.get("response_format") or {}
    schema = rf.get("json_schema", {}).get("schema", {}) if rf.get("type") == "json_schema" else None
    return Ask(
        model=body.get("model", ""),
        texts=texts,
        last_user=users[-1] if users else "",
        stream=bool(body.get("stream")),
        n=int(body.get("n") or 1),
        max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
        tools=tools,
        tool_choice=choice,
        after_tool_result=bool(messages) and messages[-1].get("role") == "tool",
        json_schema=schema,
        json_object=rf.get("type") == "json_object",
        include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
    )


def routes(state: SimState) -> list[web.RouteDef]:
    async def chat(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        if not request.headers.get("authorization", "").startswith("Bearer "):
            _, body = WIRE.error("401", None, "")
            return web.Response(status=401, body=body, content_type="application/json")
        try:
            data = json.loads(raw)
            ask = read_ask(data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            body = json.dumps(
                {
                    "error": {
                        "message": f"Invalid body: {exc}",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                }
            ).encode()
            return web.Response(status=400, body=body, content_type="application/json")
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
        inputs = data.get("input")
        items = [inputs] if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)) else inputs
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
        if record.outcome != "ok":
            status, body = WIRE.error(record.outcome.split(":")[0], None, "")
            return web.Response(status=status, body=body, content_type="application/json")
        dim = int(data.get("dimensions") or behaviour.embedding_dim)
        out = []
        tokens = 0
        for i, item in enumerate(items or []):
            text = item if isinstance(item, str) else " ".join(map(str, item))
            tokens += content.count_tokens(text)
            seed = content.words(text, dim)
            out.append(
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": [round((len(w) % 7) / 7.0 - 0.5, 4) for w in seed],
                }
            )
        return web.json_response(
            {
                "object": "list",
                "data": out,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def models(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "simulator"} for m in state.models
                ],
            }
        )

    return [
        web.post("/v1/chat/completions", chat),
        web.post("/v1/embeddings", embeddings),
        web.get("/v1/models", models),
    ]
