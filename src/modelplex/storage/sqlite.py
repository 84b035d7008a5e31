"""The embedded default: keys, counters and the ledger in one SQLite file, shared safely by the
worker processes of one machine.

The file is in WAL mode; every check-then-charge runs in one `BEGIN IMMEDIATE` transaction, which
takes the file's write lock first, so two processes never both see room for the last slot. Each
store talks to SQLite from one dedicated thread (its connection never changes thread); the stores
the factory opens on one file share that connection and thread.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from modelplex.server import sched
from modelplex.storage.base import (
    BudgetDecision,
    BudgetRule,
    BudgetState,
    Conflict,
    InTurn,
    KeyRecord,
    LedgerEntry,
    NotFound,
    RateDecision,
    RateRule,
    StoreUnavailable,
    TeamRecord,
    UserRecord,
)
from modelplex.storage.counting import (
    EXPIRED,
    OPEN,
    SWEEP_EVERY_S,
    PeriodKeys,
    budget_counters,
    budget_lifetime,
    rate_counter,
    reservation_lifetime,
    retry_after,
)
from modelplex.storage.migrations.sqlite import MIGRATIONS
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

T = TypeVar("T")
Conn = sqlite3.Connection

_UNAVAILABLE = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class SqliteDatabase:
    """One connection to one file, used only from its own thread; closed with its last store."""

    def __init__(self, path: str, busy_timeout_s: float) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelplex-sqlite",
                                            initializer=sched.helper_thread)
        self._conn: Conn | None = None
        self._stores = 0

    @classmethod
    async def open(cls, path: str, busy_timeout_s: float = 5.0) -> SqliteDatabase:
        """Connect and bring the schema to the current version. `busy_timeout_s` is how long an
        operation waits for another process's write lock before StoreUnavailable."""
        db = cls(path, busy_timeout_s)
        try:
            await db.run(lambda _: None)
        except BaseException:
            db._executor.shutdown(wait=False)
            raise
        return db

    def retain(self) -> SqliteDatabase:
        self._stores += 1
        return self

    async def release(self) -> None:
        self._stores -= 1
        if self._stores == 0:
            self._stores = -1  # closed for good: a late call must not reconnect
            await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
            self._executor.shutdown(wait=False)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def run(self, work: Callable[[Conn], T]) -> T:
        """`work` in autocommit mode: each statement is its own transaction."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, work, False)

    async def write(self, work: Callable[[Conn], T]) -> T:
        """`work` in one transaction that holds the write lock from its start."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._call, work, True)

    def _call(self, work: Callable[[Conn], T], immediate: bool) -> T:
        try:
            if self._conn is None:
                if self._stores < 0:
                    raise RuntimeError(f"sqlite {self.path} is closed")
                self._connect()
            conn = self._conn
            assert conn is not None
            if not immediate:
                return work(conn)
            return _transaction(conn, work)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF in _UNAVAILABLE:
                raise StoreUnavailable(f"sqlite {self.path}: {exc.sqlite_errorname}") from exc
            raise

    def _connect(self) -> None:
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
        enable_wal(conn, self._busy_timeout_s)
        # In WAL mode NORMAL loses at most the last transactions on power loss, never integrity.
        conn.execute("PRAGMA synchronous = NORMAL")
        try:
            _transaction(conn, _migrate)
        except BaseException:
            conn.close()
            raise
        self._conn = conn


