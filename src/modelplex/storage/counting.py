"""What the Counters backends share: which counter a rule charges, how long counters live, and
when a full sliding window has room again."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

from modelplex.storage.base import BudgetRule, Period, RateRule, period_key, period_reset

DAY_S: Final = 86_400
# Counters of a finished day or month are kept this long after the period ends (at least), so a
# late settle still finds them; then they expire.
PERIOD_GRACE_S: Final = DAY_S
# How often (in the caller's clock) a backend sweeps counters nobody touches any more.
SWEEP_EVERY_S: Final = 60.0

# A reservation is open until settled or released (then its record is deleted) or until its TTL
# passes: then it is expired, holds nothing, and its record stays one more TTL so a late settle
# still charges what was spent.
OPEN: Final = "open"
EXPIRED: Final = "expired"


class PeriodKeys:
    """`period_key`, cached per UTC day: the request path asks for it on every reservation and
    formatting a date costs more than the rest of a reservation in memory."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Period, int], str] = {}

    def __call__(self, period: Period, now: float) -> str:
        if period == "total":
            return "total"
        slot = (period, int(now // DAY_S))
        name = self._cache.get(slot)
        if name is None:
            if len(self._cache) > 64:
                self._cache.clear()
            name = self._cache[slot] = period_key(period, now)
        return name


def rate_counter(rule: RateRule) -> str:
    """The window a rule counts in. The limit is not part of it, so changing a limit keeps the count."""
    return f"{rule.scope}:{rule.kind}:{rule.window_s}"


def budget_counter(scope: str, pkey: str) -> str:
    """The spend of one scope in one period (rules with other caps on it share it)."""
    return f"{scope}|{pkey}"


def budget_counters(rules: list[BudgetRule], now: float, keys: PeriodKeys) -> tuple[list[str], list[int]]:
    """The distinct counters the rules charge, and for each rule the index of its counter."""
    names: list[str] = []
    index: dict[str, int] = {}
    of_rule: list[int] = []
    for rule in rules:
        name = budget_counter(rule.scope, keys(rule.period, now))
        i = index.get(name)
        if i is None:
            i = index[name] = len(names)
            names.append(name)
        of_rule.append(i)
    return names, of_rule


def budget_lifetime(period: Period, now: float, ttl_s: float) -> float | None:
    """Seconds from `now` a budget counter must live (None: for ever, it is the `total` budget)."""
    end = period_reset(period, now)
    if end is None:
        return None
    return end - now + max(PERIOD_GRACE_S, 2 * ttl_s)


def reservation_lifetime(ttl_s: float) -> float:
    """Seconds an unfinished reservation's record is kept: its TTL, then as long again, expired,
    for a late settle."""
    return 2 * ttl_s


def retry_after(buckets: Iterable[tuple[int, int]], total: int, amount: int, limit: int,
                window_s: int, now: float) -> float:
    """Seconds until a window holding `buckets` (second -> amount, oldest first, `total` in all)
    has room for `amount`: bucket b leaves the window when floor(now) > b + window_s."""
    if amount > limit:
        return math.inf
    need = total + amount - limit
    last = math.floor(now)
    for bucket, count in buckets:
        need -= count
        last = bucket
        if need <= 0:
            break
    return max(0.0, last + window_s + 1 - now)
