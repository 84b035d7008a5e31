"""Counters conformance, part two: budget reservations, settlement, expiry and periods."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from modelplex.storage.base import BudgetRule, BudgetState, Counters, period_key, period_reset

T0 = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC).timestamp()
TTL = 60.0
TEAM = BudgetRule("team:research", "month", 1_000)
KEY = BudgetRule("key:k1", "day", 500)
KEY_SOFT = BudgetRule("key:k1", "day", 300, hard=False)  # an alert level on the same spend as KEY


async def state(counters: Counters, rule: BudgetRule, now: float = T0) -> tuple[int, int]:
    s = await counters.budget_state(rule, now)
    return s.spent_micro, s.reserved_micro


async def test_reserve_within_the_caps(counters: Counters) -> None:
    decision = await counters.reserve([TEAM, KEY], 200, "r1", T0, TTL)
    assert decision.allowed and decision.rejected is None
    assert decision.spent_micro == (0, 0) and decision.reserved_micro == (200, 200)
    assert await state(counters, TEAM) == (0, 200)
    assert await counters.budget_state(BudgetRule("nobody", "day", 1), T0) == BudgetState(0, 0)


async def test_reserve_is_all_or_nothing_over_hard_rules(counters: Counters) -> None:
    assert (await counters.reserve([KEY], 400, "r1", T0, TTL)).allowed
    refused = await counters.reserve([TEAM, KEY], 200, "r2", T0, TTL)
    assert not refused.allowed and refused.rejected == KEY
    assert refused.spent_micro == (0, 0) and refused.reserved_micro == (0, 400)
    assert await state(counters, TEAM) == (0, 0)  # the rule with room was not charged
    assert (await counters.reserve([TEAM, KEY], 100, "r3", T0, TTL)).allowed  # exactly at the cap
    assert await state(counters, KEY) == (0, 500)


async def test_soft_rules_never_refuse_but_count(counters: Counters) -> None:
    soft = BudgetRule("route:auto", "total", 10, hard=False)
    decision = await counters.reserve([soft, TEAM], 700, "r1", T0, TTL)
    assert decision.allowed and decision.reserved_micro == (700, 700)
    await counters.settle("r1", 650, T0)
    assert await state(counters, soft) == (650, 0)


async def test_rules_on_one_spend_share_one_counter(counters: Counters) -> None:
    decision = await counters.reserve([KEY_SOFT, KEY], 350, "r1", T0, TTL)
    assert decision.allowed and decision.reserved_micro == (350, 350)  # reserved once, not twice
    assert not (await counters.reserve([KEY], 151, "r2", T0, TTL)).allowed
    assert (await counters.reserve([KEY_SOFT, KEY], 150, "r3", T0, TTL)).allowed


async def test_settle_replaces_the_reservation_by_the_actual_amount(counters: Counters) -> None:
    await counters.reserve([TEAM, KEY], 300, "r1", T0, TTL)
    await counters.settle("r1", 120, T0 + 1)
    assert await state(counters, TEAM) == (120, 0)
    assert await state(counters, KEY) == (120, 0)
    await counters.settle("r1", 120, T0 + 2)  # idempotent
    await counters.release("r1")  # the reservation has ended: no-op
    assert await state(counters, TEAM) == (120, 0)


async def test_settle_may_overshoot_by_one_request(counters: Counters) -> None:
    await counters.reserve([KEY], 400, "r1", T0, TTL)
    await counters.settle("r1", 700, T0)  # the answer cost more than its worst case
    assert await state(counters, KEY) == (700, 0)
    assert not (await counters.reserve([KEY], 0, "r2", T0, TTL)).allowed
    assert (await counters.reserve([KEY_SOFT], 10, "r3", T0, TTL)).allowed


async def test_release_drops_the_reservation(counters: Counters) -> None:
    await counters.reserve([TEAM], 900, "r1", T0, TTL)
    await counters.release("r1")
    await counters.release("r1")
    await counters.settle("r1", 900, T0)  # after a release, a settle is a no-op
    await counters.release("never-reserved")
    await counters.settle("never-reserved", 5, T0)
    assert await state(counters, TEAM) == (0, 0)
    assert (await counters.reserve([TEAM], 1000, "r2", T0, TTL)).allowed


async def test_reserving_an_existing_id_changes_nothing(counters: Counters) -> None:
    assert (await counters.reserve([TEAM], 600, "r1", T0, TTL)).allowed
    again = await counters.reserve([TEAM], 600, "r1", T0 + 1, TTL)
    assert again.allowed and again.reserved_micro == (600,)
    assert await state(counters, TEAM) == (0, 600)


async def test_reserve_refuses_negative_amounts(counters: Counters) -> None:
    with pytest.raises(ValueError):
        await counters.reserve([TEAM], -1, "r1", T0, TTL)


async def test_reserve_without_rules(counters: Counters) -> None:
    decision = await counters.reserve([], 100, "r1", T0, TTL)
    assert decision.allowed and decision.spent_micro == () and decision.reserved_micro == ()
    await counters.settle("r1", 100, T0)


async def test_an_unsettled_reservation_expires_after_its_ttl(counters: Counters) -> None:
    await counters.reserve([TEAM, KEY], 500, "crashed", T0, 10)
    assert await state(counters, KEY, T0 + 9.9) == (0, 500)
    assert not (await counters.reserve([KEY], 1, "r2", T0 + 9.9, 10)).allowed
    assert await state(counters, KEY, T0 + 10) == (0, 0)
    assert await state(counters, TEAM, T0 + 10) == (0, 0)
    assert (await counters.reserve([KEY], 500, "r3", T0 + 10, 10)).allowed


async def test_expiry_is_noticed_by_reserve_alone(counters: Counters) -> None:
    await counters.reserve([KEY], 500, "crashed", T0, 10)
    assert (await counters.reserve([KEY], 500, "r2", T0 + 11, 10)).allowed


async def test_a_late_settle_still_counts_the_spend(counters: Counters) -> None:
    await counters.reserve([KEY], 300, "slow", T0, 10)
    assert await state(counters, KEY, T0 + 12) == (0, 0)  # expired
    await counters.settle("slow", 250, T0 + 15)  # within a second TTL
    await counters.settle("slow", 250, T0 + 16)
    assert await state(counters, KEY, T0 + 16) == (250, 0)


async def test_a_late_settle_before_the_expiry_was_noticed(counters: Counters) -> None:
    await counters.reserve([KEY], 300, "slow", T0, 10)
    await counters.settle("slow", 250, T0 + 15)
    assert await state(counters, KEY, T0 + 16) == (250, 0)


async def test_release_after_expiry_ends_the_reservation(counters: Counters) -> None:
    await counters.reserve([KEY], 300, "r1", T0, 10)
    assert await state(counters, KEY, T0 + 12) == (0, 0)
    await counters.release("r1")
    await counters.settle("r1", 300, T0 + 13)
    assert await state(counters, KEY, T0 + 13) == (0, 0)


async def test_day_rolls_over_at_utc_midnight(counters: Counters) -> None:
    midnight = dt.datetime(2026, 11, 30, tzinfo=dt.UTC).timestamp()
    await counters.reserve([KEY, TEAM], 400, "r1", midnight - 0.5, TTL)
    # Settled after midnight: the spend stays in the day it was reserved in.
    await counters.settle("r1", 400, midnight + 1)
    assert await state(counters, KEY, midnight - 0.1) == (400, 0)
    assert await state(counters, KEY, midnight) == (0, 0)
    assert await state(counters, TEAM, midnight) == (400, 0)  # same month
    assert (await counters.reserve([KEY], 500, "r2", midnight + 2, TTL)).allowed


async def test_month_rolls_over_and_total_never_does(counters: Counters) -> None:
    total = BudgetRule("team:research", "total", 10_000)
    last_second = dt.datetime(2026, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp()
    await counters.reserve([TEAM, total], 1_000, "r1", last_second, TTL)
    await counters.settle("r1", 1_000, last_second)
    assert not (await counters.reserve([TEAM], 1, "r2", last_second + 0.5, TTL)).allowed
    next_year = last_second + 1
    assert (await counters.reserve([TEAM, total], 1_000, "r3", next_year, TTL)).allowed
    assert await state(counters, total, next_year) == (1_000, 1_000)


async def test_concurrent_reserves_never_exceed_a_hard_cap(counters: Counters) -> None:
    cap = BudgetRule("team:busy", "day", 1_000)
    decisions = await asyncio.gather(*(counters.reserve([cap, KEY_SOFT], 10, f"r{i}", T0, TTL)
                                       for i in range(200)))
    assert sum(d.allowed for d in decisions) == 100
    assert await state(counters, cap) == (0, 1_000)


def test_period_keys_and_resets() -> None:
    at = dt.datetime(2026, 12, 31, 23, 59, 59, tzinfo=dt.UTC).timestamp()
    assert (period_key("day", at), period_key("month", at), period_key("total", at)) == (
        "2026-12-31", "2026-12", "total")
    assert period_key("day", at + 1) == "2027-01-01" and period_key("month", at + 1) == "2027-01"
    assert period_reset("day", at) == at + 1
    assert period_reset("month", at) == at + 1
    assert period_reset("month", dt.datetime(2026, 2, 3, tzinfo=dt.UTC).timestamp()) == \
        dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp()
    assert period_reset("total", at) is None
