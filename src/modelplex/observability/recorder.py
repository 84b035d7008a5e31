"""The one call site of every request metric: a sink that tallies each finished request.

The request path only adds floats into plain dicts (a few microseconds); a background task moves
the sums into the exported Prometheus values every `flush_interval_s`. So no request takes a lock,
writes a multiprocess file or formats a label, and a scrape sees each worker at most one flush
interval late.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator

from modelplex.context import RequestContext
from modelplex.errors import LimitExceeded, ModelplexError, StreamInterrupted
from modelplex.observability import metrics as m
from modelplex.observability.exposition import Exported
from modelplex.runtime import Runtime

Series = dict[tuple[str, ...], float]
Rows = dict[tuple[str, ...], list[float]]  # per bucket counts (the last bucket is +Inf), then the sum

ATTEMPT_STATES = frozenset({"ok", "cancelled", "hedge_lost", "pending"})


def _codes(cls: type[ModelplexError]) -> Iterator[str]:
    yield cls.code
    for sub in cls.__subclasses__():
        yield from _codes(sub)


class ErrorCodes:
    """The bounded set of error codes: those of the error tree's classes, found by walking it."""

    def __init__(self) -> None:
        self._known = set(_codes(ModelplexError))
        self._refused: set[str] = set()

    def label(self, code: str) -> str:
        if code in self._known:
            return code
        if code not in self._refused:
            self._known.update(_codes(ModelplexError))  # a subclass defined after start-up
            if code in self._known:
                return code
            self._refused.add(code)
        return "other"


def error_kind(err: ModelplexError | None) -> str:
    """none | limit (the gateway's own limits and budgets) | client (4xx the caller caused) | server."""
    if err is None:
        return m.NONE
    if isinstance(err, LimitExceeded):
        return "limit"
    if 400 <= err.status < 500 and err.status != 429:
        return "client"
    return "server"


class Tally:
    """Per-process sums since the last flush, keyed by metric name and label values."""

    def __init__(self) -> None:
        self.counts: dict[str, Series] = {}
        self.rows: dict[str, Rows] = {}
        self.take()

    def take(self) -> tuple[dict[str, Series], dict[str, Rows]]:
        taken = self.counts, self.rows
        self.counts = {x.name: {} for x in m.METRICS if x.kind == "counter"}
        self.rows = {x.name: {} for x in m.METRICS if x.kind == "histogram"}
        return taken


def _inc(series: Series, key: tuple[str, ...], value: float = 1.0) -> None:
    series[key] = series.get(key, 0.0) + value


def _observe(rows: Rows, key: tuple[str, ...], bounds: tuple[float, ...], value: float) -> None:
    row = rows.get(key)
    if row is None:
        row = rows[key] = [0.0] * (len(bounds) + 2)
    row[bisect_left(bounds, value)] += 1.0
    row[-1] += value


