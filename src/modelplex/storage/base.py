"""Narrow storage interfaces, one per concern, each with several backends.

    KeyStore    virtual keys, teams, users                  memory | sqlite | postgres
    Counters    rate windows, concurrency leases, budgets    memory | sqlite | redis
    Ledger      one spend row per request, idempotent        memory | sqlite | postgres

One conformance suite (tests/storage/) runs against every backend; Redis and PostgreSQL run
against real servers. All methods are async; a backend that blocks (SQLite) runs its work in a
thread. Every amount is an integer (requests, tokens, micro-units of money); time is epoch
seconds as float passed in by the caller, so tests control the clock.

Semantics the gateway relies on:

* Rate windows (`Counters.take`) are sliding windows of 1-second buckets. A rule with limit L
  over `window_s` W admits an amount only if the total in the last W+1 buckets plus the amount is
  at most L, so no span of W seconds ever holds more than L. `take` is all-or-nothing across its
  rules: either every rule has room and every rule is charged, or nothing is charged.
* Budgets (`Counters.reserve/settle/release`): admission reserves an amount against every rule at
  once, all-or-nothing over the *hard* rules: it succeeds only if, for every hard rule,
  spent + reserved + amount <= cap. Settling replaces the reservation by the actual amount in
  `spent` (which may exceed the reservation: that overshoot is bounded by one request).
  Releasing drops the reservation. Settle and release are idempotent. A reservation not settled
  or released within its TTL (a crashed worker) is released by the backend lazily.
  Invariant: for hard rules, spent + reserved <= cap, except by what settles added beyond their
  own reservations.
  A reservation ends once: the first settle or release wins and later calls are no-ops, except
  that a settle arriving after the TTL released the reservation (within one more TTL) still adds
  its actual amount to `spent` (the money was spent; all of it counts as overshoot). Spend and
  reservation stay in the period the reservation was made in. Rules naming the same scope and
  period share one counter (a hard and a soft cap on one spend): the amount is reserved once and
  checked against each.
* Rules in one `take`/`add` call name distinct counters (scope, kind, window_s).
* A backend that cannot reach its server raises `StoreUnavailable`; the caller decides whether
  to fail open or closed.
* Budget periods are UTC: `day` is the calendar day, `month` the calendar month, `total` never
  resets. `period_key(period, now)` names the bucket.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast

Period = Literal["day", "month", "total"]
ScopeKind = Literal["key", "team", "user", "model", "deployment", "route"]


def period_key(period: Period, now: float) -> str:
    """The bucket a spend at `now` belongs to: '2026-11-29', '2026-11' or 'total'."""
    if period == "total":
        return "total"
    day = dt.datetime.fromtimestamp(now, tz=dt.UTC)
    return day.strftime("%Y-%m-%d") if period == "day" else day.strftime("%Y-%m")


def period_reset(period: Period, now: float) -> float | None:
    """Epoch seconds when the period containing `now` ends (None for `total`)."""
    if period == "total":
        return None
    day = dt.datetime.fromtimestamp(now, tz=dt.UTC)
    if period == "day":
        start = day.replace(hour=0, minute=0, second=0, microsecond=0)
        return (start + dt.timedelta(days=1)).timestamp()
    first = day.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if first.month == 12:
        return first.replace(year=first.year + 1, month=1).timestamp()
    return first.replace(month=first.month + 1).timestamp()


# --- keys --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LimitSpec:
    """Limits attached to a key, team or user record (None: no limit of that kind)."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None


@dataclass(frozen=True)
class BudgetSpec:
    period: Period
    amount_micro: int  # in the reporting currency
    hard: bool = True


@dataclass(frozen=True)
class KeyRecord:
    id: str  # public, stable identifier (e.g. "key_3f9a..."); never the secret
    name: str
    digest: bytes  # HMAC-SHA256 of the secret; the secret itself is never stored
    team: str
    user: str | None = None
    models: tuple[str, ...] | None = None  # None: every model
    routes: tuple[str, ...] | None = None  # None: every route
    metadata: dict[str, Any] = field(default_factory=dict)
    limits: LimitSpec = field(default_factory=LimitSpec)
    budgets: tuple[BudgetSpec, ...] = ()
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None
    prefix: str = ""  # the first characters of the secret, for people to recognise a key

    def active(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True)
