"""The value of each alert rule, per label group, from the exported metrics.

The gateway evaluates its rules on the same series Prometheus scrapes (summed over the worker
processes), so a rule means the same thing here and in the exported Prometheus rules file
(alerts_export.py): windowed kinds keep a snapshot every evaluation and take differences over
the window, as `increase()` does; latency percentiles interpolate within histogram buckets, as
`histogram_quantile()` does.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping

from modelplex.config.observability import AlertRule
from modelplex.observability import metrics as m

Samples = Mapping[str, list[tuple[dict[str, str], float]]]
Group = tuple[tuple[str, str], ...]  # (label, value) pairs of the rule's `by` labels
Vector = dict[Group, list[float]]

LATENCY_METRICS = {"total": m.REQUEST_DURATION, "ttft": m.TTFT, "overhead": m.OVERHEAD}


def group_labels(rule: AlertRule) -> tuple[str, ...]:
    if rule.kind == "breaker_open":
        return ("deployment",)
    if rule.kind == "unpriced_model":
        return ("model", "deployment")
    if rule.kind == "budget_pct":
        return ("budget",)
    return tuple(rule.by)


def _matches(rule: AlertRule, labels: Mapping[str, str]) -> bool:
    for label, allowed in rule.filters.given().items():
        if labels.get(label) not in allowed:
            return False
    if rule.kind == "latency_p" and rule.latency == "total":
        if labels.get("outcome") == "aborted":
            return False
        if rule.stream is not None and labels.get("stream") != ("true" if rule.stream else "false"):
            return False
    return True


def _group(keys: tuple[str, ...], labels: Mapping[str, str]) -> Group:
    return tuple((k, labels.get(k, "")) for k in keys)


def vector(rule: AlertRule, samples: Samples) -> Vector:
    """The cumulative values a windowed rule needs, per group: error_rate [total, errors],
    latency_p [cumulative count per bucket...], spend_rate and unpriced_model [sum]."""
    keys = group_labels(rule)
    out: Vector = {}
    if rule.kind == "latency_p":
        metric = LATENCY_METRICS[rule.latency]
        bounds = [*metric.buckets, math.inf]
        for labels, value in samples.get(f"{metric.name}_bucket", []):
            if not _matches(rule, labels):
                continue
            row = out.setdefault(_group(keys, labels), [0.0] * len(bounds))
            row[bounds.index(float(labels["le"]))] += value
        return out
    name = {"error_rate": m.REQUESTS.name, "spend_rate": m.SPEND.name,
            "unpriced_model": m.UNPRICED.name}[rule.kind]
    for labels, value in samples.get(name, []):
        if not _matches(rule, labels):
            continue
        row = out.setdefault(_group(keys, labels), [0.0, 0.0] if rule.kind == "error_rate" else [0.0])
        row[0] += value
        if rule.kind == "error_rate" and labels.get("error_kind") in rule.errors:
            row[1] += value
    return out


def instant(rule: AlertRule, samples: Samples, budgets: Mapping[str, tuple[int, int]]) -> dict[Group, float]:
    """The current value of a rule on a gauge: processes seeing a breaker open, spool rows, % of
    a budget used."""
    if rule.kind == "budget_pct":
        return {(("budget", name),): 100.0 * spent / cap for name, (spent, cap) in budgets.items()
                if cap > 0 and (rule.budgets is None or name in rule.budgets)}
    out: dict[Group, float] = {}
    if rule.kind == "breaker_open":
        for labels, value in samples.get(m.BREAKER_STATE.name, []):
            if labels.get("state") == "open" and _matches(rule, labels):
                key = _group(("deployment",), labels)
                out[key] = out.get(key, 0.0) + value
        return out
    total = sum(v for _, v in samples.get(m.LOG_BACKLOG.name, []))
    return {(): total}


class Window:
    """Snapshots of one windowed rule's vector over time; differences over the rule's window."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.snapshots: deque[tuple[float, Vector]] = deque()

    def add(self, now: float, current: Vector) -> Vector:
        self.snapshots.append((now, current))
        horizon = now - self.window_s
        # Keep the newest snapshot at or before the window's start: the base of the difference.
        while len(self.snapshots) > 1 and self.snapshots[1][0] <= horizon:
            self.snapshots.popleft()
        _, base = self.snapshots[0]
        delta: Vector = {}
        for group, row in current.items():
            before = base.get(group)
            delta[group] = [max(v - (before[i] if before else 0.0), 0.0) for i, v in enumerate(row)]
        return delta


def quantile(q: float, cumulative: list[float], bounds: list[float]) -> float | None:
    """histogram_quantile(): linear interpolation inside the bucket holding the q-th observation."""
    total = cumulative[-1]
    if total <= 0:
        return None
    rank = q * total
    for i, count in enumerate(cumulative):
        if count >= rank:
            if math.isinf(bounds[i]):
                return bounds[i - 1] if i > 0 else None
            lower = bounds[i - 1] if i > 0 else 0.0
            below = cumulative[i - 1] if i > 0 else 0.0
            if count == below:
                return bounds[i]
            return lower + (bounds[i] - lower) * (rank - below) / (count - below)
    return None


def windowed_value(rule: AlertRule, delta: list[float]) -> float | None:
    """A windowed rule's value from the increase of its vector; None: not enough data to judge."""
    if rule.kind == "error_rate":
        total, errors = delta
        return errors / total if total >= rule.min_requests else None
    if rule.kind == "latency_p":
        cumulative = list(delta)
        for i in range(1, len(cumulative)):  # the exported buckets are cumulative already
            cumulative[i] = max(cumulative[i], cumulative[i - 1])
        if cumulative[-1] < rule.min_requests:
            return None
        bounds = [*LATENCY_METRICS[rule.latency].buckets, math.inf]
        return quantile(rule.percentile, cumulative, bounds)
    return delta[0]