def enable_wal(conn: Conn, timeout_s: float) -> None:
    """PRAGMA journal_mode = WAL, retried while another process holds the lock: when workers open a
    new file at the same moment, SQLite can answer SQLITE_BUSY here without waiting out
    busy_timeout (seen in CI: a worker failed to start)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in _UNAVAILABLE or time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def _transaction(conn: Conn, work: Callable[[Conn], T]) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _migrate(conn: Conn) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT version FROM schema_version").fetchone()
    current = 0 if row is None else int(row[0])
    if current > len(MIGRATIONS):
        raise RuntimeError(f"schema version {current} is newer than this modelplex ({len(MIGRATIONS)})")
    for statements in MIGRATIONS[current:]:
        for statement in statements:
            conn.execute(statement)
    if row is None:
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (len(MIGRATIONS),))
    else:
        conn.execute("UPDATE schema_version SET version = ?", (len(MIGRATIONS),))


def _insert(table: str, columns: tuple[str, ...], verb: str = "INSERT") -> str:
    return f"{verb} INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"


# --- keys --------------------------------------------------------------------------------------

_INSERT_KEY = _insert("api_key", KEY_COLUMNS)
_REPLACE_KEY = _insert("api_key", KEY_COLUMNS, "REPLACE")
_ACTIVE = "revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)"


class SqliteKeyStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db.retain()

    @classmethod
    async def open(cls, path: str) -> SqliteKeyStore:
        return cls(await SqliteDatabase.open(path))

    async def create_key(self, record: KeyRecord) -> None:
        def work(conn: Conn) -> None:
            try:
                conn.execute(_INSERT_KEY, key_row(record))
            except sqlite3.IntegrityError:
                raise Conflict(f"key {record.id!r} or its digest exists") from None

        await self._db.run(work)

    async def key_by_digest(self, digest: bytes) -> KeyRecord | None:
        return await self._db.run(lambda c: _one_key(c, "digest", digest))

    async def key_by_id(self, key_id: str) -> KeyRecord | None:
        return await self._db.run(lambda c: _one_key(c, "id", key_id))

    async def list_keys(self, team: str | None = None, user: str | None = None) -> list[KeyRecord]:
        sql = (
            "SELECT * FROM api_key WHERE (? IS NULL OR team = ?) AND (? IS NULL OR user_id = ?)"
            " ORDER BY created_at, id"
        )
        rows = await self._db.run(lambda c: c.execute(sql, (team, team, user, user)).fetchall())
        return [key_record(r) for r in rows]

    async def update_key(self, key_id: str, **changes: Any) -> KeyRecord:
        return await self._db.write(lambda c: _change_key(c, key_id, changes))

    async def revoke_key(self, key_id: str, at: float) -> KeyRecord:
        def work(conn: Conn) -> KeyRecord:
            record = _one_key(conn, "id", key_id)
            when = at if record is None or record.revoked_at is None else min(record.revoked_at, at)
            return _change_key(conn, key_id, {"revoked_at": when})

        return await self._db.write(work)

    async def put_team(self, team: TeamRecord) -> None:
        await self._db.run(lambda c: c.execute(_insert("team", TEAM_COLUMNS, "REPLACE"), team_row(team)))

    async def team(self, name: str) -> TeamRecord | None:
        row = await self._db.run(lambda c: c.execute("SELECT * FROM team WHERE name = ?", (name,)).fetchone())
        return None if row is None else team_record(row)

    async def list_teams(self) -> list[TeamRecord]:
        rows = await self._db.run(lambda c: c.execute("SELECT * FROM team ORDER BY name").fetchall())
        return [team_record(r) for r in rows]

    async def delete_team(self, name: str, now: float | None = None) -> None:
        at = time.time() if now is None else now
        await self._db.write(lambda c: _delete_owner(c, "team", "name", "team", name, at))

    async def put_user(self, user: UserRecord) -> None:
        await self._db.run(lambda c: c.execute(_insert("app_user", USER_COLUMNS, "REPLACE"), user_row(user)))

    async def user(self, user_id: str) -> UserRecord | None:
        sql = "SELECT * FROM app_user WHERE id = ?"
        row = await self._db.run(lambda c: c.execute(sql, (user_id,)).fetchone())
        return None if row is None else user_record(row)

    async def list_users(self, team: str | None = None) -> list[UserRecord]:
        sql = "SELECT * FROM app_user WHERE (? IS NULL OR team = ?) ORDER BY id"
        rows = await self._db.run(lambda c: c.execute(sql, (team, team)).fetchall())
        return [user_record(r) for r in rows]

    async def delete_user(self, user_id: str, now: float | None = None) -> None:
        at = time.time() if now is None else now
        await self._db.write(lambda c: _delete_owner(c, "app_user", "id", "user_id", user_id, at))

    async def close(self) -> None:
        await self._db.release()


def _one_key(conn: Conn, column: str, value: object) -> KeyRecord | None:
    row = conn.execute(f"SELECT * FROM api_key WHERE {column} = ?", (value,)).fetchone()  # noqa: S608
    return None if row is None else key_record(row)


def _change_key(conn: Conn, key_id: str, changes: dict[str, Any]) -> KeyRecord:
    record = _one_key(conn, "id", key_id)
    if record is None:
        raise NotFound(key_id)
    updated = apply_key_changes(record, changes)
    conn.execute(_REPLACE_KEY, key_row(updated))
    return updated


def _delete_owner(conn: Conn, table: str, column: str, key_column: str, name: str, now: float) -> None:
    """Delete a team or user, unless keys active at `now` belong to it."""
    if conn.execute(f"SELECT 1 FROM {table} WHERE {column} = ?", (name,)).fetchone() is None:  # noqa: S608
        raise NotFound(name)
    active = f"SELECT 1 FROM api_key WHERE {key_column} = ? AND {_ACTIVE} LIMIT 1"  # noqa: S608
    if conn.execute(active, (name, now)).fetchone() is not None:
        raise Conflict(f"{name!r} has active keys")
    conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (name,))  # noqa: S608


# --- counters ----------------------------------------------------------------------------------

_CHARGE = """INSERT INTO rate_bucket (counter, second, amount, expires) VALUES (?, ?, ?, ?)
    ON CONFLICT (counter, second) DO UPDATE
    SET amount = amount + excluded.amount, expires = max(expires, excluded.expires)"""
_WINDOW_TOTAL = "SELECT COALESCE(SUM(amount), 0) FROM rate_bucket WHERE counter = ? AND second >= ?"
_WINDOW = "SELECT second, amount FROM rate_bucket WHERE counter = ? AND second >= ? ORDER BY second"
_RESERVE = """INSERT INTO budget (counter, spent, reserved, expires_at) VALUES (?, 0, ?, ?)
    ON CONFLICT (counter) DO UPDATE
    SET reserved = reserved + excluded.reserved, expires_at = max(expires_at, excluded.expires_at)"""
_SETTLE = "UPDATE budget SET reserved = reserved - ?, spent = spent + ? WHERE counter = ?"
_DUE = "SELECT id, amount, counters FROM reservation WHERE state = 'open' AND expires_at <= ?"
# Live leases of a scope, and whether one of them is ours.
_LEASES = "SELECT COUNT(*), COALESCE(SUM(lease = ?), 0) FROM lease WHERE scope = ? AND expires_at > ?"


class SqliteCounters(InTurn):
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db.retain()
        self._period_keys = PeriodKeys()
        self._next_sweep = -math.inf

    @classmethod
    async def open(cls, path: str) -> SqliteCounters:
        return cls(await SqliteDatabase.open(path))

    def _sweep_due(self, now: float) -> bool:
        if now < self._next_sweep:
            return False
        self._next_sweep = now + SWEEP_EVERY_S
        return True

    async def take(self, rules: list[RateRule], amounts: list[int], now: float) -> RateDecision:
        sweep = self._sweep_due(now)

        def work(conn: Conn) -> RateDecision:
            if sweep:
                _sweep(conn, now)
            second = math.floor(now)
            counters = [rate_counter(r) for r in rules]
            totals = [
                int(conn.execute(_WINDOW_TOTAL, (name, second - rule.window_s)).fetchone()[0])
                for name, rule in zip(counters, rules, strict=True)
            ]
            for i, (rule, total, amount) in enumerate(zip(rules, totals, amounts, strict=True)):
                if total + amount > rule.limit:
                    window = conn.execute(_WINDOW, (counters[i], second - rule.window_s)).fetchall()
                    wait = retry_after(
                        ((r[0], r[1]) for r in window), total, amount, rule.limit, rule.window_s, now
                    )
                    left = tuple(max(0, r.limit - t) for r, t in zip(rules, totals, strict=True))
                    return RateDecision(False, rule, wait, left)
            _charge(conn, counters, rules, amounts, second)
            return RateDecision(
                True,
                remaining=tuple(
                    max(0, r.limit - t - a) for r, t, a in zip(rules, totals, amounts, strict=True)
                ),
            )

        return await self._db.write(work)

    async def add(self, rules: list[RateRule], amounts: list[int], now: float) -> None:
        counters = [rate_counter(r) for r in rules]
        await self._db.write(lambda c: _charge(c, counters, rules, amounts, math.floor(now)))

    async def acquire(
        self, scopes: list[tuple[str, int]], lease: str, now: float, ttl_s: float
    ) -> str | None:
        sweep = self._sweep_due(now)

        def work(conn: Conn) -> str | None:
            if sweep:
                _sweep(conn, now)
            for scope, limit in scopes:
                live, mine = conn.execute(_LEASES, (lease, scope, now)).fetchone()
                if not mine and live >= limit:
                    return scope
            conn.executemany(
                """INSERT INTO lease (scope, lease, expires_at) VALUES (?, ?, ?)
                   ON CONFLICT (scope, lease) DO UPDATE SET expires_at = excluded.expires_at""",
                [(scope, lease, now + ttl_s) for scope, _ in scopes],
            )
            return None

        return await self._db.write(work)

    async def release_lease(self, scopes: list[str], lease: str) -> None:
        await self._db.write(
            lambda c: c.executemany(
                "DELETE FROM lease WHERE scope = ? AND lease = ?", [(s, lease) for s in scopes]
            )
        )

    async def reserve(
        self, rules: list[BudgetRule], amount_micro: int, reservation: str, now: float, ttl_s: float
    ) -> BudgetDecision:
        if amount_micro < 0:
            raise ValueError("a reservation is never negative")
        sweep = self._sweep_due(now)
        names, of_rule = budget_counters(rules, now, self._period_keys)
        lifetimes: dict[str, float | None] = {}
        for rule, i in zip(rules, of_rule, strict=True):
            life = budget_lifetime(rule.period, now, ttl_s)
            lifetimes.setdefault(names[i], None if life is None else now + life)

        def work(conn: Conn) -> BudgetDecision:
            _collect(conn, now)
            if sweep:
                _sweep(conn, now)
            states = [_budget(conn, name) for name in names]
            spent = tuple(states[i][0] for i in of_rule)
            reserved = tuple(states[i][1] for i in of_rule)
            if conn.execute(
                "SELECT 1 FROM reservation WHERE id = ? AND forget_at > ?", (reservation, now)
            ).fetchone():
                return BudgetDecision(True, None, spent, reserved)
            for rule, s, r in zip(rules, spent, reserved, strict=True):
                if rule.hard and s + r + amount_micro > rule.cap_micro:
                    return BudgetDecision(False, rule, spent, reserved)
            conn.executemany(_RESERVE, [(n, amount_micro, lifetimes[n]) for n in names])
            conn.execute(
                "REPLACE INTO reservation (id, amount, counters, state, expires_at, forget_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    reservation,
                    amount_micro,
                    json.dumps(names),
                    OPEN,
                    now + ttl_s,
                    now + reservation_lifetime(ttl_s),
                ),
            )
            return BudgetDecision(True, None, spent, tuple(r + amount_micro for r in reserved))

        return await self._db.write(work)

    async def settle(self, reservation: str, actual_micro: int, now: float) -> None:
        def work(conn: Conn) -> None:
            row = conn.execute(
                "SELECT amount, counters, state, forget_at FROM reservation WHERE id = ?", (reservation,)
            ).fetchone()
            if row is None:
                return
            conn.execute("DELETE FROM reservation WHERE id = ?", (reservation,))
            if row["forget_at"] <= now:
                return
            held = row["amount"] if row["state"] == OPEN else 0  # an expired one holds nothing
            conn.executemany(_SETTLE, [(held, actual_micro, n) for n in json.loads(row["counters"])])

        await self._db.write(work)

    async def release(self, reservation: str) -> None:
        def work(conn: Conn) -> None:
            row = conn.execute(
                "SELECT amount, counters, state FROM reservation WHERE id = ?", (reservation,)
            ).fetchone()
            if row is None:
                return
            if row["state"] == OPEN:
                conn.executemany(_SETTLE, [(row["amount"], 0, n) for n in json.loads(row["counters"])])
            conn.execute("DELETE FROM reservation WHERE id = ?", (reservation,))

        await self._db.write(work)

    async def budget_state(self, rule: BudgetRule, now: float) -> BudgetState:
        names, _ = budget_counters([rule], now, self._period_keys)

        def work(conn: Conn) -> BudgetState:
            _collect(conn, now)
            return BudgetState(*_budget(conn, names[0]))

        return await self._db.write(work)

    async def close(self) -> None:
        await self._db.release()


def _charge(conn: Conn, counters: list[str], rules: list[RateRule], amounts: list[int], second: int) -> None:
    conn.executemany(
        _CHARGE,
        [
            (name, second, amount, second + rule.window_s + 1)
            for name, rule, amount in zip(counters, rules, amounts, strict=True)
        ],
    )


def _budget(conn: Conn, name: str) -> tuple[int, int]:
    row = conn.execute("SELECT spent, reserved FROM budget WHERE counter = ?", (name,)).fetchone()
    return (0, 0) if row is None else (int(row[0]), int(row[1]))


def _collect(conn: Conn, now: float) -> None:
    """Release the reservations whose TTL has passed (their workers are presumed dead)."""
    due = conn.execute(_DUE, (now,)).fetchall()
    for row in due:
        conn.executemany(_SETTLE, [(row["amount"], 0, n) for n in json.loads(row["counters"])])
    conn.executemany("UPDATE reservation SET state = ? WHERE id = ?", [(EXPIRED, row["id"]) for row in due])


def _sweep(conn: Conn, now: float) -> None:
    """Drop rows nobody will read again; runs inside a write every SWEEP_EVERY_S (caller's clock)."""
    conn.execute("DELETE FROM rate_bucket WHERE expires <= ?", (math.floor(now),))
    conn.execute("DELETE FROM lease WHERE expires_at <= ?", (now,))
    conn.execute("DELETE FROM budget WHERE expires_at <= ? AND reserved = 0", (now,))
    conn.execute("DELETE FROM reservation WHERE forget_at <= ? AND state = 'expired'", (now,))


# --- ledger ------------------------------------------------------------------------------------

_RECORD = _insert("ledger", LEDGER_COLUMNS) + " ON CONFLICT (request_id) DO NOTHING"


class SqliteLedger:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db.retain()

    @classmethod
    async def open(cls, path: str) -> SqliteLedger:
        return cls(await SqliteDatabase.open(path))

    async def record(self, entries: list[LedgerEntry]) -> None:
        rows = [ledger_row(e) for e in entries]
        await self._db.write(lambda c: c.executemany(_RECORD, rows))

    async def total(
        self, *, team: str | None = None, key_id: str | None = None, since: float | None = None
    ) -> int:
        where, args = ledger_filter(team, key_id, since, "?")
        sql = "SELECT COALESCE(SUM(report_cost_micro), 0) FROM ledger" + where  # noqa: S608
        return int(await self._db.run(lambda c: c.execute(sql, args).fetchone()[0]))

    async def count(self) -> int:
        return int(await self._db.run(lambda c: c.execute("SELECT COUNT(*) FROM ledger").fetchone()[0]))

    async def close(self) -> None:
        await self._db.release()
