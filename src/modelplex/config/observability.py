"""Config sections for metrics, tracing and alerts (`observability:` and `alerts:`).

Alert rules are one definition used three ways: evaluated in the gateway
(observability/alerts.py), exported as Prometheus alerting rules and drawn on the Grafana
dashboard (observability/alerts_export.py). docs/alerts.md describes every field.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from modelplex.config.base import Strict

AlertKind = Literal[
    "error_rate", "latency_p", "spend_rate", "budget_pct", "breaker_open", "unpriced_model", "spool_backlog"
]
Severity = Literal["info", "warning", "critical"]
GroupLabel = Literal["route", "model", "provider", "deployment"]
LatencyMetric = Literal["total", "ttft", "overhead"]
ErrorKind = Literal["server", "limit", "client"]

# The request labels a rule of each kind may filter and group by: those its metric carries.
RULE_LABELS: dict[str, tuple[str, ...]] = {
    "error_rate": ("route", "model", "provider", "deployment"),
    "latency_p:total": ("route", "model"),
    "latency_p:ttft": ("route", "model", "provider", "deployment"),
    "latency_p:overhead": (),
    "spend_rate": ("route", "model", "provider", "deployment"),
    "budget_pct": (),
    "breaker_open": ("deployment",),
    "unpriced_model": ("model", "deployment"),
    "spool_backlog": (),
}
# Fields that only some kinds read; setting one on another kind is an error, not silently ignored.
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "min_requests": ("error_rate", "latency_p"),
    "errors": ("error_rate",),
    "percentile": ("latency_p",),
    "latency": ("latency_p",),
    "stream": ("latency_p",),
    "budgets": ("budget_pct",),
}
WINDOWED: frozenset[str] = frozenset({"error_rate", "latency_p", "spend_rate", "unpriced_model"})
RULE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


class Metrics(Strict):
    enabled: bool = True
    # /metrics is public (Prometheus scrapes without credentials) unless this asks for
    # `server.admin_key` as a bearer token.
    require_admin_key: bool = False
    # With several workers, where their values meet (prometheus_client multiprocess mode).
    # Default: /tmp/modelplex-metrics/<port>. Emptied when the gateway starts.
    multiprocess_dir: str | None = None
    # Requests are tallied in plain Python per worker and flushed into the exported values this
    # often: the request path never touches a lock or a file.
    flush_interval_s: float = Field(1.0, gt=0, le=60)


class Tracing(Strict):
    enabled: bool = False
    otlp_endpoint: str | None = None  # e.g. http://otel-collector:4318/v1/traces
    otlp_headers: dict[str, SecretStr] = Field(default_factory=dict)  # e.g. x-honeycomb-team
    otlp_timeout_s: float = Field(10.0, gt=0)
    service_name: str = "modelplex"
    sample_ratio: float = Field(1.0, ge=0, le=1)


class Observability(Strict):
    metrics: Metrics = Field(default_factory=Metrics)
    tracing: Tracing = Field(default_factory=Tracing)


class AlertFilters(Strict):
    """Only series whose label is one of the listed values (public config names)."""

    route: list[str] | None = None
    model: list[str] | None = None
    provider: list[str] | None = None
    deployment: list[str] | None = None

    def given(self) -> dict[str, list[str]]:
        return {k: v for k, v in (("route", self.route), ("model", self.model), ("provider", self.provider),
                                  ("deployment", self.deployment)) if v is not None}


class AlertRule(Strict):
    """Fires when the rule's value is above `threshold` for `for_s`; resolves once it has been at
    or below it for `keep_firing_s` (the hysteresis: one bad minute pages once)."""

    name: str
    kind: AlertKind
    threshold: float
    window_s: float = Field(300.0, gt=0)  # the sliding window of windowed kinds
    for_s: float = Field(0.0, ge=0)
    keep_firing_s: float = Field(300.0, ge=0)
    severity: Severity = "warning"
    summary: str | None = None  # a sentence for people; default: generated from the rule
    filters: AlertFilters = Field(default_factory=AlertFilters)
    by: list[GroupLabel] = Field(default_factory=list)  # one alert per value of these labels
    notify: list[str] | None = None  # webhook names; None: every webhook
    min_requests: int = Field(10, ge=1)  # error_rate, latency_p: fewer in the window is no signal
    # error_rate: which errors count (server: the gateway's or the providers' fault)
    errors: list[ErrorKind] = Field(default_factory=lambda: list[ErrorKind](["server"]))
    percentile: float = Field(0.95, gt=0, lt=1)  # latency_p
    latency: LatencyMetric = "total"  # latency_p: request total, time to first token, overhead
    stream: bool | None = None  # latency_p total: only streamed (true) or unstreamed (false)
    budgets: list[str] | None = None  # budget_pct: budget names; None: every budget

    @model_validator(mode="after")
    def _check(self) -> AlertRule:
        if not RULE_NAME.match(self.name):
            raise ValueError(f"alert name {self.name!r}: letters, digits, '_', '.', '-', from a letter")
        for fld, kinds in KIND_FIELDS.items():
            if fld in self.model_fields_set and self.kind not in kinds:
                raise ValueError(f"{fld} applies to {' and '.join(kinds)} rules only, not {self.kind}")
        if "window_s" in self.model_fields_set and self.kind not in WINDOWED:
            raise ValueError(f"{self.kind} rules look at the current value: window_s does not apply")
        if self.stream is not None and self.latency != "total":
            raise ValueError("stream applies to latency: total only")
        allowed = self.labels()
        for label in [*self.filters.given(), *self.by]:
            if label not in allowed:
                have = ", ".join(allowed) or "none"
                raise ValueError(f"{self.kind} rules cannot filter or group by {label} (they can: {have})")
        if self.kind in ("budget_pct",) and not self.threshold > 0:
            raise ValueError("budget_pct threshold is a percentage of the cap, above 0")
        if self.kind == "error_rate" and not 0 <= self.threshold < 1:
            raise ValueError("error_rate threshold is a fraction of requests, in [0, 1)")
        return self

    def labels(self) -> tuple[str, ...]:
        key = f"latency_p:{self.latency}" if self.kind == "latency_p" else self.kind
        return RULE_LABELS[key]


class Webhook(Strict):
    """Receives a JSON POST per firing and resolved alert: Slack-compatible `text` plus fields."""

    name: str = Field(min_length=1)
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    timeout_s: float = Field(5.0, gt=0)


def default_rules() -> list[AlertRule]:
    """The rules evaluated when a config sets none, and shipped in deploy/ (Prometheus, Grafana)."""
    return [
        AlertRule(name="modelplex_high_error_rate", kind="error_rate", threshold=0.05, window_s=300,
                  for_s=120, severity="critical", min_requests=20,
                  summary="More than 5% of requests fail on the gateway's or the providers' side."),
        AlertRule(name="modelplex_slow_first_token", kind="latency_p", latency="ttft", percentile=0.95,
                  threshold=10.0, window_s=300, for_s=300, by=["model"],
                  summary="p95 time to first token above 10 s."),
        AlertRule(name="modelplex_gateway_overhead", kind="latency_p", latency="overhead", percentile=0.99,
                  threshold=0.05, window_s=300, for_s=300,
                  summary="p99 gateway overhead above 50 ms."),
        AlertRule(name="modelplex_spend_rate", kind="spend_rate", threshold=100.0, window_s=3600,
                  summary="More than 100 (reporting currency) spent in the last hour."),
        AlertRule(name="modelplex_budget_80pct", kind="budget_pct", threshold=80.0,
                  summary="A budget is more than 80% used."),
        AlertRule(name="modelplex_budget_exhausted", kind="budget_pct", threshold=99.99, severity="critical",
                  summary="A budget is used up."),
        AlertRule(name="modelplex_breaker_open", kind="breaker_open", threshold=0.0, for_s=60,
                  summary="A deployment's circuit breaker has been open for a minute."),
        AlertRule(name="modelplex_unpriced_model", kind="unpriced_model", threshold=0.0, window_s=3600,
                  keep_firing_s=3600, summary="Requests answered by a deployment without a price."),
        AlertRule(name="modelplex_request_log_backlog", kind="spool_backlog", threshold=10000.0, for_s=300,
                  summary="More than 10,000 request-log rows wait in the local spool."),
    ]


class Alerts(Strict):
    """Alert rules evaluated in the gateway; notifications to webhooks and the log."""

    enabled: bool = True
    evaluate_every_s: float = Field(15.0, gt=0, le=3600)
    log: bool = True  # log every firing and resolved alert (logger modelplex.alerts)
    webhooks: list[Webhook] = Field(default_factory=list)
    rules: list[AlertRule] = Field(default_factory=default_rules)

    @model_validator(mode="after")
    def _check(self) -> Alerts:
        names = [r.name for r in self.rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"alert rule names must be unique: {', '.join(dup)}")
        hooks = {w.name for w in self.webhooks}
        if len(hooks) != len(self.webhooks):
            raise ValueError("webhook names must be unique")
        for r in self.rules:
            unknown = sorted(set(r.notify or ()) - hooks)
            if unknown:
                raise ValueError(f"rule {r.name} notifies unknown webhook(s): {', '.join(unknown)}")
        return self
