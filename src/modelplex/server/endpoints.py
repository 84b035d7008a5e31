"""HTTP handlers of the inference API, generic over the inbound dialect."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec

from modelplex import pipeline
from modelplex.context import RequestContext
from modelplex.errors import ModelplexError, StreamInterrupted
from modelplex.routing.streams import CommittedStream
from modelplex.server import openai as openai_dialect
from modelplex.server.dialect import Dialect
from modelplex.server.http import ClientGone, RawHeaders, Receive, Scope, Send, read_body, send_body
from modelplex.services import Services
from modelplex.types import ChatRequest, ChatResponse

log = logging.getLogger("modelplex.server")
_encode = msgspec.json.Encoder().encode
NON_STREAM_WATCH_DELAY_S = 0.5


class InternalError(ModelplexError):
    status = 500
    code = "internal_error"


def response_headers(ctx: RequestContext, currency: str | None = None) -> RawHeaders:
    headers: RawHeaders = [(b"x-modelplex-request-id", ctx.request_id.encode())]
    if ctx.attempts:
        headers.append((b"x-modelplex-attempts", str(len(ctx.attempts)).encode()))
    if ctx.answered_by is not None:
        headers.append((b"x-modelplex-deployment", ctx.answered_by.name.encode()))
        headers.append((b"x-modelplex-model", (ctx.answered_model or "").encode()))
    if ctx.route is not None:
        headers.append((b"x-modelplex-route", f"{ctx.route}; {ctx.route_reason}".encode()))
    if ctx.failover_s is not None:
        headers.append((b"x-modelplex-failover-ms", f"{ctx.failover_s * 1000:.1f}".encode()))
    if currency is not None and ctx.answered_by is not None and ctx.error is None:
        # Known only once the answer is complete, so set on non-streaming answers.
        cost = (
            "unpriced" if ctx.report_cost_micro is None else f"{ctx.report_cost_micro / 1e6:.6f} {currency}"
        )
        headers.append((b"x-modelplex-cost", cost.encode()))
    headers.append((b"x-modelplex-overhead-ms", f"{ctx.overhead_ms():.3f}".encode()))
    return headers


async def send_error(
    svc: Services, ctx: RequestContext, dialect: Dialect, exc: ModelplexError, send: Send
) -> None:
    if ctx.error is None:
        pipeline.fail(svc, ctx, exc)
    status, body = dialect.render_error(exc)
    headers = response_headers(ctx)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers.append((b"retry-after", str(max(int(retry_after + 0.999), 1)).encode()))
    for name, value in getattr(exc, "headers", {}).items():
        headers.append((name.encode("latin-1"), value.encode("latin-1")))
    await send_body(send, status, body, headers)


async def chat(svc: Services, dialect: Dialect, scope: Scope, receive: Receive, send: Send) -> None:
    ctx = RequestContext(dialect=dialect.name, operation="chat")
    watch: _Disconnect | None = None
    try:
        body = await read_body(scope, receive, svc.runtime().config.server.max_body_bytes)
        watch = _Disconnect(receive, NON_STREAM_WATCH_DELAY_S)
        request, result = await pipeline.chat(svc, ctx, dialect, scope, body)
    except ClientGone:
        return
    except ModelplexError as exc:
        await send_error(svc, ctx, dialect, exc, send)
        return
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if watch is None or not watch.gone or task is None:
            raise
        task.uncancel()  # the client went away: its upstream attempts were cancelled with us
        pipeline.abort(svc, ctx)
        return
    except Exception:
        log.exception("unexpected error in request %s", ctx.request_id)
        internal = InternalError(f"Internal error (request {ctx.request_id}).")
        await send_error(svc, ctx, dialect, internal, send)
        return
    finally:
        if watch is not None:
            watch.stop()
    if isinstance(result, ChatResponse):
        headers = response_headers(ctx, svc.meter.currency)
        await send_body(send, 200, dialect.render_chat(result, request, ctx), headers)
        return
    await _stream(svc, ctx, dialect, request, result, receive, send)


class _Disconnect:
    """Watches for the client going away and cancels the request's task when it does.

    Watching costs a task, so for a non-streaming request it starts only after `delay`: most
    answers are done by then, and a client that leaves is still noticed within a second."""

    def __init__(self, receive: Receive, delay: float = 0.0) -> None:
        self.gone = False
        self._task = asyncio.current_task()
        self._watcher: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        if delay:
            self._timer = asyncio.get_running_loop().call_later(delay, self._start, receive)
        else:
            self._start(receive)

    def _start(self, receive: Receive) -> None:
        self._timer = None
        self._watcher = asyncio.ensure_future(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                if self._task is not None:
                    self._task.cancel()
                return

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None:
            self._watcher.cancel()


async def _stream(
    svc: Services,
    ctx: RequestContext,
    dialect: Dialect,
    request: ChatRequest,
    stream: CommittedStream,
    receive: Receive,
    send: Send,
) -> None:
    model = ctx.answered_by.target.model if ctx.answered_by is not None else request.model
    encoder = dialect.stream_encoder(request, ctx, model)
    headers = response_headers(ctx)
    headers += [
        (b"content-type", encoder.content_type),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
    ]
    watch = _Disconnect(receive)
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        ctx.first_byte_at = time.monotonic()
        pending = encoder.start()
        async for batch in stream.batches():
            for delta in batch:
                pending += encoder.delta(delta)
            if pending:
                await send({"type": "http.response.body", "body": pending, "more_body": True})
                pending = b""
        tail = encoder.end(stream.final_usage(request))
        await send({"type": "http.response.body", "body": pending + tail, "more_body": False})
    except StreamInterrupted as exc:
        ctx.error, ctx.status = exc, exc.status
        await send({"type": "http.response.body", "body": encoder.error(exc), "more_body": False})
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not watch.gone or task is None:
            raise
        task.uncancel()
        ctx.aborted, ctx.status = True, 499
    finally:
        watch.stop()
        pipeline.finish_stream(svc, ctx, stream, request)


async def embeddings(svc: Services, scope: Scope, receive: Receive, send: Send) -> None:
    dialect = openai_dialect.DIALECT
    ctx = RequestContext(dialect=dialect.name, operation="embeddings")
    try:
        body = await read_body(scope, receive, svc.runtime().config.server.max_body_bytes)
        response = await pipeline.embeddings(svc, ctx, dialect, scope, body, openai_dialect.parse_embeddings)
    except ClientGone:
        return
    except ModelplexError as exc:
        await send_error(svc, ctx, dialect, exc, send)
        return
    await send_body(send, 200, openai_dialect.render_embeddings(response), response_headers(ctx))


async def models(svc: Services, dialect: Dialect, scope: Scope, receive: Receive, send: Send) -> None:
    ctx = RequestContext(dialect=dialect.name, operation="models")
    rt = svc.runtime()
    try:
        caller = await svc.keys.authenticate(rt, dialect.credential(scope))
    except ModelplexError as exc:
        await send_error(svc, ctx, dialect, exc, send)
        return
    names = [m.name for m in rt.config.models if caller.models is None or m.name in caller.models]
    data: list[dict[str, Any]]
    if dialect.name == "anthropic":
        data = [
            {"type": "model", "id": n, "display_name": n, "created_at": "1970-01-01T00:00:00Z"} for n in names
        ]
        body = _encode(
            {
                "data": data,
                "has_more": False,
                "first_id": names[0] if names else None,
                "last_id": names[-1] if names else None,
            }
        )
    else:
        data = [{"id": n, "object": "model", "created": 0, "owned_by": "modelplex"} for n in names]
        body = _encode({"object": "list", "data": data})
    await send_body(send, 200, body, [(b"x-modelplex-request-id", ctx.request_id.encode())])
