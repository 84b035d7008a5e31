"""Execution: the planned candidates, tried within one deadline under the contract of DESIGN.md §4.

* Each failure is classified by its class flags (errors.py): retry the same deployment (backoff
  with full jitter, within the per-deployment retry budget, at most `max_attempts_per_deployment`),
  fall back to the next candidate, or stop and report.
* A 429 cools its deployment down for Retry-After; the next available candidate goes first, and a
  cooled-down deployment is tried again only after its Retry-After, and only if that fits.
* context_length_exceeded moves to larger-context fallback models only; a content-policy refusal
  moves only to a configured content-policy fallback, else its reason goes back to the caller.
* No attempt starts that cannot finish: not with less time left than the deployment usually needs.
* Hedging (opt-in): when the running attempt has no first token after the hedge delay, the next
  candidate starts too; the first to commit wins, the other is cancelled at once.
* Streams (streams.py) race through the same Executor: an attempt commits on its first delta.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from modelplex.config.schema import Hedge, Retry
from modelplex.context import AttemptRecord, RequestContext
from modelplex.errors import (
    AllAttemptsFailed,
    AttemptFailure,
    ContentPolicyViolation,
    ContextLengthExceeded,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from modelplex.routing import plan as planning
from modelplex.routing.health import Health
from modelplex.routing.plan import Candidate, Plan
from modelplex.runtime import Runtime
from modelplex.transport import AttemptTimeouts, Transport
from modelplex.types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Usage,
)

MIN_ATTEMPT_S = 0.01  # never start an attempt with less time than this left


@dataclass(frozen=True, slots=True)
class Policy:
    retry: Retry
    hedge: Hedge
    continuation: bool
    key: str  # whose hedge budget: the route's or the model's name


def timeouts_for(c: Candidate, deadline: float, now: float) -> AttemptTimeouts | None:
    remaining = deadline - now
    if remaining < MIN_ATTEMPT_S:
        return None
    t = c.endpoint.deployment.timeouts
    return AttemptTimeouts(
        connect=min(t.connect, remaining),
        first_token=min(t.first_token, remaining),
        idle=min(t.idle, remaining),
        total=min(t.total, remaining),
    )


class Executor:
    """One request's attempts."""

    def __init__(
        self,
        rt: Runtime,
        transport: Transport,
        health: Health,
        ctx: RequestContext,
        plan: Plan,
        policy: Policy,
        rng: random.Random,
    ) -> None:
        self.rt, self.transport, self.health, self.ctx = rt, transport, health, ctx
        self.plan, self.policy, self.rng = plan, policy, rng
        self.queue: deque[Candidate] = deque(plan.candidates)
        self.tries: dict[str, int] = {}
        self.later: list[tuple[float, Candidate]] = []  # cooled down until a time that fits
        self.failures: list[AttemptFailure] = []
        self.last: tuple[Candidate, UpstreamError] | None = None
        self.stopped = False

    # -- choosing the next attempt ------------------------------------------------------------------

    def _min_time(self, c: Candidate) -> float:
        h = self.health.of(c.endpoint.name)
        usual = h.ewma_ttft if self.ctx.stream else h.ewma_total
        return max(MIN_ATTEMPT_S, usual or 0.0)

    def _fits(self, c: Candidate, at: float) -> bool:
        return at + self._min_time(c) < self.ctx.deadline

    def _backoff(self, attempt: int) -> float:
        r = self.policy.retry
        cap = min(r.backoff_max_ms, r.backoff_base_ms * 2 ** (attempt - 1)) / 1000.0
        return self.rng.uniform(0, cap)  # full jitter

    async def _next(self, wait: bool) -> tuple[Candidate, bool] | None:
        """The next attempt: (candidate, is it a retry). With wait=False (a hedge) only another
        candidate that can start right now."""
        if self.stopped:
            return None
        if wait and self.last is not None:
            c, err = self.last
            self.last = None
            name = c.endpoint.name
            if isinstance(err, UpstreamRateLimited):
                # Tried again only after its Retry-After, and only if nothing else can go first.
                at = time.monotonic() + self.health.wait_hint(name, time.time())
                if self.tries.get(name, 0) < self.policy.retry.max_attempts_per_deployment and self._fits(
                    c, at
                ):
                    self.later.append((at, c))
            elif (
                err.retry_same
                and not isinstance(err, UpstreamRateLimited)
                and self.tries.get(name, 0) < self.policy.retry.max_attempts_per_deployment
                and self.health.retry_allowed(
                    name, time.time(), self.policy.retry.budget_ratio, self.policy.retry.budget_floor
                )
            ):
                pause = self._backoff(self.tries[name])
                # A retry is an attempt like any other: not while the breaker is open (a failed
                # half-open probe has just reopened it) or the deployment cools down.
                if self._fits(c, time.monotonic() + pause) and self.health.available(name, time.time()):
                    await asyncio.sleep(pause)
                    if self.health.acquire(name, time.time()):
                        return c, True
        while self.queue:
            c = self.queue.popleft()
            name = c.endpoint.name
            if self.tries.get(name, 0) >= self.policy.retry.max_attempts_per_deployment:
                continue
            now = time.monotonic()
            if self.health.acquire(name, time.time()):
                if self._fits(c, now):
                    return c, name in self.tries
                continue
            hint = self.health.wait_hint(name, time.time())
            if hint > 0 and self._fits(c, now + hint):
                self.later.append((now + hint, c))
        while wait and self.later:
            self.later.sort(key=lambda pair: pair[0])
            at, c = self.later.pop(0)
            pause = at - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            # The loop may wake a clock tick early: wait out a small remainder of the cooldown.
            rest = self.health.wait_hint(c.endpoint.name, time.time())
            if 0 < rest < 0.05:
                await asyncio.sleep(rest + 0.001)
            if self.health.acquire(c.endpoint.name, time.time()) and self._fits(c, time.monotonic()):
                return c, c.endpoint.name in self.tries
        return None

    # -- outcomes -----------------------------------------------------------------------------------

    def _failed(self, c: Candidate, record: AttemptRecord, exc: UpstreamError) -> None:
        record.ended = time.monotonic()
        record.outcome, record.upstream_status, record.message = exc.code, exc.upstream_status, exc.message
        self.failures.append(
            AttemptFailure(
                deployment=c.endpoint.name,
                provider=c.endpoint.target.provider,
                error=exc,
                elapsed_ms=record.elapsed_ms,
            )
        )
        if self.ctx.first_failure_at is None:
            self.ctx.first_failure_at = record.ended
        self.health.failure(c.endpoint.name, exc, time.time())
        now = time.time()
        if isinstance(exc, ContextLengthExceeded):
            self.queue = deque(planning.larger_context(self.rt, self.health, self.plan, c, self.rng, now))
            self.later.clear()
            self.stopped = not self.queue
        elif isinstance(exc, ContentPolicyViolation):
            self.queue = deque(planning.content_policy(self.rt, self.health, self.plan, c, self.rng, now))
            self.later.clear()
            self.stopped = not self.queue
        elif not exc.fallback:
            self.stopped = True
        else:
            self.last = (c, exc)

    def _give_up(self) -> AllAttemptsFailed:
        if self.failures:
            return AllAttemptsFailed(self.failures)
        if time.monotonic() + MIN_ATTEMPT_S >= self.ctx.deadline:
            return AllAttemptsFailed([], reason="the request deadline passed before any attempt")
        waits = [self.health.wait_hint(c.endpoint.name, time.time()) for c in self.plan.candidates]
        err = AllAttemptsFailed([], reason="every deployment is unavailable (circuit open or cooling down)")
        err.retry_after = min((w for w in waits if w > 0), default=1.0)
        return err

    # -- the race -------------------------------------------------------------------------------

    async def _attempt(
        self,
        c: Candidate,
        record: AttemptRecord,
        retry: bool,
        work: Callable[[AttemptTimeouts], Awaitable[Any]],
    ) -> Any:
        name = c.endpoint.name
        self.tries[name] = self.tries.get(name, 0) + 1
        t = timeouts_for(c, self.ctx.deadline, time.monotonic())
        if t is None:
            raise UpstreamTimeout("no time left before the deadline", phase="total")
        self.health.started(name, time.time(), retry)
        try:
            result = await work(t)
        except asyncio.CancelledError:
            self.health.abandoned(name)
            raise
        finally:
            self.health.finished(name)
        elapsed = time.monotonic() - record.started
        self.health.success(
            name, time.time(), elapsed if self.ctx.stream else None, None if self.ctx.stream else elapsed
        )
        return result

    async def race(
        self, work: Callable[[Candidate, AttemptTimeouts], Awaitable[Any]], on_loser: Callable[[Any], None]
    ) -> tuple[Candidate, AttemptRecord, Any]:
        self.health.note_request(self.policy.key, time.time())
        if not self.policy.hedge.enabled:
            return await self._sequential(work)
        return await self._hedged(work, on_loser)

    async def _sequential(
        self, work: Callable[[Candidate, AttemptTimeouts], Awaitable[Any]]
    ) -> tuple[Candidate, AttemptRecord, Any]:
        """One attempt at a time, awaited in place: no task, no wait set (the common, fast case)."""
        while True:
            step = await self._next(wait=True)
            if step is None:
                raise self._give_up()
            c, retry = step
            record = self._record(c, hedge=False)
            try:
                return c, record, await self._attempt(c, record, retry, partial(work, c))
            except UpstreamError as exc:
                self._failed(c, record, exc)

    def _record(self, c: Candidate, hedge: bool) -> AttemptRecord:
        record = AttemptRecord(
            deployment=c.endpoint.name,
            provider=c.endpoint.target.provider,
            model=c.model,
            started=time.monotonic(),
            hedge=hedge,
        )
        self.ctx.attempts.append(record)
        return record

    async def _hedged(
        self, work: Callable[[Candidate, AttemptTimeouts], Awaitable[Any]], on_loser: Callable[[Any], None]
    ) -> tuple[Candidate, AttemptRecord, Any]:
        pending: dict[asyncio.Task[Any], tuple[Candidate, AttemptRecord]] = {}
        hedge_at: float | None = None
        try:
            while True:
                if not pending:
                    step = await self._next(wait=True)
                    if step is None:
                        raise self._give_up()
                    self._launch(pending, step, work, hedge=False)
                    hedge_at = self._hedge_at(step[0])
                timeout = max(min(hedge_at or math.inf, self.ctx.deadline) - time.monotonic(), 0.0)
                done, _ = await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    hedge_at = None
                    if time.monotonic() >= self.ctx.deadline:
                        for task, (c, record) in list(pending.items()):
                            task.cancel()
                            del pending[task]
                            self._failed(
                                c, record, UpstreamTimeout("the request deadline passed", phase="total")
                            )
                        raise AllAttemptsFailed(
                            self.failures, reason="the request deadline passed before an answer"
                        )
                    self._hedge(pending, work)
                    continue
                winner = None
                for task in done:
                    c, record = pending.pop(task)
                    exc = task.exception()
                    if exc is None and winner is None:
                        winner = (c, record, task.result())
                    elif exc is None:
                        self._lost(record, task.result(), on_loser)
                    elif isinstance(exc, UpstreamError):
                        self._failed(c, record, exc)
                    else:
                        raise exc
                if winner is not None:
                    return winner
        finally:
            for task, (_, record) in pending.items():
                task.cancel()  # closes the upstream connection: the loser stops generating
                self._lost(record, None, on_loser)

    def _launch(
        self,
        pending: dict[asyncio.Task[Any], tuple[Candidate, AttemptRecord]],
        step: tuple[Candidate, bool],
        work: Callable[[Candidate, AttemptTimeouts], Awaitable[Any]],
        hedge: bool,
    ) -> None:
        c, retry = step
        record = self._record(c, hedge)
        task = asyncio.ensure_future(self._attempt(c, record, retry, partial(work, c)))
        pending[task] = (c, record)

    def _hedge_at(self, c: Candidate) -> float | None:
        h = self.policy.hedge
        if not h.enabled or not self.queue:
            return None
        delay_ms = h.delay_ms
        if delay_ms is None:
            p95 = self.health.of(c.endpoint.name).p95_ttft()
            if p95 is None:
                return None
            delay_ms = p95 * 1000.0
        return time.monotonic() + max(delay_ms, h.min_delay_ms) / 1000.0

    def _hedge(
        self,
        pending: dict[asyncio.Task[Any], tuple[Candidate, AttemptRecord]],
        work: Callable[[Candidate, AttemptTimeouts], Awaitable[Any]],
    ) -> None:
        if not self.health.hedge_allowed(self.policy.key, time.time(), self.policy.hedge.max_extra_fraction):
            return
        step = self._next_now()
        if step is not None:
            self.health.note_hedge(self.policy.key, time.time())
            self._launch(pending, step, work, hedge=True)

    def _next_now(self) -> tuple[Candidate, bool] | None:
        while self.queue:
            c = self.queue.popleft()
            if self.health.acquire(c.endpoint.name, time.time()) and self._fits(c, time.monotonic()):
                return c, False
        return None

    def _lost(self, record: AttemptRecord, result: Any, on_loser: Callable[[Any], None]) -> None:
        """A hedge that lost: the provider processed (and bills) its prompt, metered as waste."""
        record.outcome, record.ended = "hedge_lost", time.monotonic()
        record.usage = Usage(input_tokens=self.plan.features.prompt_tokens, estimated=True)
        if result is not None:
            on_loser(result)

    def won(self, c: Candidate, record: AttemptRecord) -> None:
        now = time.monotonic()
        record.ended = record.ended or now
        self.ctx.answered_by, self.ctx.answered_model = c.endpoint, c.model
        self.ctx.upstream_s += now - record.started
        if self.ctx.first_failure_at is not None:
            self.ctx.failover_s = now - self.ctx.first_failure_at


