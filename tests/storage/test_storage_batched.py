"""admit_many and finish: the request's admission and settlement, in one round trip where possible,
with exactly the semantics of the separate calls (every backend)."""

from __future__ import annotations

from modelplex.storage.base import BudgetRule, Counters, RateRule

NOW = 1_800_000_000.0
TTL = 600.0


async def test_admit_many_takes_and_reserves(counters: Counters) -> None:
    rate = [RateRule("key:a", "rpm", 2)]
    budget = [BudgetRule("team:t", "day", 100)]
    decision, reserved = await counters.admit_many(rate, [1], budget, 40, "r1", NOW, TTL)
    assert decision.allowed and reserved is not None and reserved.allowed
    assert (await counters.budget_state(budget[0], NOW)).reserved_micro == 40


async def test_admit_many_refused_rate_reserves_nothing(counters: Counters) -> None:
    rate = [RateRule("key:b", "rpm", 1)]
    budget = [BudgetRule("team:u", "day", 100)]
    assert (await counters.admit_many(rate, [1], budget, 10, "r1", NOW, TTL))[0].allowed
    decision, reserved = await counters.admit_many(rate, [1], budget, 10, "r2", NOW, TTL)
    assert not decision.allowed and reserved is None
    state = await counters.budget_state(budget[0], NOW)
    assert state.reserved_micro == 10  # r1 only: r2's reservation was never kept


async def test_admit_many_refused_budget(counters: Counters) -> None:
    rate = [RateRule("key:c", "rpm", 10)]
    budget = [BudgetRule("team:v", "day", 5)]
    decision, reserved = await counters.admit_many(rate, [1], budget, 10, "r1", NOW, TTL)
    assert decision.allowed and reserved is not None and not reserved.allowed
    assert reserved.rejected == budget[0]


async def test_finish_settles_everything(counters: Counters) -> None:
    rate = [RateRule("key:d", "tpm", 100)]
    budget = [BudgetRule("team:w", "day", 1000)]
    assert await counters.acquire([("key:d", 1)], "lease", NOW, TTL) is None
    await counters.admit_many(rate, [10], budget, 500, "r1", NOW, TTL)
    await counters.finish(["key:d"], "lease", rate, [30], "r1", 120, NOW)
    state = await counters.budget_state(budget[0], NOW)
    assert (state.spent_micro, state.reserved_micro) == (120, 0)
    assert await counters.acquire([("key:d", 1)], "other", NOW, TTL) is None  # the lease was released
    left = await counters.take(rate, [60], NOW)
    assert left.allowed and left.remaining == (0,)  # 10 + 30 + 60 = 100


async def test_finish_with_nothing_spent_releases(counters: Counters) -> None:
    budget = [BudgetRule("team:x", "day", 1000)]
    await counters.reserve(budget, 500, "r1", NOW, TTL)
    await counters.finish([], "", [], [], "r1", 0, NOW)
    state = await counters.budget_state(budget[0], NOW)
    assert (state.spent_micro, state.reserved_micro) == (0, 0)
