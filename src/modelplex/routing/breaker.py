"""A circuit breaker per deployment: closed -> open -> half-open (one probe) -> closed.

Pure logic; the caller passes the time in. It opens on `consecutive_failures` in a row, or when
the failure ratio over the last `window_s` reaches `failure_ratio` with at least `min_requests`.
While open nothing is sent. After `open_s` one request may probe: success closes the breaker,
failure opens it again for twice as long (up to `max_open_s`). Only failures that say something
about the deployment count (`UpstreamError.breaker`); a 400 never opens a breaker.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from modelplex.config.schema import Breaker as BreakerSettings

State = Literal["closed", "open", "half_open"]


@dataclass
class Breaker:
    settings: BreakerSettings
    state: State = "closed"
    consecutive: int = 0
    open_until: float = 0.0
    open_for: float = 0.0
    probing: bool = False  # a half-open probe is in flight
    _window: deque[tuple[float, bool]] = field(default_factory=deque)  # (time, failed)
    _failures_in_window: int = 0

    def _trim(self, now: float) -> None:
        horizon = now - self.settings.window_s
        while self._window and self._window[0][0] < horizon:
            _, failed = self._window.popleft()
            self._failures_in_window -= failed

    def allow(self, now: float) -> bool:
        """May a request be sent now? In half-open, only the first caller gets the probe."""
        if self.state == "closed":
            return True
        if self.state == "open" and now >= self.open_until:
            self.state = "half_open"
            self.probing = False
        if self.state == "half_open" and not self.probing:
            self.probing = True
            return True
        return False

    def available(self, now: float) -> bool:
        """Would `allow` say yes (without taking the probe)?"""
        if self.state == "closed":
            return True
        if self.state == "open":
            return now >= self.open_until
        return not self.probing

    def success(self, now: float) -> None:
        self._trim(now)
        self._window.append((now, False))
        if self.state == "open":
            # Nothing is sent while open: this attempt began before the breaker opened, and says
            # nothing about the deployment now. Only the half-open probe may close the breaker.
            return
        self.consecutive = 0
        if self.state != "closed":
            self.state = "closed"
            self.open_for = 0.0
            self.probing = False

    def failure(self, now: float) -> bool:
        """Count a failure. True when this failure opened the breaker."""
        self._trim(now)
        self._window.append((now, True))
        self._failures_in_window += 1
        self.consecutive += 1
        s = self.settings
        if self.state == "half_open":
            self._open(now, min(max(self.open_for * 2, s.open_s), s.max_open_s))
            return True
        if self.state == "closed":
            n = len(self._window)
            ratio_trip = n >= s.min_requests and self._failures_in_window / n >= s.failure_ratio
            if self.consecutive >= s.consecutive_failures or ratio_trip:
                self._open(now, s.open_s)
                return True
        return False

    def _open(self, now: float, duration: float) -> None:
        self.state = "open"
        self.open_for = duration
        self.open_until = now + duration
        self.probing = False

    def force_open(self, until: float) -> None:
        """Another worker or replica opened this breaker: respect it until `until`."""
        if until > self.open_until or self.state == "closed":
            self.state = "open"
            self.open_until = max(until, self.open_until)
            self.open_for = max(self.open_for, self.settings.open_s)
            self.probing = False

    def release_probe(self) -> None:
        """The probe ended without a verdict (cancelled, or a client error): let another probe."""
        self.probing = False
