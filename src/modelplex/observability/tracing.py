"""OpenTelemetry traces: a span per request and a child span per upstream attempt.

Attributes follow the OpenTelemetry GenAI semantic conventions (`gen_ai.*`), plus `modelplex.*`
for what only the gateway knows (route, deployment, cost, attempt kind). Spans are built when the
request finishes, from its context and its recorded timings, just after the response is written,
and exported in batches over OTLP/HTTP from a background thread. This module imports
OpenTelemetry only when tracing is enabled; off, it costs nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from modelplex import __version__
from modelplex.config.observability import Tracing
from modelplex.context import AttemptRecord, RequestContext
from modelplex.runtime import Runtime

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter


def _server(base_url: str) -> tuple[str, int | None]:
    parts = urlsplit(base_url)
    return parts.hostname or "", parts.port


class Tracer:
    def __init__(self, settings: Tracing, runtime: Callable[[], Runtime],
                 exporter: SpanExporter | None = None) -> None:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import TraceIdRatioBased
        from opentelemetry.trace import SpanKind, Status, StatusCode

        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(
                endpoint=settings.otlp_endpoint,  # None: OTEL_EXPORTER_OTLP_* or localhost:4318
                headers={k: v.get_secret_value() for k, v in settings.otlp_headers.items()} or None,
                timeout=settings.otlp_timeout_s,
            )
        resource = Resource.create({"service.name": settings.service_name, "service.version": __version__})
        self.provider = TracerProvider(resource=resource, sampler=TraceIdRatioBased(settings.sample_ratio))
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self._tracer = self.provider.get_tracer("modelplex", __version__)
        self._in_span = trace.set_span_in_context
        self._server_kind, self._client_kind = SpanKind.SERVER, SpanKind.CLIENT
        self._status, self._error_code = Status, StatusCode.ERROR
        self.runtime = runtime
        self._servers: dict[str, tuple[str, int | None]] = {}

    def record(self, ctx: RequestContext, end: float) -> None:
        """The sink. Building spans costs tens of microseconds (the SDK checks every attribute), so
        it runs right after the response is written rather than before (the context does not
        change after its request finished)."""
        try:
            asyncio.get_running_loop().call_soon(self.build, ctx, end)
        except RuntimeError:
            self.build(ctx, end)

    def build(self, ctx: RequestContext, end: float) -> None:
        """The request's span and its attempts' spans, with their real timings."""
        rt = self.runtime()
        op = "chat" if ctx.operation == "chat" else ctx.operation

        def at(mono: float) -> int:
            return int((ctx.wall_started + (mono - ctx.started)) * 1e9)

        requested = ctx.model if ctx.model in rt.models or ctx.model in rt.routes else "unknown"
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": op,
            "gen_ai.request.model": requested,
            "modelplex.request_id": ctx.request_id,
            "modelplex.dialect": ctx.dialect,
            "modelplex.stream": ctx.stream,
            "modelplex.attempts": len(ctx.attempts),
            "http.response.status_code": ctx.status,
        }
        answered = ctx.answered_by
        if ctx.route:
            attrs["modelplex.route"] = ctx.route
        if answered is not None:
            attrs.update({
                "gen_ai.provider.name": answered.target.provider,
                "gen_ai.system": answered.target.provider,
                "gen_ai.response.model": answered.target.model,
                "modelplex.deployment": answered.name,
                "modelplex.model": ctx.answered_model or "",
            })
        if ctx.usage is not None:
            attrs["gen_ai.usage.input_tokens"] = ctx.usage.prompt_total
            attrs["gen_ai.usage.output_tokens"] = ctx.usage.completion_total
        if ctx.report_cost_micro is not None:
            attrs["modelplex.cost"] = ctx.report_cost_micro / 1e6
        if ctx.waste_micro:
            attrs["modelplex.waste"] = ctx.waste_micro / 1e6
        if ctx.first_byte_at is not None:
            attrs["modelplex.time_to_first_token_s"] = ctx.first_byte_at - ctx.started
        if ctx.failover_s is not None:
            attrs["modelplex.failover_s"] = ctx.failover_s
        if ctx.aborted:
            attrs["modelplex.aborted"] = True
        if ctx.error is not None:
            attrs["error.type"] = ctx.error.code
        span = self._tracer.start_span(f"{op} {requested}", kind=self._server_kind,
                                       start_time=at(ctx.started), attributes=attrs)
        if ctx.error is not None:
            span.set_status(self._status(self._error_code, ctx.error.message[:500]))
        parent = self._in_span(span)
        for a in ctx.attempts:
            self._attempt(rt, op, a, parent, at, end)
        span.end(end_time=at(end))

    def _attempt(self, rt: Runtime, op: str, a: AttemptRecord, parent: Any, at: Callable[[float], int],
                 end: float) -> None:
        endpoint = rt.endpoints.get(a.deployment)
        upstream_model = endpoint.target.model if endpoint is not None else a.deployment
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": op,
            "gen_ai.provider.name": a.provider,
            "gen_ai.system": a.provider,
            "gen_ai.request.model": upstream_model,
            "modelplex.deployment": a.deployment,
            "modelplex.model": a.model,
            "modelplex.attempt.outcome": a.outcome,
            "modelplex.attempt.hedge": a.hedge,
        }
        if endpoint is not None:
            server = self._servers.get(endpoint.target.base_url)
            if server is None:
                server = self._servers[endpoint.target.base_url] = _server(endpoint.target.base_url)
            attrs["server.address"] = server[0]
            if server[1] is not None:
                attrs["server.port"] = server[1]
        if a.outcome == "ok":
            attrs["gen_ai.response.model"] = upstream_model
        elif a.outcome not in ("pending", "cancelled", "hedge_lost"):
            attrs["error.type"] = a.outcome
        if a.upstream_status is not None:
            attrs["http.response.status_code"] = a.upstream_status
        if a.usage is not None:
            attrs["gen_ai.usage.input_tokens"] = a.usage.prompt_total
            attrs["gen_ai.usage.output_tokens"] = a.usage.completion_total
        if a.ttft_s is not None:
            attrs["modelplex.time_to_first_token_s"] = a.ttft_s
        span = self._tracer.start_span(f"{op} {upstream_model}", context=parent, kind=self._client_kind,
                                       start_time=at(a.started), attributes=attrs)
        if "error.type" in attrs:
            span.set_status(self._status(self._error_code, (a.message or a.outcome)[:500]))
        span.end(end_time=at(a.ended or end))

    def flush(self, timeout_s: float = 5.0) -> bool:
        return bool(self.provider.force_flush(int(timeout_s * 1000)))

    async def close(self) -> None:
        await asyncio.to_thread(self.provider.shutdown)
