"""Live health of every deployment: breaker, 429 cooldown, retry budget, latency and load stats.

One `Health` per gateway process. Breaker openings and cooldowns are also published to a
`SharedHealth` (Redis when configured) and merged back from it every poll interval, so a breaker
opened by one worker or replica is respected by all. Everything else (latency EWMAs, in-flight
counts, budgets) is per process by design: it is cheap, and what each process sees is what it
should act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from modelplex.config.schema import Routing
from modelplex.errors import UpstreamError, UpstreamRateLimited
from modelplex.routing.breaker import Breaker

log = logging.getLogger("modelplex.health")

EWMA_ALPHA = 0.2
TTFT_SAMPLES = 200
BUDGET_WINDOW_S = 10.0
HEADROOM_WINDOW_S = 60.0
HEDGE_WINDOW_S = 60.0


class SharedHealth(Protocol):
    """Where breaker openings and cooldowns meet across processes: (deployment, kind) -> until."""

    async def publish(self, deployment: str, kind: str, until: float) -> None: ...

    async def snapshot(self) -> dict[tuple[str, str], float]: ...

    async def close(self) -> None: ...


@dataclass
class DeploymentHealth:
    breaker: Breaker
    cooldown_until: float = 0.0
    inflight: int = 0
    ewma_ttft: float | None = None
    ewma_total: float | None = None
    ttfts: deque[float] = field(default_factory=lambda: deque(maxlen=TTFT_SAMPLES))
    requests: deque[float] = field(default_factory=deque)  # first attempts, for the retry budget
    retries: deque[float] = field(default_factory=deque)
    recent: deque[tuple[float, int]] = field(default_factory=deque)  # (time, tokens) for headroom
    _p95: float | None = None
    _p95_at: int = 0

    def p95_ttft(self) -> float | None:
        n = len(self.ttfts)
        if n < 20:
            return None
        if self._p95 is None or n != self._p95_at:
            ordered = sorted(self.ttfts)
            self._p95 = ordered[min(math.ceil(0.95 * n) - 1, n - 1)]
            self._p95_at = n
        return self._p95


def _trim(q: deque[float], horizon: float) -> None:
    while q and q[0] < horizon:
        q.popleft()


class Health:
    def __init__(
        self, settings: Routing, shared: SharedHealth | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.shared = shared
        self.clock = clock
        self._by_name: dict[str, DeploymentHealth] = {}
        self._hedges: dict[str, tuple[deque[float], deque[float]]] = {}
        self._publishing: set[asyncio.Task[None]] = set()

    def configure(self, settings: Routing) -> None:
        """A reloaded config: new breaker settings apply from now on, state is kept."""
        self.settings = settings
        for h in self._by_name.values():
            h.breaker.settings = settings.breaker

    def of(self, name: str) -> DeploymentHealth:
        h = self._by_name.get(name)
        if h is None:
            h = self._by_name[name] = DeploymentHealth(breaker=Breaker(self.settings.breaker))
        return h

    # -- availability ------------------------------------------------------------------------------

    def available(self, name: str, now: float) -> bool:
        h = self.of(name)
        return now >= h.cooldown_until and h.breaker.available(now)

    def acquire(self, name: str, now: float) -> bool:
        """Take the right to send one attempt (in half-open, the single probe)."""
        h = self.of(name)
        return now >= h.cooldown_until and h.breaker.allow(now)

    def wait_hint(self, name: str, now: float) -> float:
        """Seconds until the deployment may be tried again."""
        h = self.of(name)
        return max(
            h.cooldown_until - now, h.breaker.open_until - now if h.breaker.state == "open" else 0.0, 0.0
        )

    # -- outcomes ----------------------------------------------------------------------------------

    def started(self, name: str, now: float, retry: bool) -> None:
        h = self.of(name)
        h.inflight += 1
        (h.retries if retry else h.requests).append(now)

    def finished(self, name: str) -> None:
        h = self.of(name)
        h.inflight = max(h.inflight - 1, 0)

    def success(
        self, name: str, now: float, ttft: float | None, total: float | None, tokens: int = 0
    ) -> None:
        h = self.of(name)
        h.breaker.success(now)
        if ttft is not None:
            h.ttfts.append(ttft)
            h.ewma_ttft = ttft if h.ewma_ttft is None else h.ewma_ttft + EWMA_ALPHA * (ttft - h.ewma_ttft)
        if total is not None:
            h.ewma_total = (
                total if h.ewma_total is None else h.ewma_total + EWMA_ALPHA * (total - h.ewma_total)
            )
        h.recent.append((now, tokens))

    def failure(self, name: str, exc: UpstreamError, now: float) -> None:
        h = self.of(name)
        if isinstance(exc, UpstreamRateLimited):
            # A 429 cools the deployment down for at least Retry-After (a longer one extends it).
            wait = exc.retry_after if exc.retry_after is not None else self.settings.breaker.open_s / 5
            until = now + wait
            if until > h.cooldown_until:
                h.cooldown_until = until
                self._publish(name, "cooldown", until)
            if h.breaker.state == "half_open":
                # A 429 is no verdict on a half-open probe; without this the probe would stay
                # taken and the deployment unavailable for good. The next one waits out the cooldown.
                h.breaker.release_probe()
            return
        if exc.breaker and h.breaker.failure(now):
            log.warning("circuit breaker for %s opened for %.1fs: %s", name, h.breaker.open_for, exc.code)
            self._publish(name, "open", h.breaker.open_until)
        elif not exc.breaker and h.breaker.state == "half_open":
            h.breaker.release_probe()

    def abandoned(self, name: str) -> None:
        """An attempt was cancelled (hedge loser, client gone): no verdict on the deployment."""
        h = self.of(name)
        if h.breaker.state == "half_open":
            h.breaker.release_probe()

    # -- budgets -----------------------------------------------------------------------------------

    def retry_allowed(self, name: str, now: float, ratio: float, floor: int) -> bool:
        h = self.of(name)
        horizon = now - BUDGET_WINDOW_S
        _trim(h.requests, horizon)
        _trim(h.retries, horizon)
        return len(h.retries) < ratio * len(h.requests) + floor

    def hedge_allowed(self, route: str, now: float, fraction: float) -> bool:
        requests, hedges = self._hedges.setdefault(route, (deque(), deque()))
        horizon = now - HEDGE_WINDOW_S
        _trim(requests, horizon)
        _trim(hedges, horizon)
        return len(hedges) + 1 <= fraction * len(requests)

    def note_request(self, route: str, now: float) -> None:
        self._hedges.setdefault(route, (deque(), deque()))[0].append(now)

    def note_hedge(self, route: str, now: float) -> None:
        self._hedges.setdefault(route, (deque(), deque()))[1].append(now)

    def headroom(self, name: str, rpm: int | None, tpm: int | None, now: float) -> float:
        """Fraction of the deployment's RPM/TPM left in the last minute (1.0 without limits)."""
        h = self.of(name)
        while h.recent and h.recent[0][0] < now - HEADROOM_WINDOW_S:
            h.recent.popleft()
        left = 1.0
        if rpm:
            left = min(left, 1 - len(h.recent) / rpm)
        if tpm:
            left = min(left, 1 - sum(t for _, t in h.recent) / tpm)
        return left

    # -- sharing -----------------------------------------------------------------------------------

    def _publish(self, name: str, kind: str, until: float) -> None:
        if self.shared is None:
            return
        task = asyncio.get_running_loop().create_task(self._send(name, kind, until))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _send(self, name: str, kind: str, until: float) -> None:
        assert self.shared is not None
        try:
            await self.shared.publish(name, kind, until)
        except Exception as exc:  # the shared store is an optimisation; local state still holds
            log.warning("could not share %s state of %s: %s", kind, name, exc)

    def merge(self, snapshot: dict[tuple[str, str], float], now: float) -> None:
        for (name, kind), until in snapshot.items():
            if until <= now:
                continue
            h = self.of(name)
            if kind == "open":
                h.breaker.force_open(until)
            elif kind == "cooldown" and until > h.cooldown_until:
                h.cooldown_until = until

    async def poll(self, interval: float) -> None:
        """Merge the shared state every `interval` seconds, forever (a background task)."""
        if self.shared is None:
            return
        while True:
            with contextlib.suppress(Exception):
                self.merge(await self.shared.snapshot(), self.clock())
            await asyncio.sleep(interval)
