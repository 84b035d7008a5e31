"""A simulated Cohere API v2: POST /v2/chat (JSON and SSE events ending in `data: [DONE]`) and
POST /v2/embed.

Bodies and events follow Cohere's API reference and the official `cohere` SDK's v2 types; the
tests parse them with that SDK. Errors are `{"id", "message"}` told apart by HTTP status only.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from aiohttp import web

from modelplex.simulator import content
from modelplex.simulator.core import Answer, Ask, SimRequest, SimState, respond

FINISH = {"stop": "COMPLETE", "length": "MAX_TOKENS", "tool": "TOOL_CALL"}
TEMPLATE_TOKENS = 7  # Cohere's own prompt template: counted in `tokens`, not billed

_ERRORS: dict[str, tuple[int, str]] = {
    "400": (400, "invalid request: message must be at least 1 token long or tool results must be specified."),
    "401": (401, "invalid api token"),
    "402": (402, "Please add or update your payment method to continue."),
    "403": (403, "You do not have access to this model."),
    "404": (404, "model '{model}' not found, make sure the correct model ID was used."),
    "429": (429, "You are past the rate limit for this API key. Please wait and try again."),
    "498": (498, "invalid api token"),
    "500": (500, "internal server error, this has been reported to our developers."),
    "503": (503, "service unavailable"),
    "context_length": (
        400,
        "too many tokens: total number of tokens in the prompt cannot exceed {limit} - received {count}.",
    ),
    "content_policy": (400, "blocked output: please adjust your prompt and try again."),
    "prefill": (400, "invalid request: the last message must be a user or tool message."),
}


def _usage(a: Answer) -> dict[str, Any]:
    """Billed input includes cached tokens (reported apart); thinking is inside output."""
    output = a.output + a.reasoning
    usage: dict[str, Any] = {
        "billed_units": {"input_tokens": a.input_total, "output_tokens": output},
        "tokens": {"input_tokens": a.input_total + TEMPLATE_TOKENS, "output_tokens": output},
    }
    if a.cached:
        usage["cached_tokens"] = a.cached
    return usage


def _sse(payload: dict[str, Any]) -> bytes:
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n".encode()


def _tool_call(answer: Answer) -> dict[str, Any]:
    assert answer.tool is not None
    call_id, name, args = answer.tool
    return {
        "id": name + "_" + call_id[5:13],
        "type": "function",
        "function": {"name": name, "arguments": args},
    }


class CohereWire:
    stream_content_type = "text/event-stream"

    def body(self, ask: Ask, answer: Answer, request_id: str) -> bytes:
        message: dict[str, Any] = {"role": "assistant"}
        if answer.tokens:
            message["content"] = [{"type": "text", "text": "".join(answer.tokens)}]
        if answer.tool is not None:
            message["tool_plan"] = f"I will call {answer.tool[1]}."
            message["tool_calls"] = [_tool_call(answer)]
        return json.dumps(
            {
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, request_id)),
                "message": message,
                "finish_reason": FINISH[answer.finish],
                "usage": _usage(answer),
            }
        ).encode()

    def events(self, ask: Ask, answer: Answer, request_id: str) -> tuple[list[bytes], bytes]:
        rid = str(uuid.uuid5(uuid.NAMESPACE_URL, request_id))
        start = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}
        chunks = [_sse({"id": rid, "type": "message-start", "delta": {"message": start}})]
        if answer.tokens:
            empty = {"message": {"content": {"type": "text", "text": ""}}}
            chunks.append(_sse({"type": "content-start", "index": 0, "delta": empty}))
            chunks.extend(
                _sse({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": t}}}})
                for t in answer.tokens
            )
            chunks.append(_sse({"type": "content-end", "index": 0}))
        if answer.tool is not None:
            call = _tool_call(answer)
            plan = {"message": {"tool_plan": f"I will call {answer.tool[1]}."}}
            chunks.append(_sse({"type": "tool-plan-delta", "delta": plan}))
            first = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
            chunks.append(
                _sse({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": first}}})
            )
            chunks.extend(
                _sse(
                    {
                        "type": "tool-call-delta",
                        "index": 0,
                        "delta": {"message": {"tool_calls": {"function": {"arguments": piece}}}},
                    }
                )
                for piece in content.split_in(call["function"]["arguments"], 3)
            )
            chunks.append(_sse({"type": "tool-call-end", "index": 0}))
        end = {"finish_reason": FINISH[answer.finish], "usage": _usage(answer)}
        chunks.append(_sse({"id": rid, "type": "message-end", "delta": end}))
        return chunks, b"data: [DONE]\n\n"

    def error(self, kind: str, ask: Ask | None, message: str) -> tuple[int, bytes]:
        status, text = _ERRORS.get(kind, (int(kind) if kind.isdigit() else 500, "Simulated error."))
        count = content.prompt_tokens(ask.texts) if ask else 0
        text = text.format(model=ask.model if ask else "", limit=message or "128000", count=count)
        return status, json.dumps({"id": str(uuid.uuid4()), "message": text}).encode()

    def malformed(self) -> bytes:
        return b'event: content-delta\ndata: {"type": "content-delta", "delta": \n\n'


WIRE = CohereWire()


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    out = []
    for block in value or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            out.append(block.get("text", ""))
        elif block.get("type") == "document":
            data = (block.get("document") or {}).get("data")
            out.append(data if isinstance(data, str) else json.dumps(data))
    return "".join(out)


def _message_text(m: dict[str, Any]) -> str:
    calls = [c.get("function", {}).get("arguments", "") for c in m.get("tool_calls") or []]
    return _text(m.get("content")) + "".join(calls)


def read_ask(body: dict[str, Any]) -> Ask:
    msgs = body["messages"]
    texts = [_message_text(m) for m in msgs]
    users = [_text(m.get("content")) for m in msgs if m.get("role") == "user"]
    last = msgs[-1] if msgs else {}
    rf = body.get("response_format") or {}
    choice = body.get("tool_choice")
    prefill = (
        _text(last.get("content")) if last.get("role") == "assistant" and not last.get("tool_calls") else None
    )
    return Ask(
        model=body.get("model", ""),
        texts=texts,
        last_user=users[-1] if users else "",
        stream=bool(body.get("stream")),
        max_tokens=body.get("max_tokens"),
        tools=[(t["function"]["name"], t["function"].get("parameters")) for t in body.get("tools") or []],
        tool_choice={"REQUIRED": "required", "NONE": "none"}.get(choice or "", "auto"),
        after_tool_result=last.get("role") == "tool",
        json_schema=rf.get("json_schema") if rf.get("type") == "json_object" else None,
        json_object=rf.get("type") == "json_object" and not rf.get("json_schema"),
        prefill=prefill,
    )


def _refuse(status: int, message: str) -> web.Response:
    body = json.dumps({"id": str(uuid.uuid4()), "message": message}).encode()
    return web.Response(status=status, body=body, content_type="application/json")


def routes(state: SimState) -> list[web.RouteDef]:
    def record_for(request: web.Request, model: str, stream: bool, raw: bytes) -> SimRequest:
        _, behaviour = state.behaviour(model)
        record = SimRequest(
            at=time.monotonic(),
            path=request.path,
            model=model,
            stream=stream,
            outcome=state.outcome(model, behaviour),
            body=raw,
            headers=dict(request.headers),
        )
        state.log.append(record)
        return record

    async def chat(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return _refuse(401, "no api key supplied")
        try:
            ask = read_ask(json.loads(raw))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return _refuse(400, f"invalid request: {exc!r}")
        record = record_for(request, ask.model, ask.stream, raw)
        return await respond(request, state, WIRE, ask, record)

    async def embed(request: web.Request) -> web.Response:
        raw = await request.read()
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return _refuse(401, "no api key supplied")
        data = json.loads(raw)
        model = data.get("model", "")
        record = record_for(request, model, False, raw)
        record.ended = time.monotonic()
        if record.outcome != "ok":
            status, body = WIRE.error(record.outcome.split(":")[0], None, "")
            return web.Response(status=status, body=body, content_type="application/json")
        _, behaviour = state.behaviour(model)
        texts = data.get("texts") or []
        dim = int(data.get("output_dimension") or behaviour.embedding_dim)
        vectors = [[round((len(w) % 7) / 7.0 - 0.5, 4) for w in content.words(t, dim)] for t in texts]
        tokens = sum(content.count_tokens(t) for t in texts)
        return web.json_response(
            {
                "id": str(uuid.uuid4()),
                "embeddings": {"float": vectors},
                "texts": texts,
                "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}},
                "response_type": "embeddings_by_type",
            }
        )

    return [web.post("/v2/chat", chat), web.post("/v2/embed", embed)]
