"""Gauges and counters sampled once a second from where they live: breaker states (the health
table), in-flight and queued requests and shed load (the shedder), limit and budget rejections
(admission), the request log's own counters.

These describe the process rather than one request, so they are read here instead of being
pushed by the request sink; each is emitted from this one place.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import islice

from modelplex.observability import metrics as m
from modelplex.observability.exposition import Exported
from modelplex.routing.health import Health
from modelplex.services import Services

log = logging.getLogger("modelplex.metrics")
BREAKER_STATES = ("closed", "open", "half_open")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
MAX_NAMES = 32  # per label fed from another module's counters: bounded even if it misbehaves


@dataclass(frozen=True)
class LogStats:
    """What the request log reports about itself: cumulative event counts of this process
    (`spooled`, `shipped`, `dropped`, ... : names are the request log's, fixed in its code) and
    the rows waiting in its spool."""

    events: Mapping[str, int] = field(default_factory=dict)
    backlog_rows: int = 0


LogStatsSource = Callable[[], LogStats | None]  # None: no request log in this process


def request_log_stats(svc: Services) -> LogStatsSource:
    """The request log installed in `svc` (observability/requestlog.py), read through its stats."""

    def read() -> LogStats | None:
        from modelplex.observability.requestlog import find

        rl = find(svc)
        if rl is None:
            return None
        s = rl.stats
        return LogStats(events={"spooled": s.rows_spooled, "shipped": s.rows_shipped,
                                "dead_lettered": s.rows_dead_lettered, "lost": s.rows_lost,
                                "batches": s.batches, "store_errors": s.store_errors,
                                "retention_deleted": s.retention_deleted},
                        backlog_rows=s.backlog_rows)

    return read


def breaker_state(health: Health, name: str, now: float) -> str:
    """The state a request would meet: an open breaker past its open time takes a probe."""
    b = health.of(name).breaker
    if b.state == "open" and now >= b.open_until:
        return "half_open"
    return b.state


class Deltas:
    """Turns another module's cumulative counts into increments of a labelled counter."""

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def new(self, counts: Mapping[str, int]) -> list[tuple[str, int]]:
        out = []
        for name, total in counts.items():
            known = name in self.seen
            if not _NAME.match(name) or (not known and len(self.seen) >= MAX_NAMES):
                continue
            delta = total - self.seen.get(name, 0)
            self.seen[name] = total
            if delta > 0:
                out.append((name, delta))
        return out


class Sampler:
    def __init__(self, exported: Exported, svc: Services, log_stats: LogStatsSource | None = None) -> None:
        self.exported = exported
        self.svc = svc
        self.log_stats = log_stats or request_log_stats(svc)
        self._deployments: set[str] = set()
        self._opened_until: dict[str, float] = {}
        self._rejections = Deltas()
        self._log_events = Deltas()
        self._queued_total = 0

    def sample(self) -> None:
        self._breakers()
        self._load()
        self._log()

    def _breakers(self) -> None:
        g, c = self.exported.gauges, self.exported.counters
        health = self.svc.health
        now = health.clock()
        states, upstream = g[m.BREAKER_STATE.name], g[m.UPSTREAM_INFLIGHT.name]
        names = set(self.svc.runtime().endpoints)
        for name in sorted(names | self._deployments):
            if name not in names:  # removed by a reload
                for s in BREAKER_STATES:
                    states.labels(name, s).set(0)
                upstream.labels(name).set(0)
                continue
            state = breaker_state(health, name, now)
            for s in BREAKER_STATES:
                states.labels(name, s).set(1 if s == state else 0)
            h = health.of(name)
            upstream.labels(name).set(h.inflight)
            if h.breaker.state == "open" and self._opened_until.get(name) != h.breaker.open_until:
                c[m.BREAKER_OPENINGS.name].labels(name).inc()
                self._opened_until[name] = h.breaker.open_until
        self._deployments = names

    def _load(self) -> None:
        g, c = self.exported.gauges, self.exported.counters
        stats = self.svc.shedder.stats
        g[m.INFLIGHT.name].set(stats.in_flight)
        g[m.QUEUED.name].set(stats.queued)
        rejections = dict(self.svc.admission.rejections) if self.svc.admission is not None else {}
        rejections["shed"] = stats.shed
        for reason, n in self._rejections.new(rejections):
            c[m.REJECTIONS.name].labels(reason).inc(n)
        waited = stats.queued_total - self._queued_total
        if waited > 0:
            hist = self.exported.histograms[m.QUEUE_WAIT.name]
            recent = stats.waits
            for w in islice(recent, max(len(recent) - waited, 0), None):
                hist.observe(w)
        self._queued_total = stats.queued_total

    def _log(self) -> None:
        try:
            stats = self.log_stats()
        except Exception:
            log.exception("the request log's stats could not be read")
            return
        if stats is None:
            return
        events = self.exported.counters[m.LOG_EVENTS.name]
        for name, n in self._log_events.new(stats.events):
            events.labels(name).inc(n)
        self.exported.gauges[m.LOG_BACKLOG.name].set(stats.backlog_rows)
