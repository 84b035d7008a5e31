"""Every Prometheus metric modelplex exports, defined once, here.

Label values are bounded: they come from the config (route, model, provider and deployment
names), from code (dialects, outcomes, error codes of the error tree, token kinds), never from the
caller. A request for a model the config does not know is labelled `unknown`. docs/metrics.md
documents every metric in this table (a test keeps them in step).

Money is in units of the reporting currency (`metering.currency`, also the `currency` label of
`modelplex_build_info`) as floats: Prometheus keeps float64, exact to the micro-unit far beyond
any realistic spend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]

# Latency buckets in seconds: fine below 100 ms (gateway overhead, fast TTFT), coarse up to the
# long tail of generation.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
                   300.0)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
QUEUE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FAILOVER_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

NONE = "none"  # a label with nothing to say: no route, no answering deployment, no error
UNKNOWN = "unknown"  # a model name the config does not know


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    kind: Kind
    labels: tuple[str, ...]
    help: str
    buckets: tuple[float, ...] = ()
    # How a gauge's values from several worker processes combine (prometheus_client modes).
    mode: str = ""


# --- requests ----------------------------------------------------------------------------------

REQUESTS = Metric(
    "modelplex_requests_total", "counter",
    ("operation", "dialect", "route", "model", "provider", "deployment", "stream", "outcome", "error",
     "error_kind", "fallback", "hedged"),
    "Finished requests. outcome: ok | error | aborted (client gone). error: the error code "
    "(none when ok); error_kind: none | client | limit | server. deployment/provider: the one that "
    "answered (none without an answer). fallback: answered by another deployment than the first "
    "tried; hedged: a hedge attempt ran.",
)
ATTEMPTS = Metric(
    "modelplex_attempts_total", "counter",
    ("provider", "deployment", "model", "kind", "outcome"),
    "Upstream attempts. kind: first | retry (same deployment again) | fallback (another deployment) "
    "| hedge. outcome: ok | cancelled | hedge_lost | an upstream error code.",
)
REJECTIONS = Metric(
    "modelplex_rejections_total", "counter", ("reason",),
    "Requests refused by the gateway before any attempt. reason: rpm | tpm | concurrency | budget "
    "| budget_store_down (admission's limits and budgets) | shed (503: over the in-flight limit "
    "and queue).",
)
INFLIGHT = Metric(
    "modelplex_inflight_requests", "gauge", (),
    "Inference requests in progress (summed over the worker processes).", mode="livesum",
)
QUEUED = Metric(
    "modelplex_queued_requests", "gauge", (),
    "Requests waiting for an in-flight slot (the shedding queue).", mode="livesum",
)
QUEUE_WAIT = Metric(
    "modelplex_queue_wait_seconds", "histogram", (),
    "Time requests that had to queue waited for an in-flight slot.", buckets=QUEUE_BUCKETS,
)
UPSTREAM_INFLIGHT = Metric(
    "modelplex_upstream_inflight", "gauge", ("deployment",),
    "Upstream attempts waiting for their first byte or full answer, per deployment.", mode="livesum",
)

# --- latency -----------------------------------------------------------------------------------

REQUEST_DURATION = Metric(
    "modelplex_request_duration_seconds", "histogram",
    ("operation", "route", "model", "stream", "outcome"),
    "Request time in the gateway, from arrival to the end of the answer (for a stream: its last "
    "byte).", buckets=LATENCY_BUCKETS,
)
TTFT = Metric(
    "modelplex_time_to_first_token_seconds", "histogram", ("route", "model", "provider", "deployment"),
    "Streams: from arrival to the first byte of the answer sent to the client.",
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_DURATION = Metric(
    "modelplex_upstream_duration_seconds", "histogram", ("provider", "deployment", "outcome"),
    "One attempt, from its start to its answer (for a stream: to its first token), error, or "
    "cancellation. outcome: ok | error | cancelled.", buckets=LATENCY_BUCKETS,
)
OVERHEAD = Metric(
    "modelplex_gateway_overhead_seconds", "histogram", ("operation", "stream"),
    "Successful requests: gateway time not spent waiting on the answering upstream (parsing, "
    "routing, failed attempts excluded), up to the answer (a stream: its first byte).",
    buckets=OVERHEAD_BUCKETS,
)
FAILOVER = Metric(
    "modelplex_failover_seconds", "histogram", ("route", "model"),
    "Requests answered after a failure: from the first failed attempt to the first byte of the "
    "answer.", buckets=FAILOVER_BUCKETS,
)

# --- tokens and money --------------------------------------------------------------------------

TOKENS = Metric(
    "modelplex_tokens_total", "counter", ("provider", "deployment", "model", "kind"),
    "Tokens of answers by kind: input | output | cached_input | cache_write | reasoning (kept "
    "apart as providers bill them). Includes a stream cut after it started; estimated when the "
    "provider reported none.",
)
SPEND = Metric(
    "modelplex_spend_total", "counter", ("route", "model", "provider", "deployment", "kind"),
    "Money spent, in the reporting currency. kind: answer (successful responses) | waste: "
    "hedge_lost, failed_attempts (tokens billed by attempts that failed before another answered), "
    "truncated (a stream cut mid-way), aborted (client gone), failed (a request that failed).",
)
COUNTERFACTUAL = Metric(
    "modelplex_counterfactual_cost_total", "counter", ("route", "model"),
    "What successful answers would have cost on their route's baseline model (reporting currency). "
    "Savings = this - modelplex_compared_cost_total.",
)
COMPARED = Metric(
    "modelplex_compared_cost_total", "counter", ("route", "model"),
    "What the same answers as in modelplex_counterfactual_cost_total did cost (only requests whose "
    "cost and counterfactual are both known).",
)
UNPRICED = Metric(
    "modelplex_unpriced_requests_total", "counter", ("model", "deployment"),
    "Requests answered by a deployment without a price: their cost is unknown (never counted as 0).",
)

# --- reliability -------------------------------------------------------------------------------

BREAKER_STATE = Metric(
    "modelplex_breaker_state", "gauge", ("deployment", "state"),
    "Worker processes that see the deployment's circuit breaker in this state (closed | open | "
    "half_open). Sampled every second.", mode="livesum",
)
BREAKER_OPENINGS = Metric(
    "modelplex_breaker_openings_total", "counter", ("deployment",),
    "Circuit breaker openings, as seen by the once-a-second sampling of each worker.",
)
SKIPPED_EVENTS = Metric(
    "modelplex_stream_skipped_events_total", "counter", ("provider", "deployment"),
    "Malformed upstream stream events skipped (the stream went on).",
)
CONTINUATIONS = Metric(
    "modelplex_stream_continuations_total", "counter", ("route", "model"),
    "Streams cut mid-way and resumed on a deployment by assistant prefill.",
)

# --- request log, budgets, alerts, build ----------------------------------------------------------

LOG_EVENTS = Metric(
    "modelplex_requestlog_events_total", "counter", ("event",),
    "Request-log pipeline events: spooled, shipped, dead_lettered, lost, batches, store_errors, "
    "retention_deleted (as the request log counts them).",
)
LOG_BACKLOG = Metric(
    "modelplex_requestlog_backlog_rows", "gauge", (),
    "Request-log rows waiting in the local spool to be shipped.", mode="livesum",
)
BUDGET_USED = Metric(
    "modelplex_budget_used_ratio", "gauge", ("budget",),
    "Spent / cap of each budget in its current period (1.0 = used up), sampled by the alert "
    "evaluator.", mode="livemax",
)
ALERTS_FIRING = Metric(
    "modelplex_alerts_firing", "gauge", ("rule", "severity"),
    "Alerts of each rule firing now in this gateway's own evaluation.", mode="livemax",
)
ALERT_NOTIFICATIONS = Metric(
    "modelplex_alert_notifications_total", "counter", ("sink", "status", "outcome"),
    "Alert notifications sent. sink: log or a webhook name; status: firing | resolved; "
    "outcome: ok | failed.",
)
BUILD_INFO = Metric(
    "modelplex_build_info", "gauge", ("version", "currency"),
    "Always 1: the modelplex version and the reporting currency of every money metric.", mode="livemax",
)

METRICS: tuple[Metric, ...] = (
    REQUESTS, ATTEMPTS, REJECTIONS, INFLIGHT, QUEUED, QUEUE_WAIT, UPSTREAM_INFLIGHT,
    REQUEST_DURATION, TTFT, UPSTREAM_DURATION, OVERHEAD, FAILOVER,
    TOKENS, SPEND, COUNTERFACTUAL, COMPARED, UNPRICED,
    BREAKER_STATE, BREAKER_OPENINGS, SKIPPED_EVENTS, CONTINUATIONS,
    LOG_EVENTS, LOG_BACKLOG, BUDGET_USED, ALERTS_FIRING, ALERT_NOTIFICATIONS, BUILD_INFO,
)

# Recording rules shipped with the alert rules (observability/alerts_export.py): the derived
# series the issue asks for, computed by Prometheus from the counters above.
RECORDING_RULES: tuple[tuple[str, str, str], ...] = (
    ("modelplex:cost_per_successful_response:rate5m",
     'sum(rate(modelplex_spend_total{kind="answer"}[5m])) '
     '/ sum(rate(modelplex_requests_total{outcome="ok"}[5m]))',
     "Average cost of a successful response (reporting currency); waste is shown apart."),
    ("modelplex:spend_per_successful_response:rate5m",
     "sum(rate(modelplex_spend_total[5m])) / sum(rate(modelplex_requests_total{outcome=\"ok\"}[5m]))",
     "All money spent (answers and waste) per successful response."),
    ("modelplex:waste:rate5m",
     'sum by (kind) (rate(modelplex_spend_total{kind!="answer"}[5m]))',
     "Money wasted per second, by cause."),
    ("modelplex:savings:rate1h",
     "sum by (route) (rate(modelplex_counterfactual_cost_total[1h])) "
     "- sum by (route) (rate(modelplex_compared_cost_total[1h]))",
     "Money saved per second by routing, against each route's baseline model."),
    ("modelplex:error_ratio:rate5m",
     'sum by (model) (rate(modelplex_requests_total{error_kind="server"}[5m])) '
     "/ sum by (model) (rate(modelplex_requests_total[5m]))",
     "Share of requests that failed on the gateway's or the providers' side."),
)

TOKEN_KINDS = ("input", "output", "cached_input", "cache_write", "reasoning")
