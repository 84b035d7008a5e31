"""Fixtures of the storage conformance suite: every backend of an interface behind one fixture.

Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432, database `test`, user `postgres`) are real
servers; override with MODELPLEX_TEST_REDIS_URL / MODELPLEX_TEST_POSTGRES_DSN. A test that needs
an unreachable server is skipped, or fails when CI=true.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from storage_servers import POSTGRES_DSN, REDIS_URL, unavailable

from modelplex.storage.base import Counters, KeyStore, Ledger
from modelplex.storage.memory import MemoryCounters, MemoryKeyStore, MemoryLedger
from modelplex.storage.sqlite import SqliteCounters, SqliteDatabase, SqliteKeyStore, SqliteLedger

TABLES = ("api_key", "team", "app_user", "ledger")


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis unreachable at {REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A prefix no other test uses; every key under it is deleted afterwards."""
    import redis.asyncio

    prefix = f"mpx-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.asyncio.Redis.from_url(redis_url)
    keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture(scope="session")
async def pg_schema() -> AsyncIterator[str]:
    """A schema created for this session and dropped at its end."""
    import asyncpg  # type: ignore[import-untyped]

    schema = f"mpx_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncio.wait_for(asyncpg.connect(POSTGRES_DSN), 5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        unavailable(f"PostgreSQL unreachable at {POSTGRES_DSN}: {exc}")
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()


@pytest.fixture(scope="session")
async def pg_pool(pg_schema: str) -> AsyncIterator[Any]:
    """A pool on the session's schema, migrated."""
    from modelplex.storage.postgres import open_pool

    pool = await open_pool(POSTGRES_DSN, pg_schema, min_size=1, max_size=4)
    yield pool
    await pool.close()


async def _postgres(pg_pool: Any) -> Any:
    await pg_pool.execute(f"TRUNCATE {', '.join(TABLES)}")
    return pg_pool


# One fixture per backend; the parametrized fixtures below pick one by name, so a test of the
# memory backend never needs a server.


@pytest.fixture
async def counters_memory() -> AsyncIterator[Counters]:
    store = MemoryCounters()
    yield store
    await store.close()


@pytest.fixture
async def counters_sqlite(tmp_path: Path) -> AsyncIterator[Counters]:
    store = await SqliteCounters.open(str(tmp_path / "counters.db"))
    yield store
    await store.close()


@pytest.fixture
async def counters_redis(redis_url: str, redis_prefix: str) -> AsyncIterator[Counters]:
    from modelplex.storage.redis import RedisCounters

    # A generous timeout: a cold pool opening dozens of connections at once on a loaded test
    # machine can take longer than the production default (its behaviour is tested apart).
    store = await RedisCounters.open(redis_url, prefix=redis_prefix, timeout_s=2.0)
    yield store
    await store.close()


@pytest.fixture
async def keystore_memory() -> AsyncIterator[KeyStore]:
    yield MemoryKeyStore()


@pytest.fixture
async def keystore_sqlite(tmp_path: Path) -> AsyncIterator[KeyStore]:
    store = await SqliteKeyStore.open(str(tmp_path / "keys.db"))
    yield store
    await store.close()


@pytest.fixture
async def keystore_postgres(pg_pool: Any) -> AsyncIterator[KeyStore]:
    from modelplex.storage.postgres import PostgresKeyStore

    store = PostgresKeyStore(await _postgres(pg_pool), owns_pool=False)
    yield store
    await store.close()


@pytest.fixture
async def ledger_memory() -> AsyncIterator[Ledger]:
    yield MemoryLedger()


@pytest.fixture
async def ledger_sqlite(tmp_path: Path) -> AsyncIterator[Ledger]:
    store = SqliteLedger(await SqliteDatabase.open(str(tmp_path / "ledger.db")))
    yield store
    await store.close()


@pytest.fixture
async def ledger_postgres(pg_pool: Any) -> AsyncIterator[Ledger]:
    from modelplex.storage.postgres import PostgresLedger

    store = PostgresLedger(await _postgres(pg_pool), owns_pool=False)
    yield store
    await store.close()


@pytest.fixture(params=["memory", "sqlite", "redis"])
def counters(request: pytest.FixtureRequest) -> Counters:
    store: Counters = request.getfixturevalue(f"counters_{request.param}")
    return store


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def keystore(request: pytest.FixtureRequest) -> KeyStore:
    store: KeyStore = request.getfixturevalue(f"keystore_{request.param}")
    return store


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest) -> Ledger:
    store: Ledger = request.getfixturevalue(f"ledger_{request.param}")
    return store