class TeamRecord:
    name: str
    metadata: dict[str, Any] = field(default_factory=dict)
    limits: LimitSpec = field(default_factory=LimitSpec)
    budgets: tuple[BudgetSpec, ...] = ()
    created_at: float = 0.0


@dataclass(frozen=True)
class UserRecord:
    id: str
    team: str
    metadata: dict[str, Any] = field(default_factory=dict)
    limits: LimitSpec = field(default_factory=LimitSpec)
    budgets: tuple[BudgetSpec, ...] = ()
    created_at: float = 0.0


class NotFound(KeyError):
    pass


class Conflict(ValueError):
    pass


class StoreUnavailable(Exception):
    """The backend's server cannot be reached in time (connection refused, timeout, locked)."""


class KeyStore(Protocol):
    async def create_key(self, record: KeyRecord) -> None:
        """Raises Conflict if the id or the digest exists."""

    async def key_by_digest(self, digest: bytes) -> KeyRecord | None: ...

    async def key_by_id(self, key_id: str) -> KeyRecord | None: ...

    async def list_keys(self, team: str | None = None, user: str | None = None) -> list[KeyRecord]: ...

    async def update_key(self, key_id: str, **changes: Any) -> KeyRecord:
        """Replace the named fields (any KeyRecord field but id and digest). Raises NotFound."""

    async def revoke_key(self, key_id: str, at: float) -> KeyRecord:
        """Set revoked_at (keeping an earlier one). Raises NotFound."""

    async def put_team(self, team: TeamRecord) -> None:
        """Create or replace."""

    async def team(self, name: str) -> TeamRecord | None: ...

    async def list_teams(self) -> list[TeamRecord]: ...

    async def delete_team(self, name: str, now: float | None = None) -> None:
        """Raises NotFound; raises Conflict while keys active at `now` (default: the wall clock)
        belong to the team."""

    async def put_user(self, user: UserRecord) -> None:
        """Create or replace."""

    async def user(self, user_id: str) -> UserRecord | None: ...

    async def list_users(self, team: str | None = None) -> list[UserRecord]: ...

    async def delete_user(self, user_id: str, now: float | None = None) -> None:
        """Raises NotFound; raises Conflict while keys active at `now` belong to the user."""

    async def close(self) -> None: ...


# --- counters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateRule:
    scope: str  # e.g. "key:key_3f9a", "team:research", "deployment:openai-mini"
    kind: Literal["rpm", "tpm"]
    limit: int
    window_s: int = 60

    @property
    def name(self) -> str:
        return f"{self.scope}:{self.kind}"


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    rejected: RateRule | None = None  # the first rule without room
    retry_after: float = 0.0  # seconds until the rejected rule has room for this amount
    # (math.inf when the amount exceeds the rule's limit: it never fits)
    remaining: tuple[int, ...] = ()  # per rule, after this take (or now, when rejected)


@dataclass(frozen=True)
class BudgetRule:
    scope: str  # e.g. "key:key_3f9a", "team:research", "user:u1", "route:auto"
    period: Period
    cap_micro: int
    hard: bool = True


@dataclass(frozen=True)
class BudgetDecision:
    allowed: bool
    rejected: BudgetRule | None = None
    spent_micro: tuple[int, ...] = ()  # per rule, in the current period
    reserved_micro: tuple[int, ...] = ()


@dataclass(frozen=True)
class BudgetState:
    spent_micro: int
    reserved_micro: int


