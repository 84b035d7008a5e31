"""The dashboard's live figures: rolling per-second counters and recent latency samples, fed by the
request log's rows in this process. A refresh of the page reads these; it never queries a database.

Windows: traffic and errors per second over the last `WINDOW_S`; latency percentiles over the same
window, from at most `MAX_SAMPLES` most recent requests; cost, savings and the spend Pareto since
the process started (groups beyond `MAX_GROUPS` per dimension are pooled as "(other)").
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from modelplex.observability.requestlog_row import Row

WINDOW_S: Final = 300
LATENCY_BUCKET_S: Final = 10
MAX_SAMPLES: Final = 20_000
MAX_GROUPS: Final = 2_000
PARETO_TOP: Final = 15
OTHER: Final = "(other)"
PARETO_DIMENSIONS: Final = ("route", "task", "team", "fingerprint")
NONE: Final = "(none)"


@dataclass
class _Second:
    t: int
    requests: int = 0
    errors: int = 0


@dataclass
class _Money:
    requests: int = 0
    ok: int = 0
    priced_ok: int = 0
    cost: int = 0  # answers, reporting currency micro-units
    waste: int = 0  # spent on attempts that were not the answer, of successful requests
    failed: int = 0  # spent on failed requests
    counterfactual: int = 0
    cost_with_counterfactual: int = 0


@dataclass
class _Provider:
    requests: int = 0
    errors: int = 0
    classes: dict[str, int] = field(default_factory=dict)


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest rank: the smallest value with at least p of the values at or below it."""
    if not ordered:
        return None
    return ordered[min(max(math.ceil(p * len(ordered)) - 1, 0), len(ordered) - 1)]


def is_ok(row: Row) -> bool:
    return row.status < 400 and row.error_class is None and not row.aborted


class Live:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.started = clock()
        self.currency = ""
        self._seconds: deque[_Second] = deque()
        self._samples: deque[tuple[float, str, float, float | None]] = deque(maxlen=MAX_SAMPLES)
        self._providers: deque[tuple[float, str, str | None]] = deque(maxlen=MAX_SAMPLES * 5)
        self._models: dict[str, _Money] = {}
        self._routes: dict[str, _Money] = {}
        self._pareto: dict[str, dict[str, list[int]]] = {d: {} for d in PARETO_DIMENSIONS}
        self.total = _Money()

    def observe(self, row: Row) -> None:
        now = self.clock()
        second = int(now)
        if not self._seconds or self._seconds[-1].t != second:
            self._seconds.append(_Second(second))
            while self._seconds[0].t <= second - WINDOW_S:
                self._seconds.popleft()
        bucket = self._seconds[-1]
        ok = is_ok(row)
        bucket.requests += 1
        provider = row.provider or NONE
        if not ok:
            bucket.errors += 1
        self._providers.append((now, provider, None if ok else (row.error_class or f"http_{row.status}")))
        if ok:
            self._samples.append((now, provider, row.latency_ms, row.ttft_ms))
        self.currency = row.currency
        spend = (row.cost_micro or 0) + row.waste_micro
        model, route = _group(self._models, row.model or NONE), _group(self._routes, row.route or NONE)
        for money in (self.total, model, route):
            money.requests += 1
            if ok:
                money.ok += 1
                money.waste += row.waste_micro
                if row.cost_micro is not None:
                    money.priced_ok += 1
                    money.cost += row.cost_micro
                    if row.counterfactual_micro is not None:
                        money.counterfactual += row.counterfactual_micro
                        money.cost_with_counterfactual += row.cost_micro
            else:
                money.failed += spend
        team = f"{row.team or NONE}/{row.key_name or NONE}"
        for dim, value in (("route", row.route), ("task", row.task), ("team", team),
                           ("fingerprint", row.fingerprint)):
            groups = self._pareto[dim]
            key = value or NONE
            if key not in groups and len(groups) >= MAX_GROUPS:
                key = OTHER
            entry = groups.setdefault(key, [0, 0])
            entry[0] += spend
            entry[1] += 1

    # -- the snapshot the page reads ------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        now = self.clock()
        horizon = now - WINDOW_S
        return {
            "now": now,
            "started": self.started,
            "window_s": WINDOW_S,
            "currency": self.currency,
            "traffic": self._traffic(int(now)),
            "latency": self._latency(now, horizon),
            "errors_by_provider": self._errors(horizon),
            "cost": [_money_row("model", k, m) for k, m in sorted(self._models.items())],
            "savings": {
                "total": _savings(self.total),
                "by_route": [{"route": k, **_savings(m)} for k, m in sorted(self._routes.items())],
            },
            "pareto": {dim: pareto(groups) for dim, groups in self._pareto.items()},
            "totals": _money_row("all", "all", self.total),
        }

    def _traffic(self, now: int) -> dict[str, list[float]]:
        by_t = {s.t: s for s in self._seconds}
        ts = list(range(now - WINDOW_S + 1, now + 1))
        empty = _Second(0)
        return {
            "t": [float(t) for t in ts],
            "requests": [float(by_t.get(t, empty).requests) for t in ts],
            "errors": [float(by_t.get(t, empty).errors) for t in ts],
        }

    def _latency(self, now: float, horizon: float) -> dict[str, Any]:
        recent = [s for s in self._samples if s[0] >= horizon]
        first = int(now) - WINDOW_S + LATENCY_BUCKET_S
        starts = list(range(first - first % LATENCY_BUCKET_S, int(now) + 1, LATENCY_BUCKET_S))
        buckets: dict[int, list[float]] = {t: [] for t in starts}
        by_provider: dict[str, tuple[list[float], list[float]]] = {}
        for t, provider, latency, ttft in recent:
            b = int(t) - int(t) % LATENCY_BUCKET_S
            if b in buckets:
                buckets[b].append(latency)
            lat, tt = by_provider.setdefault(provider, ([], []))
            lat.append(latency)
            if ttft is not None:
                tt.append(ttft)
        series: dict[str, list[float | None]] = {"p50": [], "p95": [], "p99": []}
        for t in starts:
            ordered = sorted(buckets[t])
            for name, p in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
                series[name].append(percentile(ordered, p))
        providers = []
        for name, (lat, tt) in sorted(by_provider.items()):
            lat.sort()
            tt.sort()
            providers.append({
                "provider": name, "n": len(lat),
                "p50": percentile(lat, 0.5), "p90": percentile(lat, 0.9), "p99": percentile(lat, 0.99),
                "ttft_p50": percentile(tt, 0.5), "ttft_p99": percentile(tt, 0.99),
            })
        everything = sorted(s[2] for s in recent)
        return {
            "t": [float(t) for t in starts], "series": series, "by_provider": providers,
            "p50": percentile(everything, 0.5), "p95": percentile(everything, 0.95),
            "p99": percentile(everything, 0.99), "n": len(everything),
        }

    def _errors(self, horizon: float) -> list[dict[str, Any]]:
        out: dict[str, _Provider] = {}
        for t, provider, error in self._providers:
            if t < horizon:
                continue
            p = out.setdefault(provider, _Provider())
            p.requests += 1
            if error is not None:
                p.errors += 1
                p.classes[error] = p.classes.get(error, 0) + 1
        return [
            {"provider": k, "requests": p.requests, "errors": p.errors,
             "error_rate": p.errors / p.requests if p.requests else 0.0, "classes": p.classes}
            for k, p in sorted(out.items())
        ]


