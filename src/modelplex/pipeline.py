"""The request story: authenticate -> parse -> plan -> admit -> execute -> settle -> record.

Every inbound dialect runs through here; each stage is a call into its own package. A stream is
the same story with a stream at the end: settle and record run when it closes, also when the
client goes away.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from modelplex.context import RequestContext
from modelplex.errors import InvalidRequest, ModelplexError
from modelplex.limits.admission import Ticket
from modelplex.routing import execute, streams
from modelplex.routing.execute import Policy
from modelplex.routing.features import embedding_features, features
from modelplex.routing.plan import Plan, plan
from modelplex.routing.streams import CommittedStream
from modelplex.runtime import Runtime
from modelplex.server.dialect import Dialect
from modelplex.server.http import Scope, header
from modelplex.services import Services
from modelplex.types import ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse

EMPTY_TICKET = Ticket()


async def chat(
    svc: Services, ctx: RequestContext, dialect: Dialect, scope: Scope, body: bytes
) -> tuple[ChatRequest, ChatResponse | CommittedStream]:
    rt = svc.runtime()
    try:
        ctx.caller = await svc.keys.authenticate(rt, dialect.credential(scope))
        request = dialect.parse_chat(body)
        ctx.model, ctx.stream = request.model, request.stream
        f = features(
            request,
            ctx.caller,
            dialect.name,
            header(scope, b"x-modelplex-tags"),
            header(scope, b"x-modelplex-task"),
            for_rules=request.model in rt.routes,
        )
        p = plan(rt, svc.health, request.model, ctx.caller, f, svc.rng, time.time())
        ctx.route, ctx.route_reason, ctx.tags = p.route.name if p.route else None, p.reason, tuple(f.tags)
        ctx.features = f
        ctx.deadline = deadline(rt, scope, ctx, p)
        policy = policy_for(rt, p)
        ctx.ticket = await admit(svc, rt, ctx, p)
        if ctx.ticket is not None and ctx.ticket.max_tokens is not None and request.max_tokens is None:
            request = msgspec.structs.replace(request, max_tokens=ctx.ticket.max_tokens)
        if request.stream:
            stream = await streams.open_stream(
                rt, svc.transport, svc.health, ctx, p, policy, request, svc.rng
            )
            return request, stream
        response = await execute.complete(rt, svc.transport, svc.health, ctx, p, policy, request, svc.rng)
    except ModelplexError as exc:
        fail(svc, ctx, exc)
        raise
    ctx.output_text = response.choices[0].message.text() if response.choices else None
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
        ctx.caller = await svc.keys.authenticate(rt, dialect.credential(scope))
        request = parse(body)
        ctx.model = request.model
        f = embedding_features(request, ctx.caller, dialect.name)
        p = plan(rt, svc.health, request.model, ctx.caller, f, svc.rng, time.time())
        ctx.deadline = deadline(rt, scope, ctx, p)
        ctx.ticket = await admit(svc, rt, ctx, p)
        response = await execute.embed(
            rt, svc.transport, svc.health, ctx, p, policy_for(rt, p), request, svc.rng
        )
    except ModelplexError as exc:
        fail(svc, ctx, exc)
        raise
    finish(svc, ctx)
    return response


async def admit(svc: Services, rt: Runtime, ctx: RequestContext, p: Plan) -> Ticket | None:
    """Rate limits, concurrency and the budget reservation, all or nothing."""
    if svc.admission is None:
        return None
    return await svc.admission.admit(rt, ctx, p)


def deadline(rt: Runtime, scope: Scope, ctx: RequestContext, p: Plan) -> float:
    raw = header(scope, b"x-modelplex-deadline-ms")
    ms = (
        p.route.deadline_ms
        if p.route is not None and p.route.deadline_ms
        else rt.config.server.default_deadline_ms
    )
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


def policy_for(rt: Runtime, p: Plan) -> Policy:
    defaults = rt.config.routing
    route = p.route
    return Policy(
        retry=route.retry if route is not None and route.retry is not None else defaults.retry,
        hedge=route.hedge if route is not None and route.hedge is not None else defaults.hedge,
        continuation=route.continuation if route is not None else defaults.continuation,
        key=route.name if route is not None else p.model,
    )


def fail(svc: Services, ctx: RequestContext, exc: ModelplexError) -> None:
    ctx.error = exc
    ctx.status = exc.status
    finish(svc, ctx)


def abort(svc: Services, ctx: RequestContext) -> None:
    """The client went away before its answer: record it as aborted (499)."""
    ctx.aborted, ctx.status = True, 499
    finish(svc, ctx)


def finish(svc: Services, ctx: RequestContext) -> None:
    """Settle and record: runs exactly once per request, when its answer is complete."""
    end = time.monotonic()
    rt = svc.runtime()
    svc.meter.settle(rt, ctx)
    for sink in svc.sinks:
        sink(ctx, end)
    if svc.admission is not None:
        svc.admission.settle_later(rt, ctx.ticket or EMPTY_TICKET, ctx)


def finish_stream(svc: Services, ctx: RequestContext, stream: CommittedStream, request: ChatRequest) -> None:
    stream.close()
    ctx.usage = stream.final_usage(request)
    ctx.output_text = stream.text
    stream.record.usage = ctx.usage
    finish(svc, ctx)
