"""The dialect-independent part of a simulated provider: what to answer, and how to misbehave.

A wire-format module (openai.py, anthropic.py, ...) reads a request into an `Ask`, and renders an
`Answer` as a body or as stream events; `respond` here carries out the chosen outcome with the
behaviour's timing and faults. Nothing here is shared with modelplex's own adapters.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from modelplex.simulator import content
from modelplex.simulator.behaviour import Behaviour, Chooser, split_outcome


@dataclass
class Ask:
    """What a simulated provider understood of one request."""

    model: str
    texts: list[str]
    last_user: str
    stream: bool = False
    n: int = 1
    max_tokens: int | None = None
    tools: list[tuple[str, Any]] = field(default_factory=list)  # (name, JSON schema)
    tool_choice: str | None = None  # auto | none | required | <tool name>
    after_tool_result: bool = False
    json_schema: Any = None
    json_object: bool = False
    prefill: str | None = None  # trailing assistant text to continue from
    include_usage: bool = True


@dataclass
class Answer:
    tokens: list[str]
    tool: tuple[str, str, str] | None  # (call id, name, JSON arguments)
    finish: str  # stop | length | tool
    input_total: int
    cached: int
    cache_write: int
    output: int
    reasoning: int


def plan_answer(ask: Ask, b: Behaviour, request_id: str) -> Answer:
    prompt = "\n".join(ask.texts)
    total = content.prompt_tokens(ask.texts)
    cached = min(b.cached_input_tokens, total)
    cache_write = min(b.cache_write_tokens, total - cached)
    wants_tool = bool(ask.tools) and ask.tool_choice != "none" and not ask.after_tool_result
    if wants_tool:
        name, schema = ask.tools[0]
        if ask.tool_choice not in (None, "auto", "required"):
            name, schema = next(((n, s) for n, s in ask.tools if n == ask.tool_choice), ask.tools[0])
        args = content.tool_arguments(schema)
        call_id = "call_" + hashlib.sha256((request_id + name).encode()).hexdigest()[:20]
        return Answer(
            tokens=[],
            tool=(call_id, name, args),
            finish="tool",
            input_total=total,
            cached=cached,
            cache_write=cache_write,
            output=content.count_tokens(args) + 4,
            reasoning=b.reasoning_tokens,
        )
    if ask.json_schema is not None or ask.json_object:
        value = (
            content.from_schema(ask.json_schema)
            if ask.json_schema is not None
            else {"answer": " ".join(content.words(prompt, 3))}
        )
        text = json.dumps(value)
        tokens = content.split_in(text, max(content.count_tokens(text) // 2, 1))
    else:
        echo = ask.last_user if b.echo else None
        tokens = content.answer_tokens(prompt + (ask.prefill or ""), b.output_tokens, echo)
        if ask.prefill:
            tokens = [t if t.startswith(" ") else " " + t for t in tokens]
    finish = "stop"
    if ask.max_tokens is not None and len(tokens) > ask.max_tokens:
        tokens, finish = tokens[: ask.max_tokens], "length"
    return Answer(
        tokens=tokens,
        tool=None,
        finish=finish,
        input_total=total,
        cached=cached,
        cache_write=cache_write,
        output=len(tokens),
        reasoning=b.reasoning_tokens,
    )


class WireFormat(Protocol):
    """One provider's wire format inside the simulator."""

    def body(self, ask: Ask, answer: Answer, request_id: str) -> bytes: ...

    def events(self, ask: Ask, answer: Answer, request_id: str) -> tuple[list[bytes], bytes]:
        """The stream as separate chunks, and its terminator (sent last unless `no_done`)."""
        ...

    def error(self, kind: str, ask: Ask | None, message: str) -> tuple[int, bytes]:
        """Status and body for an error outcome (`500`, `429`, `context_length`, ...)."""
        ...

    def malformed(self) -> bytes: ...

    stream_content_type: str


@dataclass
class SimRequest:
    """What the simulator saw: one entry per request, for tests to check attempts and gaps."""

    at: float  # monotonic
    path: str
    model: str
    stream: bool
    outcome: str
    body: bytes
    headers: dict[str, str]
    ended: float | None = None
    disconnected: bool = False


