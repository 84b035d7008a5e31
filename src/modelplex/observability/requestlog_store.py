"""Where request-log rows end up: a table `request_log` (plus `request_feedback`) in SQLite (the
default, one file) or PostgreSQL (asyncpg, for scale).

Inserts are idempotent by request id (`ON CONFLICT DO NOTHING`), so shipping a batch twice after a
crash stores each row once. Every failure is one of two kinds, and the shipper acts on the kind:
`RowRejected` (the data itself: SQLSTATE classes 22/23, a SQLite integrity or type error) — retry
row by row and dead-letter the rows that still fail; `StoreUnavailable` (anything else: down,
locked, timed out) — back off and retry the whole batch later.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, Protocol, TypeVar

import msgspec

from modelplex.observability.requestlog_row import BOOL_COLUMNS, COLUMNS, JSON_COLUMNS, Feedback, Row
from modelplex.server import sched
from modelplex.storage.base import StoreUnavailable
from modelplex.storage.sqlite import enable_wal

T = TypeVar("T")

INT_COLUMNS: Final = frozenset({
    "status", "attempt_count", "input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
    "reasoning_tokens", "cost_micro", "native_cost_micro", "waste_micro", "counterfactual_micro",
})
FLOAT_COLUMNS: Final = frozenset({"ts", "latency_ms", "ttft_ms", "upstream_ms", "overhead_ms", "failover_ms"})
_TYPES: Final = {  # kind -> (SQLite, PostgreSQL)
    "text": ("TEXT", "text"), "int": ("INTEGER", "bigint"), "float": ("REAL", "double precision"),
    "bool": ("INTEGER", "boolean"), "json": ("TEXT", "jsonb"),
}
INDEXED: Final = ("ts", "route", "provider", "team", "fingerprint")
SCHEMA_VERSION: Final = 1


class RowRejected(Exception):
    """The store refused the data of a row (it would refuse it again)."""


class LogStore(Protocol):
    async def open(self) -> None:
        """Connect and create the tables if missing. Raises StoreUnavailable."""
        ...

    async def insert(self, rows: Sequence[Row]) -> None:
        """All rows in one transaction; a request id already stored is skipped."""
        ...

    async def put_feedback(self, items: Sequence[Feedback]) -> None: ...

    async def delete_before(self, ts: float) -> int:
        """Retention: delete rows (and feedback) older than `ts`; returns how many rows."""
        ...

    async def close(self) -> None: ...


def column_kind(name: str) -> str:
    if name in JSON_COLUMNS:
        return "json"
    if name in BOOL_COLUMNS:
        return "bool"
    if name in INT_COLUMNS:
        return "int"
    if name in FLOAT_COLUMNS:
        return "float"
    return "text"


def create_table(dialect: int) -> list[str]:
    """DDL of both tables; dialect 0 is SQLite, 1 PostgreSQL."""
    cols = ", ".join(
        f"{c} {_TYPES[column_kind(c)][dialect]}"
        + (" PRIMARY KEY NOT NULL" if c == "request_id" else " NOT NULL" if c == "ts" else "")
        for c in COLUMNS
    )
    strict = " STRICT" if dialect == 0 else ""
    out = [f"CREATE TABLE IF NOT EXISTS request_log ({cols}){strict}"]
    out += [f"CREATE INDEX IF NOT EXISTS request_log_{c} ON request_log ({c})" for c in INDEXED]
    real = _TYPES["float"][dialect]
    out.append(
        f"CREATE TABLE IF NOT EXISTS request_feedback (request_id TEXT PRIMARY KEY NOT NULL, score {real} "
        f"NOT NULL, ts {real} NOT NULL, key_name TEXT){strict}"
    )
    return out


_encode_json = msgspec.json.Encoder().encode


def _converter(name: str, native_bool: bool) -> Callable[[Any], Any]:
    kind = column_kind(name)
    if kind == "json":
        return lambda v: _encode_json(v).decode()
    if kind == "bool" and not native_bool:
        return int
    return lambda v: v


def row_values(native_bool: bool) -> Callable[[Row], tuple[Any, ...]]:
    """Row -> the tuple of column values an INSERT binds (JSON columns as text)."""
    convert = [(c, _converter(c, native_bool)) for c in COLUMNS]

    def values(row: Row) -> tuple[Any, ...]:
        return tuple(f(getattr(row, c)) for c, f in convert)

    return values


# --- SQLite -------------------------------------------------------------------------------------

_SQLITE_ROW: Final = f"({', '.join('?' for _ in COLUMNS)})"


@functools.lru_cache(maxsize=8)
def _sqlite_insert(rows: int) -> str:
    """INSERT of `rows` rows in one statement."""
    return (f"INSERT INTO request_log ({', '.join(COLUMNS)}) VALUES "  # noqa: S608
            f"{', '.join(_SQLITE_ROW for _ in range(rows))} ON CONFLICT (request_id) DO NOTHING")


_MAX_ROWS_PER_STATEMENT: Final = 64


def _insert_rows(conn: sqlite3.Connection, values: Sequence[tuple[Any, ...]]) -> None:
    """A batch in few statements. Not executemany: it runs one statement per row and releases the
    GIL around each, and a writer thread next to a busy event loop then waits for the GIL once per
    row (a 500-row batch took 300+ ms instead of 10 ms at saturation, and the log fell behind).
    Statements hold a power-of-two number of rows (at most 64, and within SQLite's bound-parameter
    limit), so at most seven distinct statements are ever prepared and cached."""
    cap = min(_MAX_ROWS_PER_STATEMENT, conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(COLUMNS))
    cap = 1 << max(cap, 1).bit_length() - 1  # a power of two
    start = 0
    while start < len(values):
        size = min(cap, 1 << (len(values) - start).bit_length() - 1)
        chunk = values[start:start + size]
        conn.execute(_sqlite_insert(size), [v for row in chunk for v in row])
        start += size
_SQLITE_FEEDBACK: Final = (
    "INSERT INTO request_feedback (request_id, score, ts, key_name) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (request_id) DO UPDATE SET score = excluded.score, ts = excluded.ts, "
    "key_name = excluded.key_name"
)
_SQLITE_REJECTED: Final = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.InterfaceError,
                           sqlite3.ProgrammingError, OverflowError, TypeError, ValueError)


class SqliteLogStore:
    """One connection on its own thread, WAL mode: several worker processes share the file."""

    def __init__(self, path: str, busy_timeout_s: float = 5.0) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelplex-requestlog",
                                            initializer=sched.helper_thread)
        self._conn: sqlite3.Connection | None = None
        self._values = row_values(native_bool=False)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._conn is None:
                self._conn = self._connect()
            return fn(self._conn)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, call)
        except _SQLITE_REJECTED as exc:
            raise RowRejected(f"sqlite: {type(exc).__name__}: {exc}") from exc
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailable(f"sqlite: {type(exc).__name__}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None,
                               check_same_thread=False)
        enable_wal(conn, self._busy_timeout_s)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in create_table(0):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            conn.close()
            raise
        return conn

    async def open(self) -> None:
        await self._run(lambda conn: None)

    async def insert(self, rows: Sequence[Row]) -> None:
        def run(conn: sqlite3.Connection) -> None:
            # Rows become column values on the writer thread: for a batch that is milliseconds of
            # work the event loop does not wait for. A value that cannot convert is a TypeError or
            # ValueError, which _run reports as RowRejected.
            values = [self._values(r) for r in rows]
            conn.execute("BEGIN IMMEDIATE")
            try:
                _insert_rows(conn, values)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        await self._run(run)

    async def put_feedback(self, items: Sequence[Feedback]) -> None:
        values = [(f.request_id, f.score, f.ts, f.key_name) for f in items]

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_SQLITE_FEEDBACK, values)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        await self._run(run)

    async def delete_before(self, ts: float) -> int:
        def run(conn: sqlite3.Connection) -> int:
            n = conn.execute("DELETE FROM request_log WHERE ts < ?", (ts,)).rowcount
            conn.execute("DELETE FROM request_feedback WHERE ts < ?", (ts,))
            return int(n)

        return await self._run(run)

    async def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=False)


# --- PostgreSQL ---------------------------------------------------------------------------------

_PG_MIGRATION_LOCK: Final = 0x6D70726C  # "mprl": shared by every worker and replica


def _pg_insert() -> str:
    marks = ", ".join(f"${i}::jsonb" if c in JSON_COLUMNS else f"${i}" for i, c in enumerate(COLUMNS, 1))
    return (f"INSERT INTO request_log ({', '.join(COLUMNS)}) VALUES ({marks}) "  # noqa: S608
            "ON CONFLICT (request_id) DO NOTHING")


_PG_FEEDBACK: Final = (
    "INSERT INTO request_feedback (request_id, score, ts, key_name) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (request_id) DO UPDATE SET score = excluded.score, ts = excluded.ts, "
    "key_name = excluded.key_name"
)


class PostgresLogStore:
    """One connection per worker, opened again after any failure that is not the data's fault."""

    def __init__(self, dsn: str, schema: str | None = None, timeout_s: float = 5.0) -> None:
        self._dsn = dsn
        self._schema = schema
        self._timeout_s = timeout_s
        self._conn: Any = None
        self._insert = _pg_insert()
        self._values = row_values(native_bool=True)

    async def _connection(self) -> Any:
        import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information

        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        settings = {"search_path": self._schema} if self._schema else None
        conn = await asyncpg.connect(self._dsn, timeout=self._timeout_s, command_timeout=self._timeout_s,
                                     server_settings=settings)
        try:
            async with conn.transaction():
                await conn.execute(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
                if self._schema:
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
                for statement in create_table(1):
                    await conn.execute(statement)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        return conn

    async def _run(self, fn: Callable[[Any], Any]) -> Any:
        import asyncpg

        try:
            conn = await self._connection()
            async with conn.transaction():
                return await fn(conn)
        except asyncpg.PostgresError as exc:
            state = getattr(exc, "sqlstate", "") or ""
            if state[:2] in ("22", "23"):
                raise RowRejected(f"postgres {state}: {exc}") from exc
            self._drop()
            raise StoreUnavailable(f"postgres {state}: {type(exc).__name__}: {exc}") from exc
        except (TypeError, ValueError, OverflowError) as exc:  # a value asyncpg cannot encode (its DataError)
            raise RowRejected(f"postgres: {type(exc).__name__}: {exc}") from exc
        except (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.InternalClientError) as exc:
            self._drop()
            raise StoreUnavailable(f"postgres: {type(exc).__name__}: {exc}") from exc

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def open(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1"))

    async def insert(self, rows: Sequence[Row]) -> None:
        try:  # off the event loop: a batch takes milliseconds to convert
            values = await asyncio.to_thread(lambda: [self._values(r) for r in rows])
        except (TypeError, ValueError) as exc:
            raise RowRejected(str(exc)) from exc
        await self._run(lambda conn: conn.executemany(self._insert, values))

    async def put_feedback(self, items: Sequence[Feedback]) -> None:
        values = [(f.request_id, f.score, f.ts, f.key_name) for f in items]
        await self._run(lambda conn: conn.executemany(_PG_FEEDBACK, values))

    async def delete_before(self, ts: float) -> int:
        async def run(conn: Any) -> int:
            status = await conn.execute("DELETE FROM request_log WHERE ts < $1", ts)
            await conn.execute("DELETE FROM request_feedback WHERE ts < $1", ts)
            return int(str(status).rsplit(" ", 1)[-1])

        result: int = await self._run(run)
        return result

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), self._timeout_s)
            except Exception:
                conn.terminate()