class Counters(Protocol):
    async def take(self, rules: list[RateRule], amounts: list[int], now: float) -> RateDecision:
        """All-or-nothing: charge amounts[i] against rules[i] if every rule has room."""

    async def add(self, rules: list[RateRule], amounts: list[int], now: float) -> None:
        """Charge without a check (e.g. output tokens counted after the answer)."""

    async def acquire(
        self, scopes: list[tuple[str, int]], lease: str, now: float, ttl_s: float
    ) -> str | None:
        """Concurrency: take one slot of each (scope, limit), all or nothing, under a lease id.
        Returns None on success, else the scope that is full. Leases expire after ttl_s;
        acquiring again under a lease that holds its slots renews them."""

    async def release_lease(self, scopes: list[str], lease: str) -> None: ...

    async def reserve(
        self, rules: list[BudgetRule], amount_micro: int, reservation: str, now: float, ttl_s: float
    ) -> BudgetDecision:
        """All-or-nothing over the hard rules (see the module docstring). An id still in use
        (open, or expired less than one TTL ago) changes nothing and is reported allowed: a
        retried call. `spent_micro`/`reserved_micro` are after this reservation (or now, when
        refused)."""

    async def settle(self, reservation: str, actual_micro: int, now: float) -> None: ...

    async def release(self, reservation: str) -> None: ...

    async def budget_state(self, rule: BudgetRule, now: float) -> BudgetState: ...

    async def admit_many(
        self,
        rules: list[RateRule],
        amounts: list[int],
        budgets: list[BudgetRule],
        amount_micro: int,
        reservation: str,
        now: float,
        ttl_s: float,
    ) -> tuple[RateDecision, BudgetDecision | None]:
        """`take` then `reserve` in one round trip where the backend allows. The reservation is
        made only if the take is allowed (a backend that sends both at once releases it)."""

    async def finish(
        self,
        leases: list[str],
        lease: str,
        rules: list[RateRule],
        amounts: list[int],
        reservation: str | None,
        actual_micro: int,
        now: float,
    ) -> None:
        """Everything a request's end settles, in one round trip where the backend allows:
        `release_lease`, `add` (TPM corrections), then `settle` (or `release` when actual is 0)."""

    async def close(self) -> None: ...


async def admit_in_turn(
    counters: Counters,
    rules: list[RateRule],
    amounts: list[int],
    budgets: list[BudgetRule],
    amount_micro: int,
    reservation: str,
    now: float,
    ttl_s: float,
) -> tuple[RateDecision, BudgetDecision | None]:
    """`admit_many` as separate calls: for backends where a call costs no round trip."""
    decision = await counters.take(rules, amounts, now) if rules else RateDecision(True)
    if not decision.allowed or not budgets:
        return decision, None
    return decision, await counters.reserve(budgets, amount_micro, reservation, now, ttl_s)


class InTurn:
    """`admit_many` and `finish` as the separate calls they stand for: for backends where a call
    costs no round trip (memory, SQLite). A subclass implements the rest of `Counters`."""

    async def admit_many(
        self,
        rules: list[RateRule],
        amounts: list[int],
        budgets: list[BudgetRule],
        amount_micro: int,
        reservation: str,
        now: float,
        ttl_s: float,
    ) -> tuple[RateDecision, BudgetDecision | None]:
        return await admit_in_turn(cast(Counters, self), rules, amounts, budgets, amount_micro, reservation,
                                   now, ttl_s)

    async def finish(
        self,
        leases: list[str],
        lease: str,
        rules: list[RateRule],
        amounts: list[int],
        reservation: str | None,
        actual_micro: int,
        now: float,
    ) -> None:
        counters = cast(Counters, self)
        if leases:
            await counters.release_lease(leases, lease)
        if rules:
            await counters.add(rules, amounts, now)
        if reservation is not None:
            if actual_micro > 0:
                await counters.settle(reservation, actual_micro, now)
            else:
                await counters.release(reservation)


# --- ledger ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LedgerEntry:
    request_id: str
    at: float
    key_id: str | None
    team: str | None
    user: str | None
    route: str | None
    model: str | None
    deployment: str | None
    cost_micro: int  # in `currency`, the provider's
    currency: str
    report_cost_micro: int  # in the reporting currency
    estimated: bool = False
    unpriced: bool = False


class Ledger(Protocol):
    async def record(self, entries: list[LedgerEntry]) -> None:
        """Idempotent by request_id: recording an entry twice stores it once."""

    async def total(
        self, *, team: str | None = None, key_id: str | None = None, since: float | None = None
    ) -> int:
        """Sum of report_cost_micro of matching entries."""

    async def count(self) -> int: ...

    async def close(self) -> None: ...
