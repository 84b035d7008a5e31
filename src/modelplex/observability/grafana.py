"""The Grafana dashboard, generated from the metric table and the alert rules (never hand-edited).

Rows of time series: traffic, errors, latency, tokens and money, reliability, the request log,
and one panel per alert rule drawing the rule's value with its threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelplex.config.observability import AlertRule, Alerts
from modelplex.observability import metrics as m
from modelplex.observability.alerts_export import promql
from modelplex.observability.alerts_notify import describe
from modelplex.observability.alerts_values import group_labels

DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "[$__rate_interval]"
UID = "modelplex-gateway"


@dataclass(frozen=True)
class Panel:
    title: str
    targets: tuple[tuple[str, str], ...]  # (expr, legend)
    unit: str = "short"
    description: str = ""
    threshold: float | None = None


def _q(q: float, metric: m.Metric, by: str = "", sel: str = "") -> str:
    keys = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({keys}) (rate({metric.name}_bucket{sel}{RATE})))"


def _recorded(name: str) -> str:
    return next(expr for rec, expr, _ in m.RECORDING_RULES if rec == name)


def _rate(metric: m.Metric, by: str = "", sel: str = "") -> str:
    return f"sum{f' by ({by})' if by else ''} (rate({metric.name}{sel}{RATE}))"


NOT_OK = '{outcome!~"ok|cancelled|hedge_lost"}'
ANSWER, WASTE, RETRIES = '{kind="answer"}', '{kind!="answer"}', '{kind!="first"}'
ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    ("Traffic", (
        Panel("Requests per second by model", ((_rate(m.REQUESTS, "model"), "{{model}}"),), "reqps"),
        Panel("Outcomes",
              ((_rate(m.REQUESTS, "outcome, error_kind"), "{{outcome}} {{error_kind}}"),), "reqps"),
        Panel("In-flight requests",
              ((f"sum({m.INFLIGHT.name})", "gateway"), (f"sum({m.QUEUED.name})", "queued"),
               (f"sum by (deployment) ({m.UPSTREAM_INFLIGHT.name})", "{{deployment}}"))),
    )),
    ("Errors", (
        Panel("Error ratio by model (server side)",
              ((_recorded("modelplex:error_ratio:rate5m"), "{{model}}"),), "percentunit"),
        Panel("Upstream errors by provider and class",
              ((_rate(m.ATTEMPTS, "provider, outcome", NOT_OK), "{{provider}} {{outcome}}"),), "reqps"),
        Panel("Rejections: limits, budgets, shedding",
              ((_rate(m.REJECTIONS, "reason"), "{{reason}}"),), "reqps"),
    )),
    ("Latency", (
        Panel("Request latency",
              tuple((_q(q, m.REQUEST_DURATION), f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)), "s"),
        Panel("Time to first token p95 by model", ((_q(0.95, m.TTFT, "model"), "{{model}}"),), "s"),
        Panel("Upstream latency p95 by deployment",
              ((_q(0.95, m.UPSTREAM_DURATION, "deployment", '{outcome="ok"}'), "{{deployment}}"),), "s"),
        Panel("Gateway overhead", tuple((_q(q, m.OVERHEAD), f"p{int(q * 100)}") for q in (0.5, 0.99)), "s"),
        Panel("Failover time p95", ((_q(0.95, m.FAILOVER), "p95"),), "s",
              "From a primary's failure to the first byte from the fallback."),
        Panel("Queue wait p95", ((_q(0.95, m.QUEUE_WAIT), "p95"),), "s",
              "Requests that waited for an in-flight slot (load shedding queue)."),
    )),
    ("Tokens and money", (
        Panel("Tokens per second by kind", ((_rate(m.TOKENS, "kind"), "{{kind}}"),)),
        Panel("Spend per hour by model", ((f"3600 * {_rate(m.SPEND, 'model', ANSWER)}", "{{model}}"),),
              description="Reporting currency (modelplex_build_info's currency label)."),
        Panel("Waste per hour by cause", ((f"3600 * {_rate(m.SPEND, 'kind', WASTE)}", "{{kind}}"),)),
        Panel("Cost per successful response",
              ((_recorded("modelplex:cost_per_successful_response:rate5m"), "answers only"),
               (_recorded("modelplex:spend_per_successful_response:rate5m"), "with waste"))),
        Panel("Savings per hour by route",
              ((f"3600 * ({_recorded('modelplex:savings:rate1h')})", "{{route}}"),),
              description="Against each route's baseline model."),
        Panel("Unpriced requests",
              ((f"sum by (deployment) (increase({m.UNPRICED.name}[1h]))", "{{deployment}}"),)),
    )),
    ("Reliability", (
        Panel("Circuit breakers not closed",
              ((f'sum by (deployment, state) ({m.BREAKER_STATE.name}{{state!="closed"}})',
                "{{deployment}} {{state}}"),)),
        Panel("Retries, fallbacks and hedges", ((_rate(m.ATTEMPTS, "kind", RETRIES), "{{kind}}"),), "ops"),
        Panel("Stream continuations and skipped events",
              ((_rate(m.CONTINUATIONS), "continued"), (_rate(m.SKIPPED_EVENTS), "skipped events")), "ops"),
    )),
    ("Request log", (
        Panel("Request-log events", ((_rate(m.LOG_EVENTS, "event"), "{{event}}"),), "ops"),
        Panel("Spool backlog", ((f"sum by (instance) ({m.LOG_BACKLOG.name})", "{{instance}}"),)),
        Panel("Alerts firing", ((f"sum by (rule) ({m.ALERTS_FIRING.name})", "{{rule}}"),)),
    )),
)


def _alert_panel(rule: AlertRule) -> Panel:
    unit = {"error_rate": "percentunit", "latency_p": "s", "budget_pct": "percent"}.get(rule.kind, "short")
    legend = " ".join(f"{{{{{label}}}}}" for label in _group(rule)) or rule.name
    summary = rule.summary or describe(rule)
    return Panel(rule.name, ((promql(rule).value, legend),), unit, summary, rule.threshold)


def _group(rule: AlertRule) -> tuple[str, ...]:
    return group_labels(rule) if rule.kind != "spool_backlog" else ("instance",)


def _panel(p: Panel, pid: int, x: int, y: int, width: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": p.unit, "custom": {"lineWidth": 1, "fillOpacity": 10}}
    if p.threshold is not None:
        steps = [{"color": "green", "value": None}, {"color": "red", "value": p.threshold}]
        defaults["thresholds"] = {"mode": "absolute", "steps": steps}
        defaults["custom"]["thresholdsStyle"] = {"mode": "line"}
    return {
        "id": pid,
        "type": "timeseries",
        "title": p.title,
        "description": p.description,
        "datasource": DS,
        "gridPos": {"h": 8, "w": width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [{"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": DS}
                    for i, (expr, legend) in enumerate(p.targets)],
    }


def dashboard(alerts: Alerts) -> dict[str, Any]:
    rows = [*ROWS, ("Alert rules", tuple(_alert_panel(r) for r in alerts.rules))]
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for title, row in rows:
        panels.append({"id": pid, "type": "row", "title": title, "collapsed": False, "panels": [],
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
        pid, y = pid + 1, y + 1
        for i, p in enumerate(row):
            panels.append(_panel(p, pid, (i % 3) * 8, y + (i // 3) * 8, 8))
            pid += 1
        y += 8 * ((len(row) + 2) // 3)
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                      "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "uid": UID,
        "title": "modelplex gateway",
        "description": "Generated by `modelplex export-monitoring`; docs/metrics.md lists every series.",
        "tags": ["modelplex", "llm-gateway"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "templating": {"list": [{"name": "datasource", "label": "Prometheus", "type": "datasource",
                                 "query": "prometheus", "current": {}, "hide": 0}]},
        "annotations": {"list": []},
        "panels": panels,
    }
