"""Keys and the ledger in PostgreSQL (asyncpg pool), for many replicas and a ledger at scale.

The schema is created or migrated when a store opens, under a transaction-scoped advisory lock so
replicas starting together migrate once. `schema` picks the PostgreSQL schema (search_path).
"""

from __future__ import annotations

import time
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

from modelplex.storage.base import (
    Conflict,
    KeyRecord,
    LedgerEntry,
    NotFound,
    StoreUnavailable,
    TeamRecord,
    UserRecord,
)
from modelplex.storage.migrations.postgres import MIGRATIONS
from modelplex.storage.records import (
    KEY_COLUMNS,
    LEDGER_COLUMNS,
    TEAM_COLUMNS,
    USER_COLUMNS,
    apply_key_changes,
    key_record,
    key_row,
    ledger_filter,
    ledger_row,
    team_record,
    team_row,
    user_record,
    user_row,
)

_MIGRATION_LOCK: Final = 0x6D70786D  # "mpxm": any fixed number shared by every replica
_UNAVAILABLE: Final = (OSError, TimeoutError, asyncpg.CannotConnectNowError,
                       asyncpg.ConnectionDoesNotExistError, asyncpg.TooManyConnectionsError)
_JSONB: Final = frozenset({"models", "routes", "metadata", "limits", "budgets"})


def _insert(table: str, columns: tuple[str, ...]) -> str:
    marks = ", ".join(f"${i}::jsonb" if c in _JSONB else f"${i}" for i, c in enumerate(columns, 1))
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608


def _upsert(table: str, columns: tuple[str, ...]) -> str:
    rest = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
    return f"{_insert(table, columns)} ON CONFLICT ({columns[0]}) DO UPDATE SET {rest}"


_INSERT_KEY: Final = _insert("api_key", KEY_COLUMNS)
_UPDATE_KEY: Final = _upsert("api_key", KEY_COLUMNS)
_PUT_TEAM: Final = _upsert("team", TEAM_COLUMNS)
_PUT_USER: Final = _upsert("app_user", USER_COLUMNS)
_RECORD: Final = _insert("ledger", LEDGER_COLUMNS) + " ON CONFLICT (request_id) DO NOTHING"
_ACTIVE: Final = "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $2)"


async def open_pool(dsn: str, schema: str | None = None, min_size: int = 1, max_size: int = 10,
                    timeout_s: float = 5.0) -> Any:
    """A pool whose connections use `schema`, with the schema migrated to the current version.
    `timeout_s` bounds connecting and every statement (then StoreUnavailable)."""
    settings = None if schema is None else {"search_path": schema}
    if schema is not None:
        await _create_schema(dsn, schema, timeout_s)
    try:
        pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, server_settings=settings,
                                         timeout=timeout_s, command_timeout=timeout_s)
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(f"postgres: {type(exc).__name__}: {exc}") from exc
    try:
        await _migrate(pool)
    except BaseException:
        await pool.close()
        raise
    return pool


async def _create_schema(dsn: str, schema: str, timeout_s: float) -> None:
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout_s)
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(f"postgres: {type(exc).__name__}: {exc}") from exc
    try:
        quoted = '"' + schema.replace('"', '""') + '"'
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
    finally:
        await conn.close()


async def _migrate(pool: Any) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        current = await conn.fetchval("SELECT version FROM schema_version")
        if current is not None and current > len(MIGRATIONS):
            raise RuntimeError(f"schema version {current} is newer than this modelplex ({len(MIGRATIONS)})")
        for statements in MIGRATIONS[current or 0:]:
            for statement in statements:
                await conn.execute(statement)
        if current is None:
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", len(MIGRATIONS))
        else:
            await conn.execute("UPDATE schema_version SET version = $1", len(MIGRATIONS))


class _PoolStore:
    def __init__(self, pool: Any, owns_pool: bool = True) -> None:
        self._pool = pool
        self._owns_pool = owns_pool

    async def close(self) -> None:
        if self._owns_pool:
            await self._pool.close()

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        try:
            return list(await self._pool.fetch(sql, *args))
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"postgres: {type(exc).__name__}: {exc}") from exc

    async def _execute(self, sql: str, *args: Any) -> None:
        try:
            await self._pool.execute(sql, *args)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"postgres: {type(exc).__name__}: {exc}") from exc


