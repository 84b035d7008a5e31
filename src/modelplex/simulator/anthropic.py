"""A simulated Anthropic: POST /v1/messages, JSON and the full SSE event sequence.

Bodies and events follow Anthropic's API reference and the official `anthropic` SDK's types; the
tests parse them with that SDK.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from modelplex.simulator import content
from modelplex.simulator.core import Answer, Ask, SimRequest, SimState, respond

STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}

_ERRORS: dict[str, tuple[int, str, str]] = {
    "400": (400, "invalid_request_error", "Invalid request."),
    "401": (401, "authentication_error", "invalid x-api-key"),
    "403": (403, "permission_error", "Your API key does not have permission to use the specified resource."),
    "404": (404, "not_found_error", "model: not found"),
    "413": (413, "request_too_large", "Request exceeds the maximum allowed number of bytes."),
    "429": (429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    "500": (500, "api_error", "Internal server error"),
    "529": (529, "overloaded_error", "Overloaded"),
    "503": (503, "overloaded_error", "Overloaded"),
    "context_length": (400, "invalid_request_error", "prompt is too long: tokens > {limit} maximum"),
    "content_policy": (400, "invalid_request_error", "Output blocked by content filtering policy"),
    "prefill": (
        400,
        "invalid_request_error",
        "This model does not support assistant message prefill.",
    ),
}


def _usage(a: Answer, final: bool) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": max(a.input_total - a.cached - a.cache_write, 0),
        "cache_creation_input_tokens": a.cache_write,
        "cache_read_input_tokens": a.cached,
        "output_tokens": (a.output + a.reasoning) if final else 1,
    }
    if final and a.reasoning:
        usage["output_tokens_details"] = {"thinking_tokens": a.reasoning}
    return usage


def _sse(name: str, payload: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


class AnthropicWire:
    stream_content_type = "text/event-stream; charset=utf-8"

    def _content(self, answer: Answer) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if answer.tokens:
            blocks.append({"type": "text", "text": "".join(answer.tokens)})
        if answer.tool is not None:
            call_id, name, args = answer.tool
            blocks.append(
                {"type": "tool_use", "id": "toolu_" + call_id[5:], "name": name, "input": json.loads(args)}
            )
        return blocks

    def body(self, ask: Ask, answer: Answer, request_id: str) -> bytes:
        return json.dumps(
            {
                "id": f"msg_sim{request_id}",
                "type": "message",
                "role": "assistant",
                "model": ask.model,
                "content": self._content(answer),
                "stop_reason": STOP[answer.finish],
                "stop_sequence": None,
                "usage": _usage(answer, final=True),
            }
        ).encode()

    def events(self, ask: Ask, answer: Answer, request_id: str) -> tuple[list[bytes], bytes]:
        chunks = [
            _sse(
                "message_start",
                {
                    "type": "message_start",
                    "message": {
                        "id": f"msg_sim{request_id}",
                        "type": "message",
                        "role": "assistant",
                        "model": ask.model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": _usage(answer, final=False),
                    },
                },
            ),
        ]
        index = 0
        if answer.tokens:
            chunks.append(
                _sse(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
            )
            chunks.append(_sse("ping", {"type": "ping"}))
            chunks.extend(
                _sse(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
                )
                for t in answer.tokens
            )
            chunks.append(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
            index = 1
        if answer.tool is not None:
            call_id, name, args = answer.tool
            chunks.append(
                _sse(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {
                            "type": "tool_use",
                            "id": "toolu_" + call_id[5:],
                            "name": name,
                            "input": {},
                        },
                    },
                )
            )
            chunks.extend(
                _sse(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                )
                for piece in content.split_in(args, 3)
            )
            chunks.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
        chunks.append(
            _sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": STOP[answer.finish], "stop_sequence": None},
                    "usage": _usage(answer, final=True),
                },
            )
        )
        return chunks, _sse("message_stop", {"type": "message_stop"})

    def error(self, kind: str, ask: Ask | None, message: str) -> tuple[int, bytes]:
        status, etype, text = _ERRORS.get(
            kind, (int(kind) if kind.isdigit() else 500, "api_error", "Simulated error.")
        )
        text = text.format(limit=message or "200000")
        return status, json.dumps(
            {"type": "error", "error": {"type": etype, "message": text}, "request_id": "req_sim"}
        ).encode()

    def malformed(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": \n\n'


WIRE = AnthropicWire()


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    out = []
    for block in value or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            out.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            out.append(_text(block.get("content")))
        elif block.get("type") == "tool_use":
            out.append(json.dumps(block.get("input", {})))
    return "".join(out)


def read_ask(body: dict[str, Any]) -> Ask:
    messages = body["messages"]
    system = _text(body.get("system")) if body.get("system") else ""
    texts = ([system] if system else []) + [_text(m.get("content")) for m in messages]
    users = [_text(m.get("content")) for m in messages if m.get("role") == "user"]
    last = messages[-1] if messages else {}
    last_content = last.get("content")
    after_tool = isinstance(last_content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in last_content
    )
    prefill = _text(last_content) if last.get("role") == "assistant" else None
    choice = body.get("tool_choice") or {}
    tool_choice = {"auto": "auto", "any": "required", "none": "none"}.get(
        choice.get("type", "auto"), choice.get("name")
    )
    return Ask(
        model=body.get("model", ""),
        texts=texts,
        last_user=users[-1] if users else "",
        stream=bool(body.get("stream")),
        max_tokens=body["max_tokens"],
        tools=[(t["name"], t.get("input_schema")) for t in body.get("tools") or []],
        tool_choice=tool_choice,
        after_tool_result=after_tool,
        prefill=prefill,
    )


def routes(state: SimState) -> list[web.RouteDef]:
    async def messages(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        if not request.headers.get("x-api-key") and not request.headers.get("authorization"):
            _, body = WIRE.error("401", None, "")
            return web.Response(status=401, body=body, content_type="application/json")
        if not request.headers.get("anthropic-version"):
            body = json.dumps(
                {
                    "type": "error",
                    "error": {
                        "type": "invalid_request_error",
                        "message": "anthropic-version: header is required",
                    },
                }
            ).encode()
            return web.Response(status=400, body=body, content_type="application/json")
        try:
            data = json.loads(raw)
            ask = read_ask(data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            body = json.dumps(
                {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": f"invalid request: {exc!r}"},
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

    return [web.post("/v1/messages", messages)]
