"""Several OS processes against one SQLite file or one Redis: the caps hold across processes."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest
import storage_procs

from modelplex.storage.base import BudgetRule

PROCESSES = 3


def run_workers(backend: str, target: str, prefix: str, job: str, n: int) -> list[int]:
    ctx = multiprocessing.get_context("spawn")  # no forked event loops or SQLite handles
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [ctx.Process(target=storage_procs.work,
                         args=(backend, target, prefix, job, n, w, barrier, results))
             for w in range(PROCESSES)]
    for p in procs:
        p.start()
    counts = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=10)
        assert p.exitcode == 0
    return counts


@pytest.fixture(params=["sqlite", "redis"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, str]:
    """(backend, file or URL, key prefix) that several processes open at once."""
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "shared.db"), ""
    return "redis", request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")


async def test_reserves_from_several_processes_respect_one_cap(shared: tuple[str, str, str]) -> None:
    backend, target, prefix = shared
    counts = run_workers(backend, target, prefix, "reserve", 50)
    assert sum(counts) == 100  # 1,000 / 10: exactly as many as fit, from 150 attempts
    store = await storage_procs.open_counters(backend, target, prefix)
    state = await store.budget_state(BudgetRule("team:shared", "total", 1_000), time.time())
    await store.close()
    assert (state.spent_micro, state.reserved_micro) == (0, 1_000)


def test_takes_from_several_processes_respect_one_rpm(shared: tuple[str, str, str]) -> None:
    backend, target, prefix = shared
    counts = run_workers(backend, target, prefix, "take", 400)
    assert sum(counts) == 100
