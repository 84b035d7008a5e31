"""Micro-benchmark: what metrics (and, for comparison, tracing) add to each request.

Times `pipeline.finish` (settle + every sink) over pre-built request contexts shaped like real
ones (one successful attempt with usage; every tenth request a failed first attempt and a
fallback), with and without `install`, in CPU microseconds per request. The background flush is timed apart and reported per
request. Run:

    .venv/bin/python tests/observability/bench_overhead.py [N]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from modelplex import pipeline
from modelplex.config.schema import Config
from modelplex.context import AttemptRecord, RequestContext
from modelplex.metering.catalog import load_catalog
from modelplex.observability.install import Observability, install
from modelplex.providers.registry import load_registry
from modelplex.runtime import RuntimeHolder, build_runtime
from modelplex.services import Services
from modelplex.types import Usage

CONFIG = {
    "deployments": [
        {"name": "oa", "provider": "openai", "model": "gpt-mini", "api_key": "x",
         "price": {"input": 0.15, "output": 0.6}},
        {"name": "an", "provider": "anthropic", "model": "claude-haiku", "api_key": "y",
         "price": {"input": 1.0, "output": 5.0}},
    ],
    "models": [{"name": "fast", "deployments": ["oa", "an"]}],
}


class NullExporter(SpanExporter):
    """Exports nowhere: the benchmark times building spans, not the network."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def services(observe: bool, tracing: bool = False) -> tuple[Services, Observability | None]:
    data: dict[str, Any] = dict(CONFIG)
    if tracing:
        data["observability"] = {"tracing": {"enabled": True}}
    config = Config.model_validate(data)
    catalog = load_catalog()
    rt = build_runtime(config, load_registry(), catalog=catalog)
    svc = Services(holder=RuntimeHolder(rt, None, {}, catalog))
    return svc, install(svc, span_exporter=NullExporter()) if observe else None


def contexts(svc: Services, n: int) -> list[RequestContext]:
    rt = svc.runtime()
    out = []
    for i in range(n):
        ctx = RequestContext(dialect="openai", operation="chat")
        ctx.model, ctx.stream = "fast", i % 2 == 0
        t = ctx.started
        if i % 10 == 0:
            ctx.attempts.append(AttemptRecord("oa", "openai", "fast", t, t + 0.05, "upstream_server_error", 500))
            ctx.first_failure_at = t + 0.05
        a = AttemptRecord("an" if i % 10 == 0 else "oa", "anthropic" if i % 10 == 0 else "openai", "fast",
                          t + 0.05, t + 0.3, "ok", 200, ttft_s=0.2,
                          usage=Usage(input_tokens=120, output_tokens=40, cached_input_tokens=20))
        ctx.attempts.append(a)
        ctx.answered_by, ctx.answered_model = rt.endpoints[a.deployment], "fast"
        ctx.usage, ctx.upstream_s = a.usage, 0.25
        ctx.first_byte_at = t + 0.3 if ctx.stream else None
        if ctx.first_failure_at is not None:
            ctx.failover_s = 0.25
        out.append(ctx)
    return out


def per_request_us(svc: Services, n: int, rounds: int = 7) -> float:
    samples = []
    for _ in range(rounds):
        batch = contexts(svc, n)
        finish: Callable[[Services, RequestContext], None] = pipeline.finish
        t0 = time.process_time()  # CPU time: steadier than wall time on a busy machine
        for ctx in batch:
            finish(svc, ctx)
        samples.append((time.process_time() - t0) / n * 1e6)
    return statistics.median(samples)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    base, _ = services(False)
    on, obs = services(True)
    assert obs is not None
    off_us = per_request_us(base, n)
    on_us = per_request_us(on, n)
    obs.recorder.flush()
    batch = contexts(on, n)
    for ctx in batch:
        pipeline.finish(on, ctx)
    t0 = time.process_time()
    obs.recorder.flush()
    flush_us = (time.process_time() - t0) / n * 1e6
    traced, tobs = services(True, tracing=True)
    traced_us = per_request_us(traced, n // 4, rounds=3)
    assert tobs is not None and tobs.tracer is not None
    tobs.tracer.provider.shutdown()
    print(f"finish() without observability: {off_us:.2f} us/request (settle only)")
    print(f"finish() with metrics:          {on_us:.2f} us/request  (+{on_us - off_us:.2f})")
    print(f"background flush, amortised:    {flush_us:.3f} us/request ({n} requests per flush)")
    print(f"finish() with metrics+tracing:  {traced_us:.2f} us/request  (+{traced_us - off_us:.2f})")


if __name__ == "__main__":
    main()
