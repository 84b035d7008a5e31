"""Metrics in one process: what each kind of request adds, bounded labels, /metrics, docs."""

from __future__ import annotations

import re
from collections import deque
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from obs_helpers import ADMIN, config, failed, ok, services
from prometheus_client.parser import text_string_to_metric_families

from modelplex.errors import LimitExceeded, ModelNotFound, StreamInterrupted, UpstreamServerError
from modelplex.observability import metrics as m
from modelplex.observability.install import Observability, install
from modelplex.observability.sampler import LogStats
from modelplex.services import Services

DOCS = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def scrape(obs: Observability, svc: Services) -> dict[str, list[tuple[dict[str, str], float]]]:
    obs.tick(svc)
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(obs.exported.render().decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for ls, v in samples.get(name, []) if all(ls.get(k) == want for k, want in labels.items()))


@pytest.fixture
def svc_obs() -> tuple[Services, Observability]:
    svc = services()
    return svc, install(svc)


def test_a_successful_request_counts_everywhere(svc_obs: tuple[Services, Observability]) -> None:
    svc, obs = svc_obs
    ok(svc, stream=True)
    s = scrape(obs, svc)
    assert total(s, "modelplex_requests_total", model="fast", deployment="oa", provider="openai", outcome="ok",
                 error="none", error_kind="none", stream="true", fallback="false") == 1
    assert total(s, "modelplex_attempts_total", kind="first", outcome="ok", deployment="oa") == 1
    assert total(s, "modelplex_tokens_total", kind="input") == 1000
    assert total(s, "modelplex_tokens_total", kind="output") == 200
    assert total(s, "modelplex_tokens_total", kind="cached_input") == 50
    assert total(s, "modelplex_spend_total", kind="answer", model="fast") > 0
    assert total(s, "modelplex_time_to_first_token_seconds_count", model="fast") == 1
    assert total(s, "modelplex_gateway_overhead_seconds_count", stream="true") == 1
    assert total(s, "modelplex_request_duration_seconds_count", outcome="ok") == 1
    assert total(s, "modelplex_upstream_duration_seconds_count", deployment="oa", outcome="ok") == 1
    assert total(s, "modelplex_build_info", currency="EUR") == 1


def test_retries_fallbacks_waste_and_savings(svc_obs: tuple[Services, Observability]) -> None:
    svc, obs = svc_obs
    ctx = ok(svc, deployment="an", route="auto",
             attempts=[("oa", "upstream_server_error"), ("oa", "upstream_timeout")])
    s = scrape(obs, svc)
    assert total(s, "modelplex_attempts_total", kind="first", outcome="upstream_server_error") == 1
    assert total(s, "modelplex_attempts_total", kind="retry", outcome="upstream_timeout") == 1
    assert total(s, "modelplex_attempts_total", kind="fallback", outcome="ok", deployment="an") == 1
    assert total(s, "modelplex_requests_total", route="auto", model="fast", fallback="true") == 1
    assert total(s, "modelplex_failover_seconds_count", route="auto") == 1
    assert ctx.counterfactual_micro is not None and ctx.report_cost_micro is not None
    assert total(s, "modelplex_counterfactual_cost_total", route="auto") == pytest.approx(ctx.counterfactual_micro / 1e6)
    assert total(s, "modelplex_compared_cost_total", route="auto") == pytest.approx(ctx.report_cost_micro / 1e6)


def test_failures_are_classified_and_unknown_models_never_become_labels(
        svc_obs: tuple[Services, Observability]) -> None:
    svc, obs = svc_obs
    failed(svc)
    failed(svc, error=ModelNotFound("no such model"), requested="sk-live-SECRET-or-prompt text")
    failed(svc, error=LimitExceeded("over budget"), requested="fast")  # counted by admission
    s = scrape(obs, svc)
    assert total(s, "modelplex_requests_total", outcome="error", error="all_attempts_failed",
                 error_kind="server", model="fast") == 1
    assert total(s, "modelplex_requests_total", error="model_not_found", error_kind="client", model="unknown") == 1
    assert total(s, "modelplex_requests_total", error="rate_limit_exceeded", error_kind="limit") == 1
    text = obs.exported.render().decode()
    assert "SECRET" not in text and "prompt" not in text
    assert total(s, "modelplex_gateway_overhead_seconds_count") == 0  # only successful requests


def test_unpriced_and_hedged_and_truncated(svc_obs: tuple[Services, Observability]) -> None:
    svc, obs = svc_obs
    ok(svc, model="homegrown", deployment="local")
    ok(svc, attempts=[("an", "hedge_lost")])
    s = scrape(obs, svc)
    assert total(s, "modelplex_unpriced_requests_total", model="homegrown", deployment="local") == 1
    assert total(s, "modelplex_spend_total", model="homegrown") == 0
    # a hedge loser without reported usage costs nothing here; its attempt is counted
    assert total(s, "modelplex_attempts_total", outcome="hedge_lost") == 1
    cut = failed(svc, error=StreamInterrupted("cut", UpstreamServerError("x")))
    assert cut.waste_micro == 0  # no answer, no usage: nothing billed
    assert total(scrape(obs, svc), "modelplex_requests_total", error="stream_interrupted") == 1


