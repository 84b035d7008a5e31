"""Counters conformance, part one: sliding rate windows and concurrency leases."""

from __future__ import annotations

import asyncio
import math
import random

import pytest

from modelplex.storage.base import Counters, RateRule

T0 = 1_800_000_000.0  # a whole second: bucket boundaries fall on whole numbers


async def test_take_admits_up_to_the_limit(counters: Counters) -> None:
    rule = RateRule("key:a", "rpm", 3)
    decisions = [await counters.take([rule], [1], T0 + i * 0.1) for i in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [(2,), (1,), (0,), (0,)]
    assert decisions[3].rejected == rule


async def test_take_is_all_or_nothing(counters: Counters) -> None:
    rpm = RateRule("key:a", "rpm", 10)
    tpm = RateRule("team:t", "tpm", 100)
    assert (await counters.take([rpm, tpm], [1, 90], T0)).allowed
    refused = await counters.take([rpm, tpm], [1, 20], T0 + 1)
    assert not refused.allowed and refused.rejected == tpm
    assert refused.remaining == (9, 10)  # now, untouched by the refused take
    # Nothing was charged to the rule that had room.
    assert (await counters.take([rpm, tpm], [0, 0], T0 + 1)).remaining == (9, 10)
    assert (await counters.take([rpm], [9], T0 + 1)).allowed


async def test_rejected_is_the_first_rule_without_room(counters: Counters) -> None:
    a, b, c = RateRule("a", "rpm", 1), RateRule("b", "rpm", 1), RateRule("c", "rpm", 5)
    await counters.take([a, b], [1, 1], T0)
    decision = await counters.take([c, b, a], [1, 1, 1], T0)
    assert decision.rejected == b and decision.remaining == (5, 0, 0)


async def test_sliding_window_matches_the_model_and_never_overfills(counters: Counters) -> None:
    """Random traffic against the spec's model: admit iff the last W+1 one-second buckets plus the
    amount fit; then check no closed span of W seconds holds more than L, and that retry_after
    names the first moment the model has room."""
    window, limit = 10, 20
    rule = RateRule("key:slide", "tpm", limit, window_s=window)
    rng = random.Random(7)
    admitted: list[tuple[float, int]] = []
    now = T0 + 0.37
    for _ in range(300):
        now += rng.choice([0.0, 0.05, 0.2, 0.45, 0.9, 1.0, 2.5, 7.0])
        amount = rng.randint(1, 6)
        second = math.floor(now)
        held = sorted((math.floor(t), a) for t, a in admitted if math.floor(t) >= second - window)
        total = sum(a for _, a in held)
        decision = await counters.take([rule], [amount], now)
        assert decision.allowed == (total + amount <= limit), (now, total, amount)
        if decision.allowed:
            admitted.append((now, amount))
            assert decision.remaining == (limit - total - amount,)
        else:
            assert decision.remaining == (limit - total,)
            need, room = total + amount - limit, second
            for bucket, a in held:
                need, room = need - a, bucket
                if need <= 0:
                    break
            assert decision.retry_after == pytest.approx(room + window + 1 - now)
    assert len(admitted) > 100
    for start, _ in admitted:
        in_span = sum(a for t, a in admitted if start <= t <= start + window)
        assert in_span <= limit


async def test_retry_after_is_when_the_take_fits(counters: Counters) -> None:
    rule = RateRule("key:r", "rpm", 5, window_s=60)
    await counters.take([rule], [2], T0 + 0.5)
    await counters.take([rule], [3], T0 + 10.25)
    refused = await counters.take([rule], [3], T0 + 30.5)
    # 3 more need the 2 taken at T0 + 0.5 and the 3 at T0 + 10.25 gone: bucket T0 + 10 leaves the
    # window when the clock reaches T0 + 71.
    assert not refused.allowed and refused.retry_after == pytest.approx(71 - 30.5)
    small = await counters.take([rule], [2], T0 + 30.5)
    assert not small.allowed and small.retry_after == pytest.approx(61 - 30.5)
    assert not (await counters.take([rule], [2], T0 + 60.99)).allowed
    assert (await counters.take([rule], [2], T0 + 61)).allowed


async def test_retry_after_is_infinite_when_the_amount_can_never_fit(counters: Counters) -> None:
    decision = await counters.take([RateRule("key:r", "tpm", 100)], [101], T0)
    assert not decision.allowed and decision.retry_after == math.inf


async def test_add_charges_without_a_check(counters: Counters) -> None:
    rule = RateRule("key:a", "tpm", 100)
    await counters.add([rule], [150], T0)
    decision = await counters.take([rule], [1], T0 + 1)
    assert not decision.allowed and decision.remaining == (0,)
    assert (await counters.take([rule], [1], T0 + 61)).allowed


async def test_windows_of_one_scope_count_apart(counters: Counters) -> None:
    per_minute = RateRule("key:a", "rpm", 10, window_s=60)
    per_second = RateRule("key:a", "rpm", 2, window_s=1)
    tokens = RateRule("key:a", "tpm", 10, window_s=60)
    assert (await counters.take([per_minute, per_second, tokens], [1, 1, 5], T0)).allowed
    assert (await counters.take([per_minute, per_second, tokens], [1, 1, 5], T0)).allowed
    refused = await counters.take([per_minute, per_second], [1, 1], T0 + 1)
    assert refused.rejected == per_second and refused.retry_after == pytest.approx(1.0)
    assert (await counters.take([per_minute, per_second], [1, 1], T0 + 2)).remaining == (7, 1)


async def test_a_window_idle_for_long_starts_empty(counters: Counters) -> None:
    minute = RateRule("key:a", "rpm", 10)
    hour = RateRule("key:a", "rpm", 10, window_s=3600)
    assert (await counters.take([minute, hour], [10, 5], T0)).allowed
    assert (await counters.take([minute, hour], [10, 5], T0 + 500)).allowed  # the minute window emptied
    assert not (await counters.take([hour], [1], T0 + 3600)).allowed
    assert (await counters.take([hour], [5], T0 + 3601)).allowed


async def test_a_clock_behind_the_others_is_still_counted(counters: Counters) -> None:
    rule = RateRule("key:skew", "rpm", 10)
    await counters.take([rule], [4], T0 + 10)
    await counters.take([rule], [3], T0 + 5)  # a worker whose clock is 5 s behind
    assert (await counters.take([rule], [0], T0 + 10)).remaining == (3,)
    assert (await counters.take([rule], [0], T0 + 66)).remaining == (6,)  # T0 + 5 has left
    assert (await counters.take([rule], [0], T0 + 71)).remaining == (10,)


async def test_a_new_limit_keeps_the_count(counters: Counters) -> None:
    await counters.take([RateRule("key:a", "rpm", 10)], [8], T0)
    assert not (await counters.take([RateRule("key:a", "rpm", 5)], [1], T0)).allowed
    assert (await counters.take([RateRule("key:a", "rpm", 20)], [12], T0)).allowed


async def test_concurrent_takes_never_exceed_the_limit(counters: Counters) -> None:
    rule = RateRule("key:busy", "rpm", 50)
    decisions = await asyncio.gather(*(counters.take([rule], [1], T0 + i / 1000) for i in range(200)))
    assert sum(d.allowed for d in decisions) == 50


# --- concurrency leases -------------------------------------------------------------------------


async def test_acquire_up_to_the_limit_and_release(counters: Counters) -> None:
    assert await counters.acquire([("key:a", 2)], "l1", T0, 30) is None
    assert await counters.acquire([("key:a", 2)], "l2", T0, 30) is None
    assert await counters.acquire([("key:a", 2)], "l3", T0, 30) == "key:a"
    await counters.release_lease(["key:a"], "l1")
    await counters.release_lease(["key:a"], "l1")  # idempotent
    await counters.release_lease(["key:a"], "unknown")
    assert await counters.acquire([("key:a", 2)], "l3", T0, 30) is None
    assert await counters.acquire([("key:a", 2)], "l4", T0, 30) == "key:a"


async def test_acquire_is_all_or_nothing(counters: Counters) -> None:
    assert await counters.acquire([("team:t", 1)], "x", T0, 30) is None
    assert await counters.acquire([("key:a", 1), ("team:t", 1)], "y", T0, 30) == "team:t"
    # key:a was not taken by the refused acquire.
    assert await counters.acquire([("key:a", 1)], "z", T0, 30) is None


async def test_acquire_again_renews_without_taking_a_second_slot(counters: Counters) -> None:
    assert await counters.acquire([("key:a", 1)], "l1", T0, 10) is None
    assert await counters.acquire([("key:a", 1)], "l1", T0 + 8, 10) is None
    assert await counters.acquire([("key:a", 1)], "l2", T0 + 12, 10) == "key:a"  # renewed to T0 + 18
    assert await counters.acquire([("key:a", 1)], "l2", T0 + 18, 10) is None


async def test_leases_expire(counters: Counters) -> None:
    assert await counters.acquire([("key:a", 1)], "crashed", T0, 5) is None
    assert await counters.acquire([("key:a", 1)], "next", T0 + 4.9, 5) == "key:a"
    assert await counters.acquire([("key:a", 1)], "next", T0 + 5, 5) is None


async def test_a_zero_limit_admits_nobody(counters: Counters) -> None:
    assert await counters.acquire([("key:a", 0)], "l1", T0, 5) == "key:a"


async def test_concurrent_acquires_never_exceed_the_limit(counters: Counters) -> None:
    results = await asyncio.gather(*(counters.acquire([("key:a", 10), ("team:t", 15)], f"l{i}", T0, 30)
                                     for i in range(100)))
    assert results.count(None) == 10
