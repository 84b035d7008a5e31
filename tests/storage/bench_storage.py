"""Per-operation latency of the storage backends (a script, not a test):

    .venv/bin/python tests/storage/bench_storage.py [--n 5000] [--redis URL] [--postgres DSN]

Each operation runs sequentially, as one request would call it, with the wall clock as `now`;
prints mean and p99 in microseconds. Redis and PostgreSQL rows are skipped when unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from modelplex.storage.base import BudgetRule, Counters, KeyRecord, KeyStore, LedgerEntry, RateRule
from modelplex.storage.memory import MemoryCounters, MemoryKeyStore
from modelplex.storage.sqlite import SqliteCounters, SqliteKeyStore

RATE = [RateRule("key:bench", "rpm", 10**9), RateRule("team:bench", "tpm", 10**12)]
BUDGET = [BudgetRule("key:bench", "day", 10**15), BudgetRule("team:bench", "month", 10**15),
          BudgetRule("team:bench", "month", 10**14, hard=False)]


async def timed(n: int, op: Callable[[int], Awaitable[Any]]) -> tuple[float, float]:
    for i in range(min(200, n)):  # warm up: connections, prepared statements, caches
        await op(-1 - i)
    samples = []
    for i in range(n):
        start = time.perf_counter_ns()
        await op(i)
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return statistics.fmean(samples), samples[int(len(samples) * 0.99)]


async def bench_counters(name: str, store: Counters, n: int) -> None:
    run = uuid.uuid4().hex[:8]
    ops: dict[str, Callable[[int], Awaitable[Any]]] = {
        "take (2 rules)": lambda i: store.take(RATE, [1, 500], time.time()),
        "add (2 rules)": lambda i: store.add(RATE, [0, 300], time.time()),
        "reserve (3 rules)": lambda i: store.reserve(BUDGET, 1_000, f"{run}-{i}", time.time(), 600),
        "settle": lambda i: store.settle(f"{run}-{i}", 800, time.time()),
        "budget_state": lambda i: store.budget_state(BUDGET[0], time.time()),
    }
    for op, fn in ops.items():
        mean, p99 = await timed(n, fn)
        print(f"{name:9} {op:20} mean {mean:8.1f} µs   p99 {p99:8.1f} µs")
    # Leases as a request uses them: acquire, then release, with 20 other requests in flight.
    scopes = [("key:bench", 1000), ("team:bench", 1000)]
    for j in range(20):
        await store.acquire(scopes, f"{run}-busy-{j}", time.time(), 600)
    acquired, released = [], []
    for i in range(n):
        start = time.perf_counter_ns()
        await store.acquire(scopes, f"{run}-l{i}", time.time(), 600)
        middle = time.perf_counter_ns()
        await store.release_lease([s for s, _ in scopes], f"{run}-l{i}")
        acquired.append((middle - start) / 1000)
        released.append((time.perf_counter_ns() - middle) / 1000)
    for op, samples in (("acquire (2 scopes)", acquired), ("release_lease", released)):
        samples.sort()
        mean, p99 = statistics.fmean(samples), samples[int(len(samples) * 0.99)]
        print(f"{name:9} {op:20} mean {mean:8.1f} µs   p99 {p99:8.1f} µs")
    await store.close()


async def bench_keys(name: str, store: KeyStore, ledger: Any, n: int) -> None:
    digests = [hashlib.sha256(f"{name}-{i}".encode()).digest() for i in range(100)]
    for i, digest in enumerate(digests):
        await store.create_key(KeyRecord(id=f"key_{uuid.uuid4().hex}", name=str(i), digest=digest, team="t"))
    mean, p99 = await timed(n, lambda i: store.key_by_digest(digests[i % 100]))
    print(f"{name:9} {'key_by_digest':20} mean {mean:8.1f} µs   p99 {p99:8.1f} µs")
    if ledger is not None:
        batches = max(10, n // 100)
        mean, p99 = await timed(batches, lambda i: ledger.record([
            LedgerEntry(uuid.uuid4().hex, time.time(), "k", "t", None, "r", "m", "d", 5, "USD", 5)
            for _ in range(100)]))
        print(f"{name:9} {'ledger.record(100)':20} mean {mean:8.1f} µs   p99 {p99:8.1f} µs")
    await store.close()
    if ledger is not None:
        await ledger.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mpx-bench-"))

    await bench_counters("memory", MemoryCounters(), args.n * 4)
    await bench_counters("sqlite", await SqliteCounters.open(str(tmp / "c.db")), args.n)
    try:
        from modelplex.storage.redis import RedisCounters

        prefix = f"mpx-bench:{uuid.uuid4().hex[:8]}:"
        await bench_counters("redis", await RedisCounters.open(args.redis, prefix=prefix), args.n)
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(args.redis)
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    except Exception as exc:
        print(f"redis     skipped: {exc}")

    await bench_keys("memory", MemoryKeyStore(), None, args.n * 4)
    from modelplex.storage.sqlite import SqliteDatabase, SqliteLedger

    db = await SqliteDatabase.open(str(tmp / "k.db"))
    await bench_keys("sqlite", SqliteKeyStore(db), SqliteLedger(db), args.n)
    try:
        import asyncpg  # type: ignore[import-untyped]

        from modelplex.storage.postgres import PostgresKeyStore, PostgresLedger, open_pool

        schema = f"mpx_bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(args.postgres)
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            pool = await open_pool(args.postgres, schema)
            await bench_keys("postgres", PostgresKeyStore(pool, owns_pool=False),
                             PostgresLedger(pool, owns_pool=False), args.n)
            await pool.close()
        finally:
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await admin.close()
    except (OSError, ImportError) as exc:
        print(f"postgres  skipped: {exc}")


if __name__ == "__main__":
    asyncio.run(main())
