"""The OpenAI Responses dialect outbound: canonical answers as `response` objects and event streams."""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec

from modelplex.context import RequestContext
from modelplex.errors import ModelplexError
from modelplex.server.http import SSE
from modelplex.types import (
    ChatRequest,
    ChatResponse,
    Delta,
    FinishDelta,
    FinishReason,
    ResponseFormat,
    Text,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
    UsageDelta,
)

Status = Literal["completed", "incomplete", "failed"]
_encode = msgspec.json.Encoder().encode
_TERMINAL: dict[Status, str] = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
}


def response_id(ctx: RequestContext) -> str:
    return f"resp_{ctx.request_id}"


def usage_to_wire(u: Usage) -> dict[str, Any]:
    prompt, completion = u.prompt_total, u.completion_total
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": u.cached_input_tokens,
            "cache_write_tokens": u.cache_write_tokens,
        },
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": prompt + completion,
    }


def _outcome(reason: FinishReason | None) -> tuple[Status, dict[str, Any] | None, dict[str, Any] | None]:
    """(status, incomplete_details, error) of an answer that ended for `reason`."""
    if reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}, None
    if reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}, None
    if reason == "error":
        return (
            "failed",
            None,
            {"code": "server_error", "message": "The model ended its answer with an error."},
        )
    return "completed", None, None


def _failure(exc: ModelplexError) -> dict[str, Any]:
    return {"code": "rate_limit_exceeded" if exc.status == 429 else "server_error", "message": exc.message}


def _format_echo(rf: ResponseFormat | None) -> dict[str, Any]:
    if rf is None or rf.type != "json_schema":
        return {"type": rf.type if rf is not None else "text"}
    return {"type": "json_schema", "name": rf.name, "schema": rf.schema or {}, "strict": rf.strict}


def _choice_echo(tc: ToolChoice | None) -> str | dict[str, Any]:
    if tc is None:
        return "auto"
    if tc.mode == "tool":
        return {"type": "function", "name": tc.name}
    return tc.mode


def _response(request: ChatRequest, ctx: RequestContext, model: str) -> dict[str, Any]:
    """The response object before any output: the fields that echo the request."""
    tools = [
        {
            "type": "function",
            "name": t.name,
            "description": t.description,
            "parameters": t.parameters,
            "strict": t.strict,
        }
        for t in request.tools or ()
    ]
    return {
        "id": response_id(ctx),
        "object": "response",
        "created_at": int(ctx.wall_started),
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": request.max_tokens,
        "model": model,
        "output": [],
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": None,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "text": {"format": _format_echo(request.response_format)},
        "tool_choice": _choice_echo(request.tool_choice),
        "tools": tools,
        "truncation": "disabled",
        "usage": None,
        "user": request.user,
        "metadata": request.metadata or {},
    }


def _settle(
    body: dict[str, Any], reason: FinishReason | None, output: list[dict[str, Any]], usage: Usage
) -> Status:
    status, details, error = _outcome(reason)
    body.update(
        status=status, incomplete_details=details, error=error, output=output, usage=usage_to_wire(usage)
    )
    if status == "completed":
        body["completed_at"] = int(time.time())
    return status


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [_text_part(text)],
    }


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def render_chat(response: ChatResponse, request: ChatRequest, ctx: RequestContext) -> bytes:
    choice = response.choices[0]
    status, _, _ = _outcome(choice.finish_reason)
    text_status = "completed" if status == "completed" else "incomplete"
    rid = ctx.request_id
    output: list[dict[str, Any]] = []
    for p in choice.message.content:
        if isinstance(p, Text) and p.text:
            if output and output[-1]["type"] == "message":
                output[-1]["content"][0]["text"] += p.text
            else:
                output.append(_message_item(f"msg_{rid}_{len(output)}", p.text, text_status))
        elif isinstance(p, ToolCall):
            output.append(_call_item(f"fc_{rid}_{len(output)}", p.id, p.name, p.arguments, "completed"))
    if not output:
        output.append(_message_item(f"msg_{rid}_0", "", text_status))
    body = _response(request, ctx, response.model)
    _settle(body, choice.finish_reason, output, response.usage)
    return _encode(body)


