"""Workers for the multi-process tests: each runs in its own OS process (spawned), opens its own
store on the shared file or server, waits for its siblings, then hammers one cap."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from modelplex.storage.base import BudgetRule, Counters, RateRule


async def open_counters(backend: str, target: str, prefix: str) -> Counters:
    if backend == "sqlite":
        from modelplex.storage.sqlite import SqliteCounters

        return await SqliteCounters.open(target)
    from modelplex.storage.redis import RedisCounters

    return await RedisCounters.open(target, prefix=prefix, timeout_s=5.0)


async def _run(backend: str, target: str, prefix: str, job: str, n: int, worker: int, barrier: Any) -> int:
    store = await open_counters(backend, target, prefix)
    try:
        barrier.wait()
        if job == "reserve":
            cap = BudgetRule("team:shared", "total", 1_000)
            reserved = await asyncio.gather(*(
                store.reserve([cap], 10, f"w{worker}-{i}", time.time(), 600) for i in range(n)))
            return sum(d.allowed for d in reserved)
        rpm = RateRule("key:shared", "rpm", 100)
        taken = await asyncio.gather(*(store.take([rpm], [1], time.time()) for _ in range(n)))
        return sum(d.allowed for d in taken)
    finally:
        await store.close()


def work(backend: str, target: str, prefix: str, job: str, n: int, worker: int, barrier: Any,
         results: Any) -> None:
    results.put(asyncio.run(_run(backend, target, prefix, job, n, worker, barrier)))
