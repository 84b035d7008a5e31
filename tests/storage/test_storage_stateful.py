"""The reservation state machine, explored by hypothesis against an exact model: reserve, settle,
release, re-reserve under a used id, and crashes (time passing beyond reservations' TTLs).

Checked after every step, for every counter: the backend's spent and reserved equal the model's,
and for hard rules spent + reserved <= cap + the overshoot settles added beyond their own
reservations (a settle after expiry adds all of its amount to that overshoot).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from modelplex.storage.base import BudgetDecision, BudgetRule, Counters, period_key
from modelplex.storage.memory import MemoryCounters
from modelplex.storage.sqlite import SqliteCounters

T = TypeVar("T")
T0 = dt.datetime(2026, 11, 29, 6, 0, tzinfo=dt.UTC).timestamp()  # steps never leave this day
# Rules by scope: a caller passes every rule of a scope it charges (the cap of a counter binds
# only the calls that name it), so hypothesis picks scopes.
SCOPES = (
    (BudgetRule("team:t", "total", 1_000),),
    (BudgetRule("key:k", "day", 600), BudgetRule("key:k", "day", 300, hard=False)),  # one counter
    (BudgetRule("user:u", "day", 450),),
    (BudgetRule("route:r", "total", 200, hard=False),),
)
RULES = tuple(r for scope in SCOPES for r in scope)
scopes = st.lists(st.sampled_from(SCOPES), min_size=1, max_size=4, unique=True).map(
    lambda chosen: [r for scope in chosen for r in scope])


def counter(rule: BudgetRule, now: float) -> str:
    return f"{rule.scope}|{period_key(rule.period, now)}"


@dataclass
class Held:
    amount: int
    counters: list[str]
    expires_at: float
    forget_at: float
    open: bool = True


class ReservationMachine(RuleBasedStateMachine):
    reservations = Bundle("reservations")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.mkdtemp(prefix="mpx-stateful-")
        self.store = self.run(self.open())
        self.now = T0
        self.next_id = 0
        self.spent: dict[str, int] = {}
        self.reserved: dict[str, int] = {}
        self.overshoot: dict[str, int] = {}
        self.held: dict[str, Held] = {}

    async def open(self) -> Counters:
        raise NotImplementedError

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.store.close())
        self.loop.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # the model

    def collect(self) -> None:
        for h in self.held.values():
            if h.open and h.expires_at <= self.now:
                event("reservation expired")
                h.open = False
                for c in h.counters:
                    self.reserved[c] -= h.amount

    def expect_reserve(self, rules: list[BudgetRule], amount: int, rid: str, ttl: float) -> BudgetDecision:
        self.collect()
        names = [counter(r, self.now) for r in rules]
        for c in names:
            self.spent.setdefault(c, 0)
            self.reserved.setdefault(c, 0)
            self.overshoot.setdefault(c, 0)
        spent = tuple(self.spent[c] for c in names)
        reserved = tuple(self.reserved[c] for c in names)
        known = self.held.get(rid)
        if known is not None and known.forget_at > self.now:
            event("reserve: id in use")
            return BudgetDecision(True, None, spent, reserved)
        for r, s, v in zip(rules, spent, reserved, strict=True):
            if r.hard and s + v + amount > r.cap_micro:
                event("reserve: refused")
                return BudgetDecision(False, r, spent, reserved)
        distinct = list(dict.fromkeys(names))
        for c in distinct:
            self.reserved[c] += amount
        self.held[rid] = Held(amount, distinct, self.now + ttl, self.now + 2 * ttl)
        return BudgetDecision(True, None, spent, tuple(self.reserved[c] for c in names))

    # the rules

    @initialize(target=reservations, rules=scopes, amount=st.integers(0, 400))
    def first_reserve(self, rules: list[BudgetRule], amount: int) -> str:
        return self.new_reservation(rules, amount, 10.0)

    @rule(target=reservations, rules=scopes, amount=st.integers(0, 400),
          ttl=st.sampled_from([5.0, 10.0, 30.0]))
    def reserve(self, rules: list[BudgetRule], amount: int, ttl: float) -> str:
        return self.new_reservation(rules, amount, ttl)

    def new_reservation(self, rules: list[BudgetRule], amount: int, ttl: float) -> str:
        rid = f"r{self.next_id}"
        self.next_id += 1
        expected = self.expect_reserve(rules, amount, rid, ttl)
        assert self.run(self.store.reserve(rules, amount, rid, self.now, ttl)) == expected
        return rid

    @rule(rid=reservations, rules=scopes, amount=st.integers(0, 400))
    def reserve_again(self, rid: str, rules: list[BudgetRule], amount: int) -> None:
        expected = self.expect_reserve(rules, amount, rid, 10.0)
        assert self.run(self.store.reserve(rules, amount, rid, self.now, 10.0)) == expected

    @rule(rid=reservations, actual=st.integers(0, 600))
    def settle(self, rid: str, actual: int) -> None:
        self.run(self.store.settle(rid, actual, self.now))
        h = self.held.pop(rid, None)
        if h is None or h.forget_at <= self.now:
            return
        event("settle: open" if h.open else "settle: after expiry")
        for c in h.counters:
            if h.open:
                self.reserved[c] -= h.amount
            self.spent[c] += actual
            self.overshoot[c] += max(0, actual - h.amount) if h.open else actual

    @rule(rid=reservations, actual=st.integers(0, 600), late=st.floats(0, 1.5))
    def settle_after_a_stall(self, rid: str, actual: int, late: float) -> None:
        """A worker that stalled past its reservation's TTL (by `late` TTLs) settles at last."""
        h = self.held.get(rid)
        if h is not None:
            ttl = h.forget_at - h.expires_at
            self.now = max(self.now, h.expires_at + late * ttl)
        self.settle(rid, actual)

    @rule(rid=reservations)
    def release(self, rid: str) -> None:
        self.run(self.store.release(rid))
        h = self.held.pop(rid, None)
        if h is not None and h.open:
            for c in h.counters:
                self.reserved[c] -= h.amount

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 4.0, 9.99, 10.0, 25.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds  # a worker that never settles is a crash: its reservation expires

    @invariant()
    def counters_match_the_model_and_caps_hold(self) -> None:
        self.collect()
        for r in RULES:
            c = counter(r, self.now)
            state = self.run(self.store.budget_state(r, self.now))
            expected = (self.spent.get(c, 0), self.reserved.get(c, 0))
            assert (state.spent_micro, state.reserved_micro) == expected
            if r.hard:
                assert state.spent_micro + state.reserved_micro <= r.cap_micro + self.overshoot.get(c, 0)


class MemoryReservations(ReservationMachine):
    async def open(self) -> Counters:
        return MemoryCounters()


class SqliteReservations(ReservationMachine):
    async def open(self) -> Counters:
        return await SqliteCounters.open(f"{self.tmp}/counters.db")


_FAST = settings(deadline=None, stateful_step_count=40, suppress_health_check=[HealthCheck.too_slow])
TestMemoryReservations = MemoryReservations.TestCase
TestMemoryReservations.settings = settings(_FAST, max_examples=100)
TestSqliteReservations = SqliteReservations.TestCase
TestSqliteReservations.settings = settings(_FAST, max_examples=30)