class ResponsesStreamEncoder:
    """Deltas -> response.created, response.in_progress, then each output item in turn (added,
    its deltas, done), then response.completed or response.incomplete; response.failed on failure.

    One item is open at a time and it is always the last: a new item closes the open one.
    """

    content_type = SSE

    def __init__(self, request: ChatRequest, ctx: RequestContext, model: str) -> None:
        self._response = _response(request, ctx, model)
        self._rid = ctx.request_id
        self._seq = 0
        self._output: list[dict[str, Any]] = []
        self._open = False
        self._calls: dict[int, int] = {}  # tool call index -> output index
        self._finish: FinishReason | None = None

    def _event(self, kind: str, payload: dict[str, Any]) -> bytes:
        data = _encode({"type": kind, "sequence_number": self._seq, **payload})
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

    def _lifecycle(self, kind: str) -> bytes:
        return self._event(kind, {"response": self._response})

    def start(self) -> bytes:
        return self._lifecycle("response.created") + self._lifecycle("response.in_progress")

    def _added(self, item: dict[str, Any]) -> bytes:
        self._output.append(item)
        self._open = True
        return self._event(
            "response.output_item.added", {"output_index": len(self._output) - 1, "item": item}
        )

    def _open_message(self) -> bytes:
        out = self._close("completed")
        index = len(self._output)
        item = _message_item(f"msg_{self._rid}_{index}", "", "in_progress")
        item["content"] = []
        out += self._added(item)
        # Events are encoded as they are made, so the item may grow after it is announced.
        item["content"] = [_text_part("")]
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        return out + self._event("response.content_part.added", {**where, "part": item["content"][0]})

    def _open_call(self, d: ToolCallDelta) -> bytes:
        out = self._close("completed")
        index = len(self._output)
        call_id = d.id or f"call_{self._rid}_{d.index}"
        self._calls[d.index] = index
        return out + self._added(
            _call_item(f"fc_{self._rid}_{index}", call_id, d.name or "", "", "in_progress")
        )

    def _close(self, status: str) -> bytes:
        if not self._open:
            return b""
        self._open = False
        index = len(self._output) - 1
        item = self._output[index]
        item["status"] = status
        where = {"item_id": item["id"], "output_index": index}
        if item["type"] == "function_call":
            out = self._event(
                "response.function_call_arguments.done", {**where, "arguments": item["arguments"]}
            )
        else:
            part = item["content"][0]
            out = self._event(
                "response.output_text.done",
                {**where, "content_index": 0, "text": part["text"], "logprobs": []},
            )
            out += self._event("response.content_part.done", {**where, "content_index": 0, "part": part})
        return out + self._event("response.output_item.done", {"output_index": index, "item": item})

    def delta(self, d: Delta) -> bytes:
        if isinstance(d, UsageDelta) or d.choice != 0:
            return b""
        if isinstance(d, TextDelta):
            if not d.text:
                return b""
            out = b""
            if not self._open or self._output[-1]["type"] != "message":
                out = self._open_message()
            index = len(self._output) - 1
            item = self._output[index]
            item["content"][0]["text"] += d.text
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            return out + self._event("response.output_text.delta", {**where, "delta": d.text, "logprobs": []})
        if isinstance(d, ToolCallDelta):
            out = b""
            known = self._calls.get(d.index)
            if known is None or (d.id is not None and d.id != self._output[known]["call_id"]):
                out = self._open_call(d)
            index = self._calls[d.index]
            if not d.arguments:
                return out
            item = self._output[index]
            item["arguments"] += d.arguments
            where = {"item_id": item["id"], "output_index": index}
            return out + self._event(
                "response.function_call_arguments.delta", {**where, "delta": d.arguments}
            )
        if isinstance(d, FinishDelta):
            self._finish = d.reason
            return b""
        raise TypeError(f"unknown delta {d!r}")

    def end(self, usage: Usage) -> bytes:
        out = b"" if self._output else self._open_message()
        status, _, _ = _outcome(self._finish)
        out += self._close("completed" if status == "completed" else "incomplete")
        status = _settle(self._response, self._finish, self._output, usage)
        return out + self._lifecycle(_TERMINAL[status])

    def error(self, exc: ModelplexError) -> bytes:
        # No done events for the open item: it did not finish. The failed response carries it.
        for item in self._output:
            if item["status"] == "in_progress":
                item["status"] = "incomplete"
        self._response.update(status="failed", output=self._output, error=_failure(exc))
        return self._lifecycle("response.failed")
