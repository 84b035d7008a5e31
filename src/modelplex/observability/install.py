"""Plug metrics, traces and alerts into a gateway process through the `Services` door.

`install(svc)` appends the sinks (the metrics recorder; the tracer when tracing is on), adds
`GET /metrics`, the background tasks (flush + gauges every second, alert evaluation) and the
closers. What it needs from parts built elsewhere comes in as small callables: budget use
(`budgets`) and, to replace the default (the request log found among `svc.sinks`), the request
log's counters (`log_stats`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from modelplex import __version__
from modelplex.config.observability import Alerts
from modelplex.observability import metrics as m
from modelplex.observability.alerts import BudgetSource, Evaluator
from modelplex.observability.alerts_notify import Notifier
from modelplex.observability.exposition import CONTENT_TYPE, Exported, multiprocess_dir
from modelplex.observability.recorder import Recorder
from modelplex.observability.sampler import LogStatsSource, Sampler
from modelplex.server.adminauth import admin_authorized
from modelplex.server.http import Receive, Scope, Send, send_body
from modelplex.services import Services

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from modelplex.observability.tracing import Tracer

log = logging.getLogger("modelplex.metrics")
DEAD_WORKER_SWEEP_S = 10.0


@dataclass
class Observability:
    """What `install` built (tests drive it directly)."""

    exported: Exported
    recorder: Recorder
    sampler: Sampler
    evaluator: Evaluator | None = None
    tracer: Tracer | None = None
    notifier: Notifier | None = None
    closed: bool = field(default=False)

    def tick(self, svc: Services) -> None:
        self.recorder.flush()
        self.sampler.sample()


def install(
    svc: Services,
    env: Mapping[str, str] | None = None,
    *,
    budgets: BudgetSource | None = None,
    log_stats: LogStatsSource | None = None,
    span_exporter: SpanExporter | None = None,
) -> Observability:
    """Wire metrics, tracing and alerts into `svc` per its config's `observability` and `alerts`.

    `env` is the process environment (read in cli.environment): PROMETHEUS_MULTIPROC_DIR there
    means several workers share their values. Settings apply from process start; a reload
    changes alert rules and /metrics' admin requirement, not what is installed."""
    config = svc.runtime().config
    exported = Exported(multiprocess_dir(env or {}))
    exported.gauges[m.BUILD_INFO.name].labels(__version__, config.metering.currency).set(1)
    recorder = Recorder(exported, svc.runtime)
    obs = Observability(exported, recorder, Sampler(exported, svc, log_stats))
    alerts_on = config.alerts.enabled and bool(config.alerts.rules)
    if config.observability.metrics.enabled or alerts_on:
        svc.sinks.append(recorder.record)
        svc.tasks.append(lambda: _refresh(svc, obs))
    if config.observability.metrics.enabled:
        async def metrics_route(scope: Scope, receive: Receive, send: Send) -> None:
            await _metrics(svc, obs, scope, receive, send)

        svc.routes[("GET", "/metrics")] = metrics_route
    if alerts_on:
        def settings() -> Alerts:
            return svc.runtime().config.alerts

        def counted(sink: str, status: str, outcome: str) -> None:
            exported.counters[m.ALERT_NOTIFICATIONS.name].labels(sink, status, outcome).inc()

        obs.notifier = Notifier(settings, counted)
        obs.evaluator = Evaluator(settings, exported, recorder.flush, obs.notifier, budgets)
        svc.tasks.append(obs.evaluator.run)
    if config.observability.tracing.enabled:
        from modelplex.observability.tracing import Tracer

        obs.tracer = Tracer(config.observability.tracing, svc.runtime, span_exporter)
        svc.sinks.append(obs.tracer.record)
    svc.closers.append(lambda: _close(svc, obs))
    return obs


async def _refresh(svc: Services, obs: Observability) -> None:
    loop = asyncio.get_running_loop()
    swept = 0.0
    while True:
        try:
            obs.tick(svc)
            if loop.time() - swept >= DEAD_WORKER_SWEEP_S:
                swept = loop.time()
                obs.exported.forget_dead_workers()
        except Exception:
            log.exception("metrics refresh failed; it goes on")
        await asyncio.sleep(svc.runtime().config.observability.metrics.flush_interval_s)


async def _metrics(svc: Services, obs: Observability, scope: Scope, receive: Receive, send: Send) -> None:
    rt = svc.runtime()
    if rt.config.observability.metrics.require_admin_key and not admin_authorized(rt, scope):
        body = b'{"error":{"message":"/metrics needs the admin key as a bearer token.",' \
               b'"code":"unauthorized"}}'
        await send_body(send, 401, body, [(b"www-authenticate", b"Bearer")])
        return
    obs.tick(svc)  # this worker's latest; other workers' are at most one flush interval old
    body = await obs.exported.render_async()
    await send_body(send, 200, body, [], content_type=CONTENT_TYPE)


async def _close(svc: Services, obs: Observability) -> None:
    if obs.closed:
        return
    obs.closed = True
    obs.tick(svc)
    if obs.notifier is not None:
        await obs.notifier.drain()
    if obs.evaluator is not None:
        obs.evaluator.leader.release()
    if obs.tracer is not None:
        await obs.tracer.close()
    obs.exported.close()
    log.debug("observability closed in pid %d", os.getpid())
