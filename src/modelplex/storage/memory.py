"""Storage for one process: keys, counters and the ledger in dicts. No method awaits in the middle
of its work, so on one event loop every operation is atomic without a lock."""

from __future__ import annotations

import heapq
import math
import time
from typing import Any

from modelplex.storage.base import (
    BudgetDecision,
    BudgetRule,
    BudgetState,
    Conflict,
    InTurn,
    KeyRecord,
    LedgerEntry,
    NotFound,
    RateDecision,
    RateRule,
    TeamRecord,
    UserRecord,
)
from modelplex.storage.counting import (
    EXPIRED,
    OPEN,
    SWEEP_EVERY_S,
    PeriodKeys,
    budget_counter,
    budget_lifetime,
    reservation_lifetime,
    retry_after,
)
from modelplex.storage.records import apply_key_changes

# --- keys --------------------------------------------------------------------------------------


class MemoryKeyStore:
    """Records are returned as stored (no copy: `key_by_digest` is on the request path); callers
    must not mutate their `metadata`."""

    def __init__(self) -> None:
        self._keys: dict[str, KeyRecord] = {}
        self._by_digest: dict[bytes, str] = {}
        self._teams: dict[str, TeamRecord] = {}
        self._users: dict[str, UserRecord] = {}

    async def create_key(self, record: KeyRecord) -> None:
        if record.id in self._keys or record.digest in self._by_digest:
            raise Conflict(f"key {record.id!r} or its digest exists")
        self._keys[record.id] = record
        self._by_digest[record.digest] = record.id

    async def key_by_digest(self, digest: bytes) -> KeyRecord | None:
        key_id = self._by_digest.get(digest)
        return None if key_id is None else self._keys[key_id]

    async def key_by_id(self, key_id: str) -> KeyRecord | None:
        return self._keys.get(key_id)

    async def list_keys(self, team: str | None = None, user: str | None = None) -> list[KeyRecord]:
        found = [
            k
            for k in self._keys.values()
            if (team is None or k.team == team) and (user is None or k.user == user)
        ]
        return sorted(found, key=lambda k: (k.created_at, k.id))

    async def update_key(self, key_id: str, **changes: Any) -> KeyRecord:
        record = self._keys.get(key_id)
        if record is None:
            raise NotFound(key_id)
        updated = self._keys[key_id] = apply_key_changes(record, changes)
        return updated

    async def revoke_key(self, key_id: str, at: float) -> KeyRecord:
        record = self._keys.get(key_id)
        if record is None:
            raise NotFound(key_id)
        when = at if record.revoked_at is None else min(record.revoked_at, at)
        return await self.update_key(key_id, revoked_at=when)

    async def put_team(self, team: TeamRecord) -> None:
        self._teams[team.name] = team

    async def team(self, name: str) -> TeamRecord | None:
        return self._teams.get(name)

    async def list_teams(self) -> list[TeamRecord]:
        return [self._teams[name] for name in sorted(self._teams)]

    async def delete_team(self, name: str, now: float | None = None) -> None:
        if name not in self._teams:
            raise NotFound(name)
        at = time.time() if now is None else now
        if any(k.team == name and k.active(at) for k in self._keys.values()):
            raise Conflict(f"team {name!r} has active keys")
        del self._teams[name]

    async def put_user(self, user: UserRecord) -> None:
        self._users[user.id] = user

    async def user(self, user_id: str) -> UserRecord | None:
        return self._users.get(user_id)

    async def list_users(self, team: str | None = None) -> list[UserRecord]:
        return [u for _, u in sorted(self._users.items()) if team is None or u.team == team]

    async def delete_user(self, user_id: str, now: float | None = None) -> None:
        if user_id not in self._users:
            raise NotFound(user_id)
        at = time.time() if now is None else now
        if any(k.user == user_id and k.active(at) for k in self._keys.values()):
            raise Conflict(f"user {user_id!r} has active keys")
        del self._users[user_id]

    async def close(self) -> None:
        pass


# --- counters ----------------------------------------------------------------------------------


