"""Open the stores a gateway needs from `StorageSettings`. Backends are looked up by name in two
registries (keys + ledger, counters); the settings only decide which names to look up."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from modelplex.storage.base import Counters, KeyStore, Ledger
from modelplex.storage.memory import MemoryCounters, MemoryKeyStore, MemoryLedger


class StorageSettings(BaseModel):
    """Where keys, counters and the ledger live.

    `backend` holds keys and the ledger, and counters too unless `redis_url` is set (then counters
    are shared by every replica through Redis). `postgres_dsn`, when set, moves keys and the
    ledger to PostgreSQL.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["memory", "sqlite"] = "sqlite"
    # Limit and budget counters: "auto" is Redis when redis_url is set, else the in-process memory
    # backend for one worker and SQLite (shared by the workers of one machine) for several.
    counters: Literal["auto", "memory", "sqlite", "redis"] = "auto"
    sqlite_path: str = "modelplex.db"
    redis_url: str | None = None
    redis_prefix: str = "mpx:"
    redis_timeout_s: float = Field(0.25, gt=0)  # socket and connect timeout of every Redis call
    postgres_dsn: str | None = None
    postgres_schema: str | None = None  # a schema of its own in a shared database; created if missing
    reservation_ttl_s: float = Field(600.0, gt=0)  # TTL the gateway gives a budget reservation


@dataclass
class Stores:
    keys: KeyStore
    counters: Counters
    ledger: Ledger
    _on_close: list[Callable[[], Awaitable[None]]] = field(default_factory=list, repr=False)

    async def close(self) -> None:
        for closer in (self.keys.close, self.counters.close, self.ledger.close, *self._on_close):
            with contextlib.suppress(Exception):
                await closer()


class _Opened:
    """What one backend's opener hands back while the stores are assembled."""

    def __init__(self) -> None:
        self.keys: KeyStore | None = None
        self.ledger: Ledger | None = None
        self.counters: Counters | None = None
        self.on_close: list[Callable[[], Awaitable[None]]] = []


Opener = Callable[[StorageSettings, _Opened], Awaitable[None]]


async def _memory_records(settings: StorageSettings, out: _Opened) -> None:
    out.keys, out.ledger = MemoryKeyStore(), MemoryLedger()


async def _sqlite_records(settings: StorageSettings, out: _Opened) -> None:
    from modelplex.storage.sqlite import SqliteDatabase, SqliteKeyStore, SqliteLedger

    db = await SqliteDatabase.open(settings.sqlite_path)
    out.keys, out.ledger = SqliteKeyStore(db), SqliteLedger(db)


async def _postgres_records(settings: StorageSettings, out: _Opened) -> None:
    from modelplex.storage.postgres import PostgresKeyStore, PostgresLedger, open_pool

    assert settings.postgres_dsn is not None
    pool = await open_pool(settings.postgres_dsn, settings.postgres_schema)
    out.keys, out.ledger = PostgresKeyStore(pool, owns_pool=False), PostgresLedger(pool, owns_pool=False)
    out.on_close.append(pool.close)


async def _memory_counters(settings: StorageSettings, out: _Opened) -> None:
    out.counters = MemoryCounters()


async def _sqlite_counters(settings: StorageSettings, out: _Opened) -> None:
    from modelplex.storage.sqlite import SqliteCounters, SqliteDatabase

    out.counters = SqliteCounters(await SqliteDatabase.open(settings.sqlite_path))


async def _redis_counters(settings: StorageSettings, out: _Opened) -> None:
    from modelplex.storage.redis import RedisCounters

    assert settings.redis_url is not None
    out.counters = await RedisCounters.open(settings.redis_url, settings.redis_prefix,
                                            settings.redis_timeout_s)


# Backends by name. The optional ones import their driver only when chosen.
RECORD_BACKENDS: dict[str, Opener] = {
    "memory": _memory_records,
    "sqlite": _sqlite_records,
    "postgres": _postgres_records,
}
COUNTER_BACKENDS: dict[str, Opener] = {
    "memory": _memory_counters,
    "sqlite": _sqlite_counters,
    "redis": _redis_counters,
}


def backend_names(settings: StorageSettings, workers: int = 1) -> tuple[str, str]:
    """(keys + ledger backend, counters backend) the settings select."""
    records = "postgres" if settings.postgres_dsn else settings.backend
    counters = settings.counters
    if counters == "auto":
        if settings.redis_url:
            counters = "redis"
        else:
            counters = "sqlite" if workers > 1 and settings.backend == "sqlite" else "memory"
    return records, counters


async def open_stores(settings: StorageSettings, workers: int = 1) -> Stores:
    records, counters = backend_names(settings, workers)
    out = _Opened()
    try:
        await RECORD_BACKENDS[records](settings, out)
        await COUNTER_BACKENDS[counters](settings, out)
    except BaseException:
        for store in (out.keys, out.ledger, out.counters):
            if store is not None:
                with contextlib.suppress(Exception):
                    await store.close()
        for closer in out.on_close:
            with contextlib.suppress(Exception):
                await closer()
        raise
    assert out.keys is not None and out.ledger is not None and out.counters is not None
    return Stores(out.keys, out.counters, out.ledger, out.on_close)