def _group(groups: dict[str, _Money], key: str) -> _Money:
    money = groups.get(key)
    if money is None:
        if len(groups) >= MAX_GROUPS:
            key = OTHER
        money = groups.setdefault(key, _Money())
    return money


def _money_row(dim: str, key: str, m: _Money) -> dict[str, Any]:
    return {
        dim: key, "requests": m.requests, "ok": m.ok, "cost_micro": m.cost, "waste_micro": m.waste,
        "failed_micro": m.failed,
        "avg_cost_micro": m.cost / m.priced_ok if m.priced_ok else None,
        "all_in_per_ok_micro": (m.cost + m.waste + m.failed) / m.ok if m.ok else None,
    }


def _savings(m: _Money) -> dict[str, Any]:
    saved = m.counterfactual - m.cost_with_counterfactual
    return {
        "cost_micro": m.cost_with_counterfactual, "counterfactual_micro": m.counterfactual,
        "savings_micro": saved, "savings_share": saved / m.counterfactual if m.counterfactual else None,
    }


def pareto(groups: dict[str, list[int]], share: float = 0.8, top: int = PARETO_TOP) -> dict[str, Any]:
    """The smallest set of groups (largest spend first) that makes `share` of the spend."""
    ordered = sorted(groups.items(), key=lambda kv: (-kv[1][0], kv[0]))
    total_spend = sum(v[0] for _, v in ordered)
    total_requests = sum(v[1] for _, v in ordered)
    cum = 0
    rows: list[dict[str, Any]] = []
    set_size = set_requests = 0
    for name, (spend, requests) in ordered:
        if total_spend and cum < share * total_spend:
            set_size += 1
            set_requests += requests
        cum += spend
        if len(rows) < top:
            rows.append({"group": name, "spend_micro": spend, "requests": requests,
                         "cum_share": cum / total_spend if total_spend else 0.0})
    return {
        "groups": len(ordered), "set_size": set_size,
        "set_request_share": set_requests / total_requests if total_requests else 0.0,
        "spend_micro": total_spend, "top": rows,
    }