class Recorder:
    """`record` is the sink; `flush` runs in the background."""

    def __init__(self, exported: Exported, runtime: Callable[[], Runtime]) -> None:
        self.exported = exported
        self.runtime = runtime
        self.tally = Tally()
        self.codes = ErrorCodes()
        self._rt: Runtime | None = None
        self._models: frozenset[str] = frozenset()
        self._routes: frozenset[str] = frozenset()

    def _names(self, rt: Runtime) -> None:
        if rt is not self._rt:
            self._rt, self._models, self._routes = rt, frozenset(rt.models), frozenset(rt.routes)

    def model_label(self, ctx: RequestContext) -> str:
        if ctx.answered_model is not None:
            return ctx.answered_model
        if ctx.attempts:
            return ctx.attempts[0].model
        if ctx.model is None or ctx.model in self._routes:
            return m.NONE
        return ctx.model if ctx.model in self._models else m.UNKNOWN

    def record(self, ctx: RequestContext, end: float) -> None:
        self._names(self.runtime())
        counts, rows = self.tally.counts, self.tally.rows
        err, answered = ctx.error, ctx.answered_by
        model = self.model_label(ctx)
        route = ctx.route or (ctx.model if ctx.model in self._routes else None) or m.NONE
        provider, deployment = (answered.target.provider, answered.name) if answered else (m.NONE, m.NONE)
        stream = "true" if ctx.stream else "false"
        outcome = "aborted" if ctx.aborted else "error" if err is not None else "ok"
        attempts = ctx.attempts
        fallback = "true" if answered and attempts and attempts[0].deployment != answered.name else "false"
        hedged = "false"
        seen: set[str] = set()
        attempt_counts, upstream = counts[m.ATTEMPTS.name], rows[m.UPSTREAM_DURATION.name]
        for i, a in enumerate(attempts):
            if a.hedge:
                kind, hedged = "hedge", "true"
            else:
                kind = "first" if i == 0 else "retry" if a.deployment in seen else "fallback"
            seen.add(a.deployment)
            state = a.outcome if a.outcome in ATTEMPT_STATES else self.codes.label(a.outcome)
            _inc(attempt_counts, (a.provider, a.deployment, a.model, kind, state))
            if a.ended:
                coarse = "ok" if state == "ok" else "cancelled" if state in ATTEMPT_STATES else "error"
                _observe(upstream, (a.provider, a.deployment, coarse), m.LATENCY_BUCKETS, a.ended - a.started)
        code = self.codes.label(err.code) if err is not None else m.NONE
        _inc(counts[m.REQUESTS.name], (ctx.operation, ctx.dialect, route, model, provider, deployment, stream,
                                       outcome, code, error_kind(err), fallback, hedged))
        _observe(rows[m.REQUEST_DURATION.name], (ctx.operation, route, model, stream, outcome),
                 m.LATENCY_BUCKETS, end - ctx.started)
        if ctx.stream and ctx.first_byte_at is not None:
            _observe(rows[m.TTFT.name], (route, model, provider, deployment), m.LATENCY_BUCKETS,
                     ctx.first_byte_at - ctx.started)
        if outcome == "ok":
            at = ctx.first_byte_at if ctx.stream and ctx.first_byte_at is not None else end
            _observe(rows[m.OVERHEAD.name], (ctx.operation, stream), m.OVERHEAD_BUCKETS,
                     ctx.overhead_ms(at) / 1000.0)
            if ctx.failover_s is not None:
                _observe(rows[m.FAILOVER.name], (route, model), m.FAILOVER_BUCKETS, ctx.failover_s)
        if answered is not None and ctx.usage is not None:
            self._tokens(counts[m.TOKENS.name], ctx, provider, deployment, model)
        self._money(counts, ctx, route, model, provider, deployment, outcome)
        if ctx.skipped_events:
            _inc(counts[m.SKIPPED_EVENTS.name], (provider, deployment), ctx.skipped_events)
        if ctx.resumed:
            _inc(counts[m.CONTINUATIONS.name], (route, model))

    @staticmethod
    def _tokens(series: Series, ctx: RequestContext, provider: str, deployment: str, model: str) -> None:
        u = ctx.usage
        assert u is not None
        for kind, n in (("input", u.input_tokens), ("output", u.output_tokens),
                        ("cached_input", u.cached_input_tokens), ("cache_write", u.cache_write_tokens),
                        ("reasoning", u.reasoning_tokens)):
            if n:
                _inc(series, (provider, deployment, model, kind), n)

    @staticmethod
    def _money(counts: dict[str, Series], ctx: RequestContext, route: str, model: str, provider: str,
               deployment: str, outcome: str) -> None:
        spend = counts[m.SPEND.name]
        cost = ctx.report_cost_micro
        if cost is not None:
            _inc(spend, (route, model, provider, deployment, "answer"), cost / 1e6)
            if ctx.counterfactual_micro is not None:
                _inc(counts[m.COUNTERFACTUAL.name], (route, model), ctx.counterfactual_micro / 1e6)
                _inc(counts[m.COMPARED.name], (route, model), cost / 1e6)
        if ctx.waste_micro:
            if outcome != "ok":
                reason = ("aborted" if ctx.aborted else
                          "truncated" if isinstance(ctx.error, StreamInterrupted) else "failed")
            else:
                lost = any(a.outcome == "hedge_lost" for a in ctx.attempts)
                reason = "hedge_lost" if lost else "failed_attempts"
                provider = deployment = m.NONE  # the waste is another deployment's
            _inc(spend, (route, model, provider, deployment, reason), ctx.waste_micro / 1e6)
        if ctx.unpriced:
            _inc(counts[m.UNPRICED.name], (model, deployment))

    def flush(self) -> None:
        """Move the sums into the exported values (on the event loop, between requests)."""
        counts, rows = self.tally.take()
        ex = self.exported
        for name, series in counts.items():
            counter = ex.counters[name]
            for labels, value in series.items():
                counter.labels(*labels).inc(value)
        for name, hist_rows in rows.items():
            hist = ex.histograms[name]
            for labels, row in hist_rows.items():
                ex.add_histogram(hist.labels(*labels), row)
