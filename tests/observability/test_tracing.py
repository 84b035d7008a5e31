"""Traces: a span per request and per attempt with GenAI attributes; OTLP/HTTP export; off is free."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from obs_helpers import Receiver, config, failed, ok, services, wait_until
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from modelplex.errors import ModelNotFound
from modelplex.observability.install import install


def traced(exporter: InMemorySpanExporter | None = None, **tracing: Any) -> Any:
    svc = services(config(observability={"tracing": {"enabled": True, **tracing}}, alerts={"rules": []}))
    obs = install(svc, span_exporter=exporter)
    assert obs.tracer is not None
    return svc, obs


def by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for s in spans:
        out.setdefault(s.name, []).append(s)
    return out


def test_request_and_attempt_spans_carry_genai_attributes() -> None:
    exporter = InMemorySpanExporter()
    svc, obs = traced(exporter)
    ctx = ok(svc, deployment="an", route="auto", attempts=[("oa", "upstream_server_error")])
    assert obs.tracer.flush()
    spans = by_name(exporter.get_finished_spans())
    request = spans["chat auto"][0]
    assert request.kind == SpanKind.SERVER and request.parent is None
    attrs = dict(request.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "auto"
    assert attrs["gen_ai.response.model"] == "claude-haiku"
    assert attrs["gen_ai.provider.name"] == attrs["gen_ai.system"] == "anthropic"
    assert attrs["gen_ai.usage.input_tokens"] == 1050 and attrs["gen_ai.usage.output_tokens"] == 200
    assert attrs["modelplex.route"] == "auto" and attrs["modelplex.deployment"] == "an"
    assert attrs["modelplex.request_id"] == ctx.request_id and attrs["modelplex.attempts"] == 2
    assert isinstance(attrs["modelplex.cost"], float) and attrs["modelplex.cost"] > 0
    failed_attempt = spans["chat gpt-mini"][0]
    answer = spans["chat claude-haiku"][0]
    for child in (failed_attempt, answer):
        assert child.kind == SpanKind.CLIENT
        assert child.parent is not None and child.parent.span_id == request.context.span_id
        assert child.context.trace_id == request.context.trace_id
        times = (request.start_time, child.start_time, child.end_time, request.end_time)
        assert all(t is not None for t in times) and list(times) == sorted(times)  # type: ignore[type-var]
    f = dict(failed_attempt.attributes or {})
    assert f["error.type"] == "upstream_server_error" and f["server.address"] == "127.0.0.1"
    assert f["server.port"] == 9101 and f["gen_ai.provider.name"] == "openai"
    assert failed_attempt.status.status_code == StatusCode.ERROR
    assert dict(answer.attributes or {})["gen_ai.response.model"] == "claude-haiku"
    obs.tracer.provider.shutdown()


def test_failed_request_span_names_no_unknown_model() -> None:
    exporter = InMemorySpanExporter()
    svc, obs = traced(exporter)
    failed(svc, error=ModelNotFound("nope"), requested="my secret prompt as a model name")
    assert obs.tracer.flush()
    (span,) = exporter.get_finished_spans()
    assert span.name == "chat unknown"
    assert dict(span.attributes or {})["error.type"] == "model_not_found"
    assert span.status.status_code == StatusCode.ERROR
    assert "secret" not in str(dict(span.attributes or {}))
    obs.tracer.provider.shutdown()


def test_otlp_http_export_reaches_a_collector() -> None:
    collector = Receiver()
    try:
        svc, obs = traced(otlp_endpoint=f"{collector.url}/v1/traces", otlp_headers={"x-api-key": "k-123"},
                          service_name="gw-under-test")
        ok(svc, stream=True)
        assert obs.tracer.flush()
        wait_until(lambda: collector.posts)
        path, headers, body = collector.posts[0]
        assert path == "/v1/traces"
        lower = {k.lower(): v for k, v in headers.items()}
        assert lower["content-type"] == "application/x-protobuf" and lower["x-api-key"] == "k-123"
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        (resource_spans,) = request.resource_spans
        resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
        assert resource["service.name"] == "gw-under-test"
        spans = [s for scope in resource_spans.scope_spans for s in scope.spans]
        names = sorted(s.name for s in spans)
        assert names == ["chat fast", "chat gpt-mini"]
        root = next(s for s in spans if s.name == "chat fast")
        attrs = {a.key: a.value for a in root.attributes}
        assert attrs["gen_ai.request.model"].string_value == "fast"
        assert attrs["gen_ai.usage.output_tokens"].int_value == 200
        assert attrs["modelplex.stream"].bool_value is True
        obs.tracer.provider.shutdown()
    finally:
        collector.stop()


def test_tracing_off_never_imports_opentelemetry(tmp_path: Path) -> None:
    code = textwrap.dedent("""
        import sys
        from modelplex.config.schema import Config
        from modelplex.providers.registry import load_registry
        from modelplex.serve import services_for
        config = Config.model_validate({
            "deployments": [{"name": "d", "provider": "openai", "model": "m", "api_key": "x"}],
            "models": [{"name": "m", "deployments": ["d"]}],
            "request_log": {"enabled": False},
        })
        svc = services_for(config, load_registry(), None, {})
        loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
        assert not loaded, loaded
        assert svc.sinks, "metrics are on by default"
    """)
    # In a scratch directory: the default SQLite store keeps its key secret beside itself.
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