class _Window:
    """One rate counter: amount per second, oldest first, and their total."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.total = 0

    def charge(self, second: int, amount: int) -> None:
        buckets = self.buckets
        count = buckets.get(second)
        if count is not None:
            buckets[second] = count + amount
        elif buckets and second < next(reversed(buckets)):
            buckets[second] = amount  # a clock behind another's: keep the seconds in order
            self.buckets = dict(sorted(buckets.items()))
        else:
            buckets[second] = amount
        self.total += amount

    def prune(self, oldest: int) -> None:
        buckets = self.buckets
        while buckets:
            first = next(iter(buckets))
            if first >= oldest:
                return
            self.total -= buckets.pop(first)


class _Budget:
    __slots__ = ("expires_at", "reserved", "spent")

    def __init__(self, expires_at: float | None) -> None:
        self.spent = 0
        self.reserved = 0
        self.expires_at = expires_at  # None: a `total` budget, kept for ever


class _Reservation:
    __slots__ = ("amount", "budgets", "expires_at", "forget_at", "state")

    def __init__(self, amount: int, budgets: list[_Budget], expires_at: float, forget_at: float) -> None:
        self.amount = amount
        self.budgets = budgets
        self.expires_at = expires_at
        self.forget_at = forget_at
        self.state = OPEN


class MemoryCounters(InTurn):
    def __init__(self) -> None:
        self._windows: dict[tuple[str, str, int], _Window] = {}
        self._leases: dict[str, dict[str, float]] = {}  # scope -> lease -> expires at
        self._budgets: dict[str, _Budget] = {}
        self._reservations: dict[str, _Reservation] = {}
        # (when, reservation id): at `expires_at` an open reservation expires; at `forget_at` the
        # expired record goes. An entry of a finished reservation finds no record; one whose id
        # was reused finds nothing due: both are dropped.
        self._timers: list[tuple[float, str]] = []
        self._period_keys = PeriodKeys()
        self._next_sweep = -math.inf

    # rate windows

    async def take(self, rules: list[RateRule], amounts: list[int], now: float) -> RateDecision:
        if now >= self._next_sweep:
            self._sweep(now)
        second = math.floor(now)
        windows: list[_Window] = []
        rejected = -1
        for i, rule in enumerate(rules):
            window = self._window(rule)
            window.prune(second - rule.window_s)
            windows.append(window)
            if rejected < 0 and window.total + amounts[i] > rule.limit:
                rejected = i
        if rejected >= 0:
            rule, window = rules[rejected], windows[rejected]
            wait = retry_after(
                sorted(window.buckets.items()),
                window.total,
                amounts[rejected],
                rule.limit,
                rule.window_s,
                now,
            )
            left = tuple(max(0, r.limit - w.total) for r, w in zip(rules, windows, strict=True))
            return RateDecision(False, rule, wait, left)
        remaining: list[int] = []
        for rule, window, amount in zip(rules, windows, amounts, strict=True):
            window.charge(second, amount)
            remaining.append(max(0, rule.limit - window.total))
        return RateDecision(True, remaining=tuple(remaining))

    async def add(self, rules: list[RateRule], amounts: list[int], now: float) -> None:
        second = math.floor(now)
        for rule, amount in zip(rules, amounts, strict=True):
            window = self._window(rule)
            window.prune(second - rule.window_s)
            window.charge(second, amount)

    def _window(self, rule: RateRule) -> _Window:
        key = (rule.scope, rule.kind, rule.window_s)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
        return window

    # concurrency leases

    async def acquire(
        self, scopes: list[tuple[str, int]], lease: str, now: float, ttl_s: float
    ) -> str | None:
        for scope, limit in scopes:
            held = self._leases.get(scope)
            if held is None:
                held = self._leases[scope] = {}
            if held.get(lease, -math.inf) > now:
                continue  # this lease holds a slot already: renewing it
            if len(held) >= limit:
                # Expired leases are dropped only when they would block someone.
                for gone in [name for name, until in held.items() if until <= now]:
                    del held[gone]
                if len(held) >= limit:
                    return scope
        until = now + ttl_s
        for scope, _ in scopes:
            self._leases[scope][lease] = until
        return None

    async def release_lease(self, scopes: list[str], lease: str) -> None:
        for scope in scopes:
            held = self._leases.get(scope)
            if held is not None:
                held.pop(lease, None)

    # budgets

    async def reserve(
        self, rules: list[BudgetRule], amount_micro: int, reservation: str, now: float, ttl_s: float
    ) -> BudgetDecision:
        if amount_micro < 0:
            raise ValueError("a reservation is never negative")
        if now >= self._next_sweep:
            self._sweep(now)
        self._collect(now)
        budgets: list[_Budget] = []  # per rule; rules on one scope and period share one
        distinct: dict[str, _Budget] = {}
        for rule in rules:
            name = budget_counter(rule.scope, self._period_keys(rule.period, now))
            budget = distinct.get(name)
            if budget is None:
                budget = distinct[name] = self._budget(name, rule, now, ttl_s)
            budgets.append(budget)
        if reservation in self._reservations:  # _collect has dropped those past their lifetime
            return _decision(True, None, budgets)
        for rule, budget in zip(rules, budgets, strict=True):
            if rule.hard and budget.spent + budget.reserved + amount_micro > rule.cap_micro:
                return _decision(False, rule, budgets)
        for budget in distinct.values():
            budget.reserved += amount_micro
        expires_at = now + ttl_s
        self._reservations[reservation] = _Reservation(
            amount_micro, list(distinct.values()), expires_at, now + reservation_lifetime(ttl_s)
        )
        heapq.heappush(self._timers, (expires_at, reservation))
        return _decision(True, None, budgets)

    def _budget(self, name: str, rule: BudgetRule, now: float, ttl_s: float) -> _Budget:
        budget = self._budgets.get(name)
        if budget is None:
            life = budget_lifetime(rule.period, now, ttl_s)
            budget = self._budgets[name] = _Budget(None if life is None else now + life)
        return budget

    async def settle(self, reservation: str, actual_micro: int, now: float) -> None:
        record = self._reservations.pop(reservation, None)
        if record is None or record.forget_at <= now:
            return
        held = record.amount if record.state == OPEN else 0  # an expired one holds nothing
        for budget in record.budgets:
            budget.reserved -= held
            budget.spent += actual_micro

    async def release(self, reservation: str) -> None:
        record = self._reservations.pop(reservation, None)
        if record is not None and record.state == OPEN:
            for budget in record.budgets:
                budget.reserved -= record.amount

    async def budget_state(self, rule: BudgetRule, now: float) -> BudgetState:
        self._collect(now)
        budget = self._budgets.get(budget_counter(rule.scope, self._period_keys(rule.period, now)))
        return BudgetState(0, 0) if budget is None else BudgetState(budget.spent, budget.reserved)

    def _collect(self, now: float) -> None:
        """Expire reservations past their TTL and forget expired ones past their lifetime."""
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, name = heapq.heappop(timers)
            record = self._reservations.get(name)
            if record is None:
                continue
            if record.state == OPEN and record.expires_at <= now:
                for budget in record.budgets:
                    budget.reserved -= record.amount
                record.state = EXPIRED
                heapq.heappush(timers, (record.forget_at, name))
            elif record.state == EXPIRED and record.forget_at <= now:
                del self._reservations[name]

    def _sweep(self, now: float) -> None:
        """Drop what nobody will read again: empty windows, expired leases, past periods."""
        self._next_sweep = now + SWEEP_EVERY_S
        second = math.floor(now)
        for key in [k for k, w in self._windows.items() if not w.buckets or max(w.buckets) < second - k[2]]:
            del self._windows[key]
        for scope, held in list(self._leases.items()):
            for gone in [name for name, until in held.items() if until <= now]:
                del held[gone]
            if not held:
                del self._leases[scope]
        for name in [
            n
            for n, b in self._budgets.items()
            if b.expires_at is not None and b.expires_at <= now and b.reserved == 0
        ]:
            del self._budgets[name]

    async def close(self) -> None:
        pass


def _decision(allowed: bool, rejected: BudgetRule | None, budgets: list[_Budget]) -> BudgetDecision:
    return BudgetDecision(
        allowed, rejected, tuple([b.spent for b in budgets]), tuple([b.reserved for b in budgets])
    )


# --- ledger ------------------------------------------------------------------------------------


class MemoryLedger:
    def __init__(self) -> None:
        self._entries: dict[str, LedgerEntry] = {}

    async def record(self, entries: list[LedgerEntry]) -> None:
        for entry in entries:
            self._entries.setdefault(entry.request_id, entry)

    async def total(
        self, *, team: str | None = None, key_id: str | None = None, since: float | None = None
    ) -> int:
        return sum(
            e.report_cost_micro
            for e in self._entries.values()
            if (team is None or e.team == team)
            and (key_id is None or e.key_id == key_id)
            and (since is None or e.at >= since)
        )

    async def count(self) -> int:
        return len(self._entries)

    async def close(self) -> None:
        pass