class PostgresKeyStore(_PoolStore):
    @classmethod
    async def open(cls, dsn: str, schema: str | None = None) -> PostgresKeyStore:
        return cls(await open_pool(dsn, schema))

    async def create_key(self, record: KeyRecord) -> None:
        try:
            await self._execute(_INSERT_KEY, *key_row(record))
        except asyncpg.UniqueViolationError:
            raise Conflict(f"key {record.id!r} or its digest exists") from None

    async def key_by_digest(self, digest: bytes) -> KeyRecord | None:
        rows = await self._fetch("SELECT * FROM api_key WHERE digest = $1", digest)
        return key_record(rows[0]) if rows else None

    async def key_by_id(self, key_id: str) -> KeyRecord | None:
        rows = await self._fetch("SELECT * FROM api_key WHERE id = $1", key_id)
        return key_record(rows[0]) if rows else None

    async def list_keys(self, team: str | None = None, user: str | None = None) -> list[KeyRecord]:
        rows = await self._fetch(
            "SELECT * FROM api_key WHERE ($1::text IS NULL OR team = $1)"
            " AND ($2::text IS NULL OR user_id = $2) ORDER BY created_at, id", team, user)
        return [key_record(r) for r in rows]

    async def update_key(self, key_id: str, **changes: Any) -> KeyRecord:
        return await self._change(key_id, lambda record: apply_key_changes(record, changes))

    async def revoke_key(self, key_id: str, at: float) -> KeyRecord:
        def revoke(record: KeyRecord) -> KeyRecord:
            when = at if record.revoked_at is None else min(record.revoked_at, at)
            return apply_key_changes(record, {"revoked_at": when})

        return await self._change(key_id, revoke)

    async def _change(self, key_id: str, change: Any) -> KeyRecord:
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow("SELECT * FROM api_key WHERE id = $1 FOR UPDATE", key_id)
                if row is None:
                    raise NotFound(key_id)
                updated: KeyRecord = change(key_record(row))
                await conn.execute(_UPDATE_KEY, *key_row(updated))
                return updated
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"postgres: {type(exc).__name__}: {exc}") from exc

    async def put_team(self, team: TeamRecord) -> None:
        await self._execute(_PUT_TEAM, *team_row(team))

    async def team(self, name: str) -> TeamRecord | None:
        rows = await self._fetch("SELECT * FROM team WHERE name = $1", name)
        return team_record(rows[0]) if rows else None

    async def list_teams(self) -> list[TeamRecord]:
        return [team_record(r) for r in await self._fetch("SELECT * FROM team ORDER BY name")]

    async def delete_team(self, name: str, now: float | None = None) -> None:
        await self._delete_owner("team", "name", "team", name, time.time() if now is None else now)

    async def put_user(self, user: UserRecord) -> None:
        await self._execute(_PUT_USER, *user_row(user))

    async def user(self, user_id: str) -> UserRecord | None:
        rows = await self._fetch("SELECT * FROM app_user WHERE id = $1", user_id)
        return user_record(rows[0]) if rows else None

    async def list_users(self, team: str | None = None) -> list[UserRecord]:
        rows = await self._fetch(
            "SELECT * FROM app_user WHERE ($1::text IS NULL OR team = $1) ORDER BY id", team)
        return [user_record(r) for r in rows]

    async def delete_user(self, user_id: str, now: float | None = None) -> None:
        await self._delete_owner("app_user", "id", "user_id", user_id, time.time() if now is None else now)

    async def _delete_owner(self, table: str, column: str, key_column: str, name: str, now: float) -> None:
        """Delete a team or user, unless keys active at `now` belong to it."""
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                found = await conn.fetchval(
                    f"SELECT 1 FROM {table} WHERE {column} = $1 FOR UPDATE", name)  # noqa: S608
                if found is None:
                    raise NotFound(name)
                active = f"SELECT 1 FROM api_key WHERE {key_column} = $1 AND {_ACTIVE} LIMIT 1"  # noqa: S608
                if await conn.fetchval(active, name, now) is not None:
                    raise Conflict(f"{name!r} has active keys")
                await conn.execute(f"DELETE FROM {table} WHERE {column} = $1", name)  # noqa: S608
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"postgres: {type(exc).__name__}: {exc}") from exc


class PostgresLedger(_PoolStore):
    @classmethod
    async def open(cls, dsn: str, schema: str | None = None) -> PostgresLedger:
        return cls(await open_pool(dsn, schema))

    async def record(self, entries: list[LedgerEntry]) -> None:
        if not entries:
            return
        try:
            # executemany pipelines the rows in one round trip per batch; a row whose request_id
            # exists is skipped, so a shipper may resend a batch.
            await self._pool.executemany(_RECORD, [ledger_row(e) for e in entries])
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"postgres: {type(exc).__name__}: {exc}") from exc

    async def total(self, *, team: str | None = None, key_id: str | None = None,
                    since: float | None = None) -> int:
        where, args = ledger_filter(team, key_id, since, "$")
        sql = "SELECT COALESCE(SUM(report_cost_micro), 0) FROM ledger" + where  # noqa: S608
        rows = await self._fetch(sql, *args)
        return int(rows[0][0])

    async def count(self) -> int:
        return int((await self._fetch("SELECT COUNT(*) FROM ledger"))[0][0])
