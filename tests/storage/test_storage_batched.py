"""admit_many and finish: the request's admission and settlement, in one round trip where possible,
with exactly the semantics of the separate calls (every backend)."""

from __future__ import annotations

import asyncio
from typing import Any

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


async def test_redis_lost_scripts_run_once(redis_url: str, redis_prefix: str) -> None:
    """After SCRIPT FLUSH (what a Redis restart does) a pipeline's calls whose script is gone did
    not run, the others did: only the missing ones run again, so nothing is charged twice."""
    import redis.asyncio

    from modelplex.storage.redis import RedisCounters

    counters = await RedisCounters.open(redis_url, prefix=redis_prefix, timeout_s=2.0)
    admin = redis.asyncio.Redis.from_url(redis_url)
    try:
        rate = [RateRule("key:e", "tpm", 100)]
        budget = [BudgetRule("team:y", "day", 1000)]
        assert await counters.acquire([("key:e", 1)], "lease", NOW, TTL) is None
        await counters.take(rate, [1], NOW)  # TAKE is loaded; the next pipeline mixes it with others
        await admin.script_flush()
        await counters.reserve(budget, 500, "r1", NOW, TTL)
        await admin.script_flush()
        await counters.take(rate, [1], NOW)  # loads TAKE again; RELEASE_LEASE and FINISH stay lost
        await counters.finish(["key:e"], "lease", rate, [30], "r1", 120, NOW)
        state = await counters.budget_state(budget[0], NOW)
        assert (state.spent_micro, state.reserved_micro) == (120, 0)
        assert await counters.acquire([("key:e", 1)], "other", NOW, TTL) is None  # the lease was released
        left = await counters.take(rate, [68], NOW)
        assert left.allowed and left.remaining == (0,)  # 1 + 1 + 30 + 68 = 100: the 30 counted once
        await admin.script_flush()
        decision, reserved = await counters.admit_many(rate, [0], budget, 10, "r2", NOW, TTL)
        assert decision.allowed and reserved is not None and reserved.allowed
    finally:
        await counters.close()
        await admin.aclose()


async def test_redis_concurrent_calls_share_a_round_trip(redis_url: str, redis_prefix: str) -> None:
    """Calls made in one event-loop turn go out in one pipeline; each caller gets its own replies."""
    from modelplex.storage.redis import RedisCounters

    counters = await RedisCounters.open(redis_url, prefix=redis_prefix, timeout_s=2.0)
    sent: list[int] = []
    execute = counters._execute

    async def counting(batch: Any) -> None:
        sent.append(len(batch.calls))
        await execute(batch)

    counters._execute = counting  # type: ignore[method-assign]
    try:
        await counters.take([RateRule("key:warm", "rpm", 10)], [1], NOW)  # load the script
        rules = [[RateRule(f"key:c{i}", "rpm", i + 1)] for i in range(20)]
        decisions = await asyncio.gather(*(counters.take(r, [1], NOW) for r in rules))
        assert sent == [1, 20]
        assert [d.remaining for d in decisions] == [(i,) for i in range(20)]
        assert all(d.allowed for d in decisions)
        refused = await asyncio.gather(*(counters.take(r, [1], NOW) for r in rules[:2]))
        assert sent == [1, 20, 2] and [d.allowed for d in refused] == [False, True]
    finally:
        await counters.close()
