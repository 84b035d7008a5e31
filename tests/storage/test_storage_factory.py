"""Opening stores from settings, schema versions, and what a dead or slow server looks like."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from storage_servers import POSTGRES_DSN

from modelplex.storage.base import BudgetRule, RateRule, StoreUnavailable
from modelplex.storage.factory import (
    COUNTER_BACKENDS,
    RECORD_BACKENDS,
    StorageSettings,
    backend_names,
    open_stores,
)
from modelplex.storage.memory import MemoryCounters, MemoryKeyStore, MemoryLedger
from modelplex.storage.migrations.sqlite import MIGRATIONS
from modelplex.storage.sqlite import SqliteCounters, SqliteDatabase, SqliteKeyStore, SqliteLedger

NOW = 1_800_000_000.0


def test_settings_are_strict_and_frozen() -> None:
    settings = StorageSettings()
    assert (settings.backend, settings.sqlite_path, settings.redis_prefix, settings.redis_timeout_s) == (
        "sqlite", "modelplex.db", "mpx:", 0.25)
    assert settings.reservation_ttl_s == 600
    with pytest.raises(ValidationError):
        StorageSettings(backend="mongo")
    with pytest.raises(ValidationError):
        StorageSettings(redis_host="x")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        settings.backend = "memory"  # type: ignore[misc]


def test_settings_pick_backends_by_name() -> None:
    assert backend_names(StorageSettings(backend="memory")) == ("memory", "memory")
    # Counters: in-process for one worker, SQLite shared by the workers of one machine, else Redis.
    assert backend_names(StorageSettings()) == ("sqlite", "memory")
    assert backend_names(StorageSettings(), workers=2) == ("sqlite", "sqlite")
    assert backend_names(StorageSettings(counters="sqlite")) == ("sqlite", "sqlite")
    assert backend_names(StorageSettings(redis_url="redis://r")) == ("sqlite", "redis")
    assert backend_names(StorageSettings(postgres_dsn="postgresql://p", redis_url="redis://r")) == (
        "postgres", "redis")
    assert set(RECORD_BACKENDS) == {"memory", "sqlite", "postgres"}
    assert set(COUNTER_BACKENDS) == {"memory", "sqlite", "redis"}


async def test_open_memory_stores() -> None:
    stores = await open_stores(StorageSettings(backend="memory"))
    assert isinstance(stores.keys, MemoryKeyStore) and isinstance(stores.counters, MemoryCounters)
    assert isinstance(stores.ledger, MemoryLedger)
    await stores.close()


async def test_open_sqlite_stores(tmp_path: Path) -> None:
    stores = await open_stores(StorageSettings(sqlite_path=str(tmp_path / "gw.db")), workers=2)
    assert isinstance(stores.keys, SqliteKeyStore) and isinstance(stores.ledger, SqliteLedger)
    assert isinstance(stores.counters, SqliteCounters)
    assert (await stores.counters.take([RateRule("k", "rpm", 1)], [1], NOW)).allowed
    assert await stores.ledger.count() == 0
    await stores.close()


async def test_open_redis_and_postgres_stores(redis_url: str, redis_prefix: str, pg_schema: str) -> None:
    from modelplex.storage.postgres import PostgresKeyStore, PostgresLedger
    from modelplex.storage.redis import RedisCounters

    dsn = f"{POSTGRES_DSN}?search_path={pg_schema}"
    settings = StorageSettings(redis_url=redis_url, redis_prefix=redis_prefix, postgres_dsn=dsn)
    stores = await open_stores(settings)
    assert isinstance(stores.keys, PostgresKeyStore) and isinstance(stores.ledger, PostgresLedger)
    assert isinstance(stores.counters, RedisCounters)
    assert (await stores.counters.reserve([BudgetRule("k", "day", 5)], 5, "r", NOW, 60)).allowed
    assert await stores.keys.list_teams() == []
    await stores.close()


async def test_sqlite_schema_is_versioned(tmp_path: Path) -> None:
    path = str(tmp_path / "v.db")
    db = await SqliteDatabase.open(path)
    store = SqliteLedger(db)
    await store.close()
    db = await SqliteDatabase.open(path)  # opening again migrates nothing
    await SqliteLedger(db).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(len(MIGRATIONS),)]
        conn.execute("UPDATE schema_version SET version = 999")
    with pytest.raises(RuntimeError, match="newer"):
        await SqliteDatabase.open(path)


async def test_a_locked_sqlite_file_is_unavailable(tmp_path: Path) -> None:
    path = str(tmp_path / "locked.db")
    store = SqliteCounters(await SqliteDatabase.open(path, busy_timeout_s=0.05))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable):
            await store.take([RateRule("k", "rpm", 1)], [1], NOW)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert (await store.take([RateRule("k", "rpm", 1)], [1], NOW)).allowed
    await store.close()


async def test_redis_refusing_connections_is_unavailable() -> None:
    from modelplex.storage.redis import RedisCounters

    store = await RedisCounters.open("redis://127.0.0.1:1/0")  # nothing listens on port 1
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.take([RateRule("k", "rpm", 1)], [1], NOW)
    with pytest.raises(StoreUnavailable):
        await store.reserve([BudgetRule("k", "day", 1)], 1, "r", NOW, 60)
    assert time.monotonic() - started < 1.0
    await store.close()


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts and never answers: a Redis that hangs."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_hanging_redis_times_out_quickly(silent_server: int) -> None:
    from modelplex.storage.redis import RedisCounters

    store = await RedisCounters.open(f"redis://127.0.0.1:{silent_server}/0", timeout_s=0.2)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.take([RateRule("k", "rpm", 1)], [1], NOW)
    assert 0.15 < time.monotonic() - started < 1.0
    await store.close()