def test_error_codes_outside_the_tree_are_other(svc_obs: tuple[Services, Observability]) -> None:
    svc, obs = svc_obs
    assert obs.recorder.codes.label("upstream_timeout") == "upstream_timeout"
    assert obs.recorder.codes.label("made-up code from somewhere") == "other"


def test_breakers_inflight_and_request_log_are_sampled() -> None:
    svc = services(config(routing={"breaker": {"consecutive_failures": 2, "open_s": 60}}))
    calls = {"n": 0}

    def stats() -> LogStats:
        calls["n"] += 1
        return LogStats(events={"spooled": 10 * calls["n"], "shipped": 5, "Bad Name!": 1}, backlog_rows=7)

    obs = install(svc, log_stats=stats)
    now = svc.health.clock()
    for _ in range(2):
        svc.health.failure("oa", UpstreamServerError("boom"), now)
    shed = svc.shedder.stats
    shed.in_flight, shed.queued, shed.shed = 3, 1, 2
    shed.queued_total, shed.waits = 2, deque([0.003, 0.2])
    svc.admission = SimpleNamespace(rejections={"budget": 4, "rpm": 1})  # type: ignore[assignment]
    s = scrape(obs, svc)
    assert total(s, "modelplex_breaker_state", deployment="oa", state="open") == 1
    assert total(s, "modelplex_breaker_state", deployment="an", state="closed") == 1
    assert total(s, "modelplex_breaker_openings_total", deployment="oa") == 1
    assert total(s, "modelplex_inflight_requests") == 3 and total(s, "modelplex_queued_requests") == 1
    assert total(s, "modelplex_rejections_total", reason="budget") == 4
    assert total(s, "modelplex_rejections_total", reason="shed") == 2
    assert total(s, "modelplex_queue_wait_seconds_count") == 2
    assert total(s, "modelplex_requestlog_backlog_rows") == 7
    s = scrape(obs, svc)
    assert total(s, "modelplex_requestlog_events_total", event="spooled") == 20
    assert total(s, "modelplex_requestlog_events_total", event="shipped") == 5
    assert total(s, "modelplex_breaker_openings_total", deployment="oa") == 1  # the same opening
    assert total(s, "modelplex_rejections_total", reason="budget") == 4  # no new rejections


async def _get(svc: Services, path: str, token: str | None = None) -> tuple[int, bytes]:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await svc.routes[("GET", path)]({"type": "http", "method": "GET", "path": path, "headers": headers},
                                    receive, send)
    return sent[0]["status"], b"".join(x.get("body", b"") for x in sent[1:])


async def test_metrics_route_is_public_or_behind_the_admin_key() -> None:
    svc = services()
    install(svc)
    status, body = await _get(svc, "/metrics")
    assert status == 200 and b"modelplex_build_info" in body
    locked = services(config(observability={"metrics": {"require_admin_key": True}}))
    install(locked)
    assert (await _get(locked, "/metrics"))[0] == 401
    assert (await _get(locked, "/metrics", "wrong"))[0] == 401
    assert (await _get(locked, "/metrics", ADMIN))[0] == 200


def test_metrics_off_installs_nothing_on_the_request_path() -> None:
    svc = services(config(observability={"metrics": {"enabled": False}}, alerts={"rules": []}))
    install(svc)
    assert svc.sinks == [] and ("GET", "/metrics") not in svc.routes


def test_every_metric_and_recording_rule_is_documented() -> None:
    text = DOCS.read_text()
    documented = set(re.findall(r"^\| `(modelplex[:_][a-z0-9_:]+)`", text, re.M))
    for metric in m.METRICS:
        assert metric.name in documented, f"{metric.name} is not in docs/metrics.md"
        row = next(line for line in text.splitlines() if line.startswith(f"| `{metric.name}`"))
        assert metric.kind in row, f"docs/metrics.md gives the wrong type for {metric.name}"
        for label in metric.labels:
            assert f"`{label}`" in row, f"docs/metrics.md misses label {label} of {metric.name}"
    for name, _, _ in m.RECORDING_RULES:
        assert name in documented, f"recording rule {name} is not in docs/metrics.md"
    assert documented <= {x.name for x in m.METRICS} | {r[0] for r in m.RECORDING_RULES}, "docs list a ghost"


def test_metric_names_and_labels_are_well_formed() -> None:
    names = [x.name for x in m.METRICS]
    assert len(names) == len(set(names))
    for x in m.METRICS:
        assert re.fullmatch(r"modelplex_[a-z_]+", x.name)
        assert (x.kind == "counter") == x.name.endswith("_total")
        assert x.kind != "gauge" or x.mode
        assert x.kind != "histogram" or list(x.buckets) == sorted(x.buckets)


def test_the_request_log_in_the_sinks_is_read_by_default(tmp_path: Path) -> None:
    from modelplex.observability.requestlog import RequestLog

    svc = services(config(request_log={"spool_dir": str(tmp_path / "spool"),
                                       "sqlite_path": str(tmp_path / "requests.db")}))
    svc.sinks.append(RequestLog(svc, svc.runtime().config.request_log, tmp_path))
    obs = install(svc)
    ok(svc)
    ok(svc)
    s = scrape(obs, svc)
    assert total(s, "modelplex_requestlog_events_total", event="spooled") == 2
    assert total(s, "modelplex_requestlog_backlog_rows") == 2  # nothing shipped: no shipper task runs
