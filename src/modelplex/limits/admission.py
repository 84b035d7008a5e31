"""Admission and settlement: rate limits, concurrency and budgets, each all-or-nothing.

admit()  concurrency leases, then rate windows (a request, its estimated prompt tokens), then a
         budget reservation of the request's worst-case cost across every candidate it may reach.
         A refusal undoes what was taken before it and raises LimitExceeded (429) naming the limit.
settle() after the answer: leases released, output tokens added to TPM windows, the reservation
         replaced by what was actually spent (answer + waste), a ledger row queued.

The counter store may be unreachable (Redis down): rate limits then fall back to a local share of
each limit, hard budgets fail closed with 503 (or open, by config), and the store is skipped for
`store_retry_s` so no request waits on it again; after that it is tried again, so limits are
global again within seconds of the store coming back.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from modelplex.config.limits import Admission as AdmissionSettings
from modelplex.context import RequestContext
from modelplex.errors import LimitExceeded, Unavailable
from modelplex.limits import rules as R
from modelplex.limits.keys import MISSING as _MISSING
from modelplex.limits.keys import KeyResolver
from modelplex.metering.cost import micro_to_str
from modelplex.metering.meter import Meter
from modelplex.routing.plan import Plan
from modelplex.runtime import Caller, Runtime
from modelplex.storage.base import (
    BudgetDecision,
    BudgetRule,
    Counters,
    Ledger,
    LedgerEntry,
    LimitSpec,
    RateDecision,
    RateRule,
    StoreUnavailable,
    period_reset,
)
from modelplex.storage.memory import MemoryCounters

log = logging.getLogger("modelplex.limits")
LEDGER_FLUSH_S = 0.5
NO_LIMITS = LimitSpec()


@dataclass
class Ticket:
    """What admission took for one request, to be settled or released at its end."""

    rate_rules: list[RateRule] = field(default_factory=list)
    leases: list[str] = field(default_factory=list)
    reservation: str | None = None
    reserved_micro: int = 0
    estimated_tokens: int = 0
    # Under a hard budget a request without max_tokens is sent with this one, so its worst case
    # (what was reserved) is a true bound on what it can cost.
    max_tokens: int | None = None
    local: bool = False  # rate limits were counted locally (store down)

    @property
    def empty(self) -> bool:
        return not (self.rate_rules or self.leases or self.reservation)


EMPTY = Ticket()  # shared and never changed: nothing was taken


class Admission:
    def __init__(
        self,
        counters: Counters,
        ledger: Ledger | None,
        keys: KeyResolver,
        settings: AdmissionSettings,
        reservation_ttl_s: float,
        meter: Callable[[], Meter],
    ) -> None:
        self.meter = meter
        self.counters = counters
        self.ledger = ledger
        self.keys = keys
        self.settings = settings
        self.reservation_ttl_s = reservation_ttl_s
        self.local = MemoryCounters()
        self._down_until = 0.0
        self._pending: list[LedgerEntry] = []
        self._settling: set[asyncio.Task[None]] = set()
        self.rejections: dict[str, int] = {}  # kind -> count, read by metrics

    # -- store health ---------------------------------------------------------------------------

    def _store_ok(self) -> bool:
        return time.monotonic() >= self._down_until

    def _store_failed(self, exc: Exception) -> None:
        if self._store_ok():
            log.warning(
                "counter store unreachable (%s); limits local, hard budgets %s for %.1fs",
                exc,
                self.settings.budgets_when_store_down,
                self.settings.store_retry_s,
            )
        self._down_until = time.monotonic() + self.settings.store_retry_s

    # -- admit ----------------------------------------------------------------------------------

    async def admit(self, rt: Runtime, ctx: RequestContext, plan: Plan) -> Ticket:
        caller = ctx.caller
        assert caller is not None
        if self._nothing_applies(rt, caller):
            return EMPTY
        team = self.keys.cached_team(caller.team)
        if team is _MISSING:
            team = await self.keys.team(caller.team)
        user = None
        if caller.user:
            user = self.keys.cached_user(caller.user)
            if user is _MISSING:
                user = await self.keys.user(caller.user)
        rate, leases = R.rate_rules(rt, caller, team, user, plan.model)
        budgets = R.budget_rules(rt, caller, team, user, plan.route.name if plan.route else None)
        ticket = Ticket()
        if not (rate or leases or budgets):
            return ticket
        now = time.time()
        ticket.estimated_tokens = plan.features.prompt_tokens
        try:
            if leases:
                await self._acquire(ticket, leases, ctx, now)
            if rate and budgets and self._store_ok() and not ticket.local:
                await self._take_and_reserve(ticket, rate, budgets, ctx, rt, plan, now)
            else:
                if rate:
                    await self._take(ticket, rate, now)
                if budgets:
                    await self._reserve(ticket, budgets, ctx, rt, plan, now)
        except BaseException:
            await self._undo(ticket)
            raise
        return ticket

    def _nothing_applies(self, rt: Runtime, caller: Caller) -> bool:
        """No limit or budget can apply: no config rule, none on the key, none on its cached team
        or user (an uncached record is looked up the slow way)."""
        config = rt.config
        if config.limits or config.budgets or caller.budgets:
            return False
        if caller.rpm is not None or caller.tpm is not None or caller.concurrency is not None:
            return False
        for record in (
            self.keys.cached_team(caller.team),
            self.keys.cached_user(caller.user) if caller.user else None,
        ):
            if record is _MISSING:
                return False
            if record is not None and (record.budgets or record.limits != NO_LIMITS):
                return False
        return True

    async def _acquire(
        self, ticket: Ticket, leases: list[tuple[str, int]], ctx: RequestContext, now: float
    ) -> None:
        ttl = max(ctx.deadline - ctx.started, 1.0) + 60.0
        store: Counters = self.counters
        if not self._store_ok():
            store, ticket.local = self.local, True
        try:
            full = await store.acquire(leases, ctx.request_id, now, ttl)
        except StoreUnavailable as exc:
            self._store_failed(exc)
            ticket.local = True
            full = await self.local.acquire(self._shared(leases), ctx.request_id, now, ttl)
        if full is not None:
            self._reject("concurrency")
            raise LimitExceeded(f"Too many concurrent requests for {R.describe(full)}.", retry_after=1)
        ticket.leases = [scope for scope, _ in leases]

    def _shared(self, leases: list[tuple[str, int]]) -> list[tuple[str, int]]:
        return [(s, max(int(n * self.settings.local_share), 1)) for s, n in leases]

    async def _take(self, ticket: Ticket, rules: list[RateRule], now: float) -> None:
        amounts = [1 if r.kind == "rpm" else ticket.estimated_tokens for r in rules]
        decision = None
        if self._store_ok() and not ticket.local:
            try:
                decision = await self.counters.take(rules, amounts, now)
            except StoreUnavailable as exc:
                self._store_failed(exc)
        if decision is None:
            ticket.local = True
            local_rules = [
                RateRule(r.scope, r.kind, max(int(r.limit * self.settings.local_share), 1), r.window_s)
                for r in rules
            ]
            decision = await self.local.take(local_rules, amounts, now)
        self._check_rate(decision)
        ticket.rate_rules = rules

    def _check_rate(self, decision: RateDecision) -> None:
        if not decision.allowed:
            rejected = decision.rejected
            assert rejected is not None
            self._reject(rejected.kind)
            retry = decision.retry_after if decision.retry_after != float("inf") else None
            headers = {
                f"x-ratelimit-limit-{'requests' if rejected.kind == 'rpm' else 'tokens'}": str(
                    rejected.limit
                ),
                f"x-ratelimit-remaining-{'requests' if rejected.kind == 'rpm' else 'tokens'}": "0",
            }
            if retry is not None:
                headers[f"x-ratelimit-reset-{'requests' if rejected.kind == 'rpm' else 'tokens'}"] = (
                    f"{retry:.3f}s"
                )
            unit = "requests" if rejected.kind == "rpm" else "tokens"
            raise LimitExceeded(
                f"Rate limit of {rejected.limit} {unit} per minute reached for {R.describe(rejected.scope)}.",
                retry_after=retry,
                headers=headers,
            )

    async def _reserve(
        self,
        ticket: Ticket,
        rules: list[BudgetRule],
        ctx: RequestContext,
        rt: Runtime,
        plan: Plan,
        now: float,
    ) -> None:
        amount = R.worst_case_micro(plan, self.settings.default_max_output_tokens, self.meter())
        hard = [r for r in rules if r.hard]
        if not self._store_ok():
            self._budget_store_down(hard)
            return
        try:
            decision = await self.counters.reserve(rules, amount, ctx.request_id, now, self.reservation_ttl_s)
        except StoreUnavailable as exc:
            self._store_failed(exc)
            self._budget_store_down(hard)
            return
        self._check_budget(decision, rt, now)
        self._reserved(ticket, ctx, plan, amount, bool(hard))

    async def _take_and_reserve(
        self,
        ticket: Ticket,
        rules: list[RateRule],
        budgets: list[BudgetRule],
        ctx: RequestContext,
        rt: Runtime,
        plan: Plan,
        now: float,
    ) -> None:
        """Rate windows and the budget in one round trip to the store."""
        amount = R.worst_case_micro(plan, self.settings.default_max_output_tokens, self.meter())
        amounts = [1 if r.kind == "rpm" else ticket.estimated_tokens for r in rules]
        try:
            rate, budget = await self.counters.admit_many(
                rules, amounts, budgets, amount, ctx.request_id, now, self.reservation_ttl_s
            )
        except StoreUnavailable as exc:
            self._store_failed(exc)
            await self._take(ticket, rules, now)  # the store is now skipped: counted locally
            self._budget_store_down([r for r in budgets if r.hard])
            return
        self._check_rate(rate)
        ticket.rate_rules = rules
        assert budget is not None
        self._check_budget(budget, rt, now)
        self._reserved(ticket, ctx, plan, amount, any(r.hard for r in budgets))

    def _reserved(self, ticket: Ticket, ctx: RequestContext, plan: Plan, amount: int, hard: bool) -> None:
        ticket.reservation, ticket.reserved_micro = ctx.request_id, amount
        if hard and plan.features.max_tokens is None:
            ticket.max_tokens = self.settings.default_max_output_tokens

    def _check_budget(self, decision: BudgetDecision, rt: Runtime, now: float) -> None:
        if decision.allowed:
            return
        rule = decision.rejected
        assert rule is not None
        self._reject("budget")
        reset = period_reset(rule.period, now)
        when = (
            f"; it resets at {dt.datetime.fromtimestamp(reset, tz=dt.UTC):%Y-%m-%dT%H:%MZ}"
            if reset is not None
            else "; it does not reset"
        )
        currency = rt.config.metering.currency
        raise LimitExceeded(
            f"Budget {R.describe(rule.scope)} ({rule.period}, {micro_to_str(rule.cap_micro, 2)} "
            f"{currency}) has no room for this request{when}.",
            retry_after=(reset - now) if reset is not None else None,
            headers={"x-modelplex-budget": f"{rule.scope}; period={rule.period}"},
        )

    def _budget_store_down(self, hard: list[BudgetRule]) -> None:
        if hard and self.settings.budgets_when_store_down == "closed":
            self._reject("budget_store_down")
            raise Unavailable(
                "Budgets cannot be checked right now (the counter store is unreachable); "
                "this request was not sent.",
                retry_after=self.settings.store_retry_s,
            )

    def _reject(self, kind: str) -> None:
        self.rejections[kind] = self.rejections.get(kind, 0) + 1

    # -- settle ---------------------------------------------------------------------------------

    def settle_later(self, rt: Runtime, ticket: Ticket, ctx: RequestContext) -> None:
        """Queue the ledger row now; settle counters in a task only when admission took any."""
        spend = (ctx.report_cost_micro or 0) + ctx.waste_micro
        # The ledger is the audit of budgeted spend; the request log records every request's cost.
        if self.ledger is not None and ticket.reservation is not None:
            self._pending.append(ledger_entry(ctx, spend))
        if ticket.empty:
            return
        task = asyncio.get_running_loop().create_task(self.settle(rt, ticket, ctx, spend))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def settle(self, rt: Runtime, ticket: Ticket, ctx: RequestContext, spend: int) -> None:
        now = time.time()
        tpm = [r for r in ticket.rate_rules if r.kind == "tpm"]
        extra = 0
        if tpm and ctx.usage is not None:
            extra = max(ctx.usage.prompt_total + ctx.usage.completion_total - ticket.estimated_tokens, 0)
        if not extra:
            tpm = []
        try:
            if ticket.local:  # leases and windows were counted locally; the reservation never was
                await self.local.finish(ticket.leases, ctx.request_id, tpm, [extra] * len(tpm), None, 0, now)
                if ticket.reservation is not None:
                    await self.counters.finish([], "", [], [], ticket.reservation, spend, now)
            else:
                await self.counters.finish(
                    ticket.leases, ctx.request_id, tpm, [extra] * len(tpm), ticket.reservation, spend, now
                )
        except StoreUnavailable as exc:
            # The reservation expires on its own (TTL); the lease too.
            self._store_failed(exc)

    async def _undo(self, ticket: Ticket) -> None:
        with contextlib.suppress(StoreUnavailable):
            store: Counters = self.local if ticket.local else self.counters
            if ticket.leases:
                await store.release_lease(ticket.leases, "")
            if ticket.reservation is not None:
                await self.counters.release(ticket.reservation)

    async def flush_ledger(self) -> None:
        if self.ledger is None or not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            await self.ledger.record(batch)
        except StoreUnavailable:
            self._pending = batch + self._pending  # recording is idempotent: try again later

    async def run(self) -> None:
        """Background task: ship queued ledger rows every LEDGER_FLUSH_S."""
        while True:
            await asyncio.sleep(LEDGER_FLUSH_S)
            try:
                await self.flush_ledger()
            except Exception:
                log.exception("ledger flush failed; rows kept for the next try")

    async def close(self) -> None:
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
        await self.flush_ledger()


def ledger_entry(ctx: RequestContext, spend_report_micro: int) -> LedgerEntry:
    caller = ctx.caller
    answered = ctx.answered_by
    return LedgerEntry(
        request_id=ctx.request_id,
        at=ctx.wall_started,
        key_id=caller.key_id if caller else None,
        team=caller.team if caller else None,
        user=caller.user if caller else None,
        route=ctx.route,
        model=ctx.answered_model,
        deployment=answered.name if answered else None,
        cost_micro=ctx.cost_micro or 0,
        currency=ctx.cost_currency or "",
        report_cost_micro=spend_report_micro,
        estimated=bool(ctx.usage and ctx.usage.estimated),
        unpriced=ctx.unpriced,
    )
