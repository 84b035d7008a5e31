"""Load shedding: an in-flight limit per worker and a bounded queue in front of it.

Above `max_in_flight` a request waits in a FIFO queue of at most `max_queue`, for at most
`queue_timeout_ms`; past either bound it gets 503 with Retry-After in its own dialect at once,
instead of slowing every request down or growing memory without bound. Only the inference routes
are gated; health, metrics and admin always answer.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from modelplex.errors import Unavailable
from modelplex.server import anthropic, openai
from modelplex.server.http import ASGIApp, Receive, Scope, Send, send_body

GATED_PREFIX = "/v1/"
RETRY_AFTER_S = 1


@dataclass
class ShedStats:
    in_flight: int = 0
    queued: int = 0
    shed: int = 0  # refused with 503
    queue_wait_s: float = 0.0  # total time requests spent queued
    queued_total: int = 0  # requests that had to wait
    waits: deque[float] = field(default_factory=lambda: deque(maxlen=1024))  # recent waits, for metrics


class Shedder:
    def __init__(self, max_in_flight: int, max_queue: int, queue_timeout_s: float) -> None:
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self.stats = ShedStats()
        self._waiters: deque[asyncio.Future[None]] = deque()

    def configure(self, max_in_flight: int, max_queue: int, queue_timeout_s: float) -> None:
        self.max_in_flight, self.max_queue, self.queue_timeout_s = max_in_flight, max_queue, queue_timeout_s

    def try_acquire(self) -> bool:
        """The fast path: a free slot and nobody waiting."""
        s = self.stats
        if s.in_flight < self.max_in_flight and not self._waiters:
            s.in_flight += 1
            return True
        return False

    async def acquire(self) -> bool:
        """Take a slot, waiting in the queue if there is room. False: shed this request."""
        s = self.stats
        if s.in_flight < self.max_in_flight and not self._waiters:
            s.in_flight += 1
            return True
        if len(self._waiters) >= self.max_queue:
            s.shed += 1
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        s.queued = len(self._waiters)
        started = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self.queue_timeout_s)
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                self._record_wait(started)
                return True  # the slot arrived just as the wait ran out: it is ours
            waiter.cancel()
            s.shed += 1
            return False
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            s.queued = len(self._waiters)
        self._record_wait(started)
        return True

    def _record_wait(self, started: float) -> None:
        waited = time.monotonic() - started
        self.stats.queue_wait_s += waited
        self.stats.queued_total += 1
        self.stats.waits.append(waited)

    def release(self) -> None:
        # Hand the slot straight to the next waiter, so in_flight never dips and refills.
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.stats.in_flight -= 1


def _refusal(path: str) -> tuple[int, bytes]:
    exc = Unavailable("The gateway is at capacity; retry shortly.", retry_after=RETRY_AFTER_S)
    render = anthropic.render_error if path == "/v1/messages" else openai.render_error
    return render(exc)


def shedding(shedder: Shedder) -> Callable[[ASGIApp], ASGIApp]:
    """The shedding middleware (listed in app.middleware)."""

    def wrap(app: ASGIApp) -> ASGIApp:
        async def gate(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or not scope["path"].startswith(GATED_PREFIX):
                await app(scope, receive, send)
                return
            if not shedder.try_acquire() and not await shedder.acquire():
                status, body = _refusal(scope["path"])
                await send_body(send, status, body, [(b"retry-after", str(RETRY_AFTER_S).encode())])
                return
            try:
                await app(scope, receive, send)
            finally:
                shedder.release()

        return gate

    return wrap
