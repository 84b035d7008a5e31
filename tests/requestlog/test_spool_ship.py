"""Spool and shipper without a gateway: idempotent shipping, resume after a crash, poison rows,
torn lines, adoption of a dead process's spool, backoff while the store is down."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest

from modelplex.config.requestlog import RequestLog as Settings
from modelplex.observability import requestlog_store
from modelplex.observability.requestlog_row import Feedback, Row
from modelplex.observability.requestlog_ship import LogStats, Shipper
from modelplex.observability.requestlog_spool import Spool, adopt_orphans
from modelplex.observability.requestlog_store import RowRejected, SqliteLogStore
from modelplex.storage.base import StoreUnavailable

encode = msgspec.json.Encoder().encode


def row(i: int, **over: object) -> Row:
    base: dict[str, object] = dict(
        request_id=f"req-{i:06d}", ts=1_700_000_000.0 + i, dialect="openai", operation="chat", key_name="k",
        key_id=None, team="t", user_id=None, requested_model="m", route=None, route_reason=None, task=None,
        model="m", deployment="d", provider="openai", status=200, error_class=None, error_message=None,
        stream=False, aborted=False, latency_ms=10.0, ttft_ms=None, upstream_ms=9.0, overhead_ms=1.0,
        attempt_count=1, hedged=False, failover_ms=None, failover_from=None, input_tokens=5, output_tokens=7,
        cached_input_tokens=0, cache_write_tokens=0, reasoning_tokens=0, usage_estimated=False, cost_micro=12,
        currency="EUR", native_cost_micro=14, native_currency="USD", waste_micro=0, counterfactual_micro=20,
        unpriced=False, fingerprint="abc", tags=[], attempts=[],
    )
    base.update(over)
    return Row(**base)  # type: ignore[arg-type]


class Flaky:
    """A store that can be down, or reject given request ids."""

    def __init__(self, inner: SqliteLogStore) -> None:
        self.inner = inner
        self.down = False
        self.poison: set[str] = set()
        self.inserts = 0

    async def open(self) -> None:
        if self.down:
            raise StoreUnavailable("down")
        await self.inner.open()

    async def insert(self, rows: Sequence[Row]) -> None:
        self.inserts += 1
        if self.down:
            raise StoreUnavailable("down")
        if any(r.request_id in self.poison for r in rows):
            raise RowRejected("poison")
        await self.inner.insert(rows)

    async def put_feedback(self, items: Sequence[Feedback]) -> None:
        await self.inner.put_feedback(items)

    async def delete_before(self, ts: float) -> int:
        return await self.inner.delete_before(ts)

    async def close(self) -> None:
        await self.inner.close()


def stored(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return [r[0] for r in conn.execute("SELECT request_id FROM request_log ORDER BY request_id")]
    finally:
        conn.close()


def setup(tmp_path: Path, **settings: object) -> tuple[Spool, Flaky, Shipper, LogStats]:
    s = Settings(**{"batch_rows": 10, "retention_days": None, **settings})  # type: ignore[arg-type]
    spool = Spool(tmp_path / "spool", s.segment_bytes)
    store = Flaky(SqliteLogStore(str(tmp_path / "log.db")))
    stats = LogStats()
    return spool, store, Shipper(spool, store, tmp_path / "dead.jsonl", s, stats), stats


async def drain(shipper: Shipper) -> None:
    while await shipper.ship_once():
        pass


async def test_ships_everything_once_across_segments(tmp_path: Path) -> None:
    spool, store, shipper, stats = setup(tmp_path, segment_bytes=4096)
    for i in range(95):
        spool.append(encode(row(i)) + b"\n")
        stats.rows_spooled += 1
    assert spool.segment > 1  # rolled over
    await drain(shipper)
    assert stored(tmp_path / "log.db") == [f"req-{i:06d}" for i in range(95)]
    assert stats.backlog_rows == 0 and stats.rows_shipped == 95
    # shipped, finished segments are gone; the active one stays
    assert len(list(spool.directory.glob("*.jsonl"))) == 1  # type: ignore[union-attr]
    await store.close()


async def test_a_crash_between_store_and_position_ships_again_without_duplicates(tmp_path: Path) -> None:
    spool, store, shipper, _ = setup(tmp_path)
    for i in range(25):
        spool.append(encode(row(i)) + b"\n")
    await drain(shipper)
    (spool.directory / "shipped").unlink()  # type: ignore[operator]  # as if the position was never saved
    spool.close(remove_if_shipped=False)  # the process dies; its lock is free
    _, store2, shipper2, _ = setup(tmp_path)
    await shipper2._housekeeping()  # adopts the dead spool
    await drain(shipper2)
    assert stored(tmp_path / "log.db") == [f"req-{i:06d}" for i in range(25)]
    assert not list((tmp_path / "spool").iterdir())  # adopted and deleted
    await store.close()
    await store2.close()


async def test_poison_row_goes_to_dead_letter_and_the_rest_of_its_batch_is_stored(tmp_path: Path) -> None:
    spool, store, shipper, stats = setup(tmp_path)
    store.poison = {"req-000004"}
    for i in range(10):
        spool.append(encode(row(i)) + b"\n")
    spool.append(b'{"type": "request", "request_id": 12}\n')  # undecodable as a row
    await drain(shipper)
    assert stored(tmp_path / "log.db") == [f"req-{i:06d}" for i in range(10) if i != 4]
    dead = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [d["record"]["request_id"] for d in dead if isinstance(d["record"], dict)] == ["req-000004"]
    assert any(isinstance(d["record"], str) and "undecodable" in d["reason"] for d in dead)
    assert stats.rows_dead_lettered == 2
    await store.close()


async def test_store_down_keeps_rows_in_the_spool_until_it_is_back(tmp_path: Path) -> None:
    spool, store, shipper, stats = setup(tmp_path, ship_interval_ms=10, retry_max_s=0.05)
    store.down = True
    task = asyncio.create_task(shipper.run())
    for i in range(30):
        spool.append(encode(row(i)) + b"\n")
        stats.rows_spooled += 1
    await asyncio.sleep(0.3)
    assert stats.store_up is False and stats.store_errors > 0 and stats.backlog_rows == 30
    assert stats.last_error is not None and "down" in stats.last_error
    store.down = False
    for _ in range(100):
        await asyncio.sleep(0.02)
        if stats.backlog_rows == 0:
            break
    task.cancel()
    assert stats.store_up and stored(tmp_path / "log.db") == [f"req-{i:06d}" for i in range(30)]
    await store.close()


async def test_a_torn_tail_of_a_dead_spool_is_dead_lettered(tmp_path: Path) -> None:
    spool, store, shipper, _ = setup(tmp_path)
    spool.append(encode(row(1)) + b"\n")
    spool.open()
    path = spool.directory / "00000001.jsonl"  # type: ignore[operator]
    with path.open("ab") as f:
        f.write(b'{"type": "request", "request_id": "req-0')  # the write was cut short
    spool.close(remove_if_shipped=False)
    _, store2, shipper2, _ = setup(tmp_path)
    await shipper2._housekeeping()
    await drain(shipper2)
    assert stored(tmp_path / "log.db") == ["req-000001"]
    dead = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert len(dead) == 1 and "torn" in dead[0]["reason"]
    await store.close()
    await store2.close()


def test_a_live_spool_is_never_adopted(tmp_path: Path) -> None:
    a = Spool(tmp_path, 1 << 20)
    a.append(b"{}\n")
    assert adopt_orphans(tmp_path, None, set()) == []
    a.close(remove_if_shipped=False)
    found = adopt_orphans(tmp_path, None, set())
    assert len(found) == 1
    assert adopt_orphans(tmp_path, None, {found[0].directory}) == []


async def test_feedback_and_retention(tmp_path: Path) -> None:
    spool, store, shipper, _ = setup(tmp_path)
    spool.append(encode(row(1, ts=100.0)) + b"\n")
    spool.append(encode(row(2)) + b"\n")
    spool.append(encode(Feedback(request_id="req-000002", score=0.2, ts=1_700_000_100.0)) + b"\n")
    spool.append(encode(Feedback(request_id="req-000002", score=0.9, ts=1_700_000_200.0)) + b"\n")
    await drain(shipper)
    conn = sqlite3.connect(tmp_path / "log.db")
    assert conn.execute("SELECT request_id, score FROM request_feedback").fetchall() == [("req-000002", 0.9)]
    conn.close()
    assert await store.delete_before(1_000.0) == 1
    assert stored(tmp_path / "log.db") == ["req-000002"]
    await store.close()


@pytest.mark.parametrize("text", ["call me at 555 123 4567 or a.b@c.io", "token sk-proj-ABCDEFGH1234 here"])
def test_default_redaction(text: str) -> None:
    from modelplex.observability.requestlog_row import redact_common

    out = redact_common(text, "prompt")
    assert out is not None and "555 123" not in out and "a.b@c.io" not in out and "ABCDEFGH" not in out


def test_fingerprint_normalises_numbers_and_whitespace() -> None:
    from modelplex.observability.requestlog_row import fingerprint

    assert fingerprint("Summarise ticket 123\n\n  from 2024-01-02") == fingerprint("Summarise ticket 9 from 1999-12-31")
    assert fingerprint("Summarise ticket 1") != fingerprint("Translate ticket 1")


@pytest.mark.parametrize("variable_limit", [None, 999, 46])
async def test_sqlite_batch_goes_in_few_statements(tmp_path: Path, variable_limit: int | None) -> None:
    # executemany runs one statement per row and releases the GIL around each: a writer thread next
    # to a busy event loop then waited for the GIL once per row, and the log fell behind at saturation.
    store = SqliteLogStore(str(tmp_path / "log.db"))
    await store.open()
    requestlog_store._sqlite_insert.cache_clear()
    statements: list[str] = []

    def setup(conn: sqlite3.Connection) -> None:
        if variable_limit:
            conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, variable_limit)
        conn.set_trace_callback(lambda sql: statements.append(sql) if sql.startswith("INSERT") else None)

    await store._run(setup)
    rows = [row(i) for i in range(1200)]
    await store.insert(rows[:700])
    await store.insert(rows[600:])  # 100 already stored: ignored, not an error
    await store._run(lambda conn: conn.set_trace_callback(None))
    # Power-of-two chunks of at most 64 rows within the parameter limit (46 columns): few
    # statements per batch, and few distinct ones for SQLite and sqlite3 to keep prepared.
    cap = {None: 64, 999: 16, 46: 1}[variable_limit]

    def chunks(n: int) -> int:
        return n // cap + bin(n % cap).count("1")

    assert len(statements) == chunks(700) + chunks(600)
    assert requestlog_store._sqlite_insert.cache_info().currsize <= 7  # distinct statements prepared
    count = await store._run(lambda conn: conn.execute("SELECT count(*), sum(cost_micro) FROM request_log").fetchone())
    assert count == (1200, 1200 * 12)
    await store.close()