class SimState:
    """Shared state of one simulated provider: behaviours, outcome chooser, log, outage switch."""

    def __init__(
        self,
        name: str,
        default: Behaviour,
        models: dict[str, Behaviour],
        seed: int = 0,
        outages: list[tuple[float, float]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.default = default
        self.models = models
        self.chooser = Chooser(seed)
        self.log: list[SimRequest] = []
        self.down = False
        self.down_status = 503
        self.outages = outages or []
        self._clock = clock
        self.started = clock()

    def behaviour(self, model: str) -> tuple[str, Behaviour]:
        base, refined = self.default.with_model_name(model)
        if base in self.models:
            base_b = self.models[base]
            _, refined = base_b.with_model_name(model)
        return base, refined

    def is_down(self) -> bool:
        if self.down:
            return True
        elapsed = self._clock() - self.started
        return any(start <= elapsed < end for start, end in self.outages)

    def outcome(self, model: str, behaviour: Behaviour) -> str:
        if self.is_down():
            return str(self.down_status) if self.down_status else "reset"
        return self.chooser.next(model, behaviour)

    def reset(self) -> None:
        self.log.clear()
        self.chooser.reset()
        self.down = False


def _json(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


async def respond(
    request: web.Request, state: SimState, wire: WireFormat, ask: Ask, record: SimRequest
) -> web.StreamResponse:
    """Carry out the chosen outcome for one request."""
    _, b = state.behaviour(ask.model)
    outcome = record.outcome
    kind, arg = split_outcome(outcome)
    request_id = f"{id(record):x}{len(state.log)}"
    try:
        if kind == "reset":
            _abort(request)
            raise web.HTTPInternalServerError  # not sent: the connection is gone
        if kind == "silent":
            await asyncio.sleep(3600)
        if kind.isdigit():
            return _error_response(wire, int(kind), arg, ask, b)
        if kind in ("context_length", "content_policy"):
            status, body = wire.error(kind, ask, "")
            return _json(status, body)
        if b.context_window is not None and content.prompt_tokens(ask.texts) > b.context_window:
            status, body = wire.error("context_length", ask, str(b.context_window))
            return _json(status, body)
        if ask.prefill is not None and b.reject_prefill:
            status, body = wire.error("prefill", ask, "")
            return _json(status, body)
        answer = plan_answer(ask, b, request_id)
        ttft = float(arg) / 1000.0 if kind == "slow" else b.ttft_ms.sample(state.chooser.rng)
        if not ask.stream:
            await asyncio.sleep(ttft + (len(answer.tokens) / b.tokens_per_s if b.tokens_per_s else 0))
            return _json(200, wire.body(ask, answer, request_id))
        return await _stream(request, wire, ask, answer, b, kind, arg, ttft, request_id)
    finally:
        record.ended = time.monotonic()


def _error_response(wire: WireFormat, status: int, arg: str, ask: Ask, b: Behaviour) -> web.Response:
    _, body = wire.error(str(status), ask, "")
    headers: dict[str, str] = {}
    if status == 429:
        if arg and "=" in arg:
            name, _, value = arg.partition("=")
            headers[name] = value
        elif b.retry_after is not None:
            headers["retry-after"] = b.retry_after
    return _json(status, body, headers)


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


async def _stream(
    request: web.Request,
    wire: WireFormat,
    ask: Ask,
    answer: Answer,
    b: Behaviour,
    kind: str,
    arg: str,
    ttft: float,
    request_id: str,
) -> web.StreamResponse:
    chunks, terminator = wire.events(ask, answer, request_id)
    resp = web.StreamResponse(
        status=200, headers={"content-type": wire.stream_content_type, "cache-control": "no-cache"}
    )
    await resp.prepare(request)
    if ttft > 0:
        await asyncio.sleep(ttft)
    gap = 1.0 / b.tokens_per_s if b.tokens_per_s else 0.0
    limit = int(arg) if kind in ("cut", "stall", "malformed") and arg else 0
    pending: list[bytes] = []
    for i, chunk in enumerate(chunks):
        if i == limit and kind == "cut":
            if pending:
                await resp.write(b"".join(pending))
            # Let the bytes reach the client, then drop the connection without the stream's end.
            await asyncio.sleep(0.01)
            _abort(request)
            return resp
        if i == limit and kind == "stall":
            if pending:
                await resp.write(b"".join(pending))
            await asyncio.sleep(b.stall_s)
            _abort(request)
            return resp
        if i == limit and kind == "malformed":
            pending.append(wire.malformed())
        pending.append(chunk)
        if gap and i > 0:
            await resp.write(b"".join(pending))
            pending = []
            await asyncio.sleep(gap)
    if kind != "no_done":
        pending.append(terminator)
    with contextlib.suppress(ConnectionResetError):
        if pending:
            await resp.write(b"".join(pending))
        await resp.write_eof()
    return resp
