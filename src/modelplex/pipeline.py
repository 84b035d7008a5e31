"""The request story: authenticate -> parse -> plan -> admit -> execute -> settle -> record.

Every inbound dialect runs through here; each stage is a call into its own package. A stream is
the same story with a stream at the end: settle and record run when it closes, also when the
client goes away.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from modelplex.context import RequestContext
from modelplex.errors import AuthenticationFailed, InvalidRequest, ModelplexError
from modelplex.routing import execute
from modelplex.routing.execute import CommittedStream
from modelplex.routing.plan import plan
from modelplex.runtime import Caller, Runtime
from modelplex.server.dialect import Dialect
from modelplex.server.http import Scope, header
from modelplex.services import Services
from modelplex.types import ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse


async def chat(
    svc: Services, ctx: RequestContext, dialect: Dialect, scope: Scope, body: bytes
) -> tuple[ChatRequest, ChatResponse | CommittedStream]:
    rt = svc.runtime()
    try:
        ctx.caller = authenticate(rt, dialect.credential(scope))
        request = dialect.parse_chat(body)
        ctx.model, ctx.stream = request.model, request.stream
        ctx.deadline = deadline(rt, scope, ctx)
        candidates = plan(rt, request.model, ctx.caller, svc.rng)
        if request.stream:
            return request, await execute.open_stream(svc.transport, ctx, candidates, request)
        response = await execute.complete(svc.transport, ctx, candidates, request)
    except ModelplexError as exc:
        fail(svc, ctx, exc)
        raise
    finish(svc, ctx)
    return request, response


async def embeddings(
    svc: Services,
    ctx: RequestContext,
    dialect: Dialect,
    scope: Scope,
    body: bytes,
    parse: Callable[[bytes], EmbeddingRequest],
) -> EmbeddingResponse:
    rt = svc.runtime()
    try:
        ctx.caller = authenticate(rt, dialect.credential(scope))
        request = parse(body)
        ctx.model = request.model
        ctx.deadline = deadline(rt, scope, ctx)
        candidates = plan(rt, request.model, ctx.caller, svc.rng)
        response = await execute.embed(svc.transport, ctx, candidates, request)
    except ModelplexError as exc:
        fail(svc, ctx, exc)
        raise
    finish(svc, ctx)
    return response


def authenticate(rt: Runtime, credential: str | None) -> Caller:
    if not credential:
        raise AuthenticationFailed("Missing API key. Send it as `Authorization: Bearer <key>`.")
    caller = rt.caller_for(credential)
    if caller is None:
        raise AuthenticationFailed("Invalid API key.")
    return caller


def deadline(rt: Runtime, scope: Scope, ctx: RequestContext) -> float:
    raw = header(scope, b"x-modelplex-deadline-ms")
    ms = rt.config.server.default_deadline_ms
    if raw is not None:
        try:
            ms = int(raw)
        except ValueError:
            raise InvalidRequest(
                "x-modelplex-deadline-ms must be an integer number of milliseconds.",
                param="x-modelplex-deadline-ms",
            ) from None
        if ms <= 0:
            raise InvalidRequest("x-modelplex-deadline-ms must be positive.", param="x-modelplex-deadline-ms")
    return ctx.started + ms / 1000.0


def fail(svc: Services, ctx: RequestContext, exc: ModelplexError) -> None:
    ctx.error = exc
    ctx.status = exc.status
    finish(svc, ctx)


def finish(svc: Services, ctx: RequestContext) -> None:
    """Settle and record: runs exactly once per request, when its answer is complete."""
    ctx_end = time.monotonic()
    for sink in svc.sinks:
        sink(ctx, ctx_end)


def finish_stream(svc: Services, ctx: RequestContext, stream: CommittedStream, request: ChatRequest) -> None:
    stream.close()
    ctx.usage = stream.final_usage(request)
    stream.record.usage = ctx.usage
    finish(svc, ctx)