async def complete(
    rt: Runtime,
    transport: Transport,
    health: Health,
    ctx: RequestContext,
    plan: Plan,
    policy: Policy,
    request: ChatRequest,
    rng: random.Random,
) -> ChatResponse:
    ex = Executor(rt, transport, health, ctx, plan, policy, rng)

    async def work(c: Candidate, t: AttemptTimeouts) -> ChatResponse:
        adapter, target = c.endpoint.adapter, c.endpoint.target
        raw = await transport.request(
            adapter.chat_request(request, target), t, c.endpoint.name, target.deployment.max_connections
        )
        if raw.status >= 300:
            raise adapter.error(raw.status, raw.headers, raw.body)
        return adapter.chat_response(raw.body, target)

    c, record, response = await ex.race(work, lambda _: None)
    ex.won(c, record)
    record.outcome, record.usage = "ok", response.usage
    ctx.usage = response.usage
    return response  # type: ignore[no-any-return]


async def embed(
    rt: Runtime,
    transport: Transport,
    health: Health,
    ctx: RequestContext,
    plan: Plan,
    policy: Policy,
    request: EmbeddingRequest,
    rng: random.Random,
) -> EmbeddingResponse:
    ex = Executor(rt, transport, health, ctx, plan, policy, rng)

    async def work(c: Candidate, t: AttemptTimeouts) -> EmbeddingResponse:
        adapter, target = c.endpoint.adapter, c.endpoint.target
        raw = await transport.request(
            adapter.embeddings_request(request, target), t, c.endpoint.name, target.deployment.max_connections
        )
        if raw.status >= 300:
            raise adapter.error(raw.status, raw.headers, raw.body)
        return adapter.embeddings_response(raw.body, target)

    c, record, response = await ex.race(work, lambda _: None)
    ex.won(c, record)
    record.outcome, record.usage = "ok", response.usage
    ctx.usage = response.usage
    return response  # type: ignore[no-any-return]
