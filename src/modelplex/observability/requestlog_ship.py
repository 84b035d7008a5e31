"""The shipper: a background task that moves spooled records into the store, in batches.

It reads the worker's own spool and any adopted spool of a dead process, stores each batch in one
transaction, and only then records the batch as shipped; a crash in between ships the batch again
and the store keeps one row per request id. While the store is down it backs off (to
`retry_max_s`) and the spool grows. A batch the store rejects for its data is retried row by row;
the rows that still fail go to the dead-letter file, the rest of the batch is stored.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from modelplex.config.requestlog import RequestLog as Settings
from modelplex.observability.requestlog_row import Feedback, Record, Row
from modelplex.observability.requestlog_spool import Batch, Cursor, Spool, adopt_orphans
from modelplex.observability.requestlog_store import LogStore, RowRejected
from modelplex.storage.base import StoreUnavailable

log = logging.getLogger("modelplex.requestlog")
T = TypeVar("T")
ADOPT_EVERY_S = 10.0
RETENTION_EVERY_S = 3600.0
BACKLOG_EVERY_S = 1.0
DECODE_SLICE = 32  # records decoded on the event loop between two chances for requests to run


@dataclass
class LogStats:
    """Counters and gauges of the request log, for metrics and alerts (read, never reset)."""

    rows_spooled: int = 0  # written to this process's spool
    rows_shipped: int = 0  # stored (or found already stored), own and adopted spools
    rows_dead_lettered: int = 0
    rows_lost: int = 0  # the spool refused them (disk full, read-only): logged as errors
    batches: int = 0
    store_errors: int = 0  # failed tries against the store (down, timed out, locked)
    store_up: bool = False
    last_error: str | None = None
    last_shipped_at: float | None = None  # wall clock
    backlog_bytes: int = 0  # spooled, not yet shipped (own and adopted), refreshed every second
    adopted_spools: int = 0
    retention_deleted: int = 0
    own_done: int = field(default=0, repr=False)

    @property
    def backlog_rows(self) -> int:
        """Rows this process spooled that are not stored yet (adopted spools: see backlog_bytes)."""
        return self.rows_spooled - self.own_done

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_spooled": self.rows_spooled,
            "rows_shipped": self.rows_shipped,
            "rows_dead_lettered": self.rows_dead_lettered,
            "rows_lost": self.rows_lost,
            "batches": self.batches,
            "store_errors": self.store_errors,
            "store_up": self.store_up,
            "last_error": self.last_error,
            "last_shipped_at": self.last_shipped_at,
            "backlog_rows": self.backlog_rows,
            "backlog_bytes": self.backlog_bytes,
            "adopted_spools": self.adopted_spools,
            "retention_deleted": self.retention_deleted,
        }


_decode = msgspec.json.Decoder(Record).decode
_encode = msgspec.json.Encoder().encode


class Shipper:
    def __init__(
        self,
        spool: Spool,
        store: LogStore,
        dead_letter: Path,
        settings: Settings,
        stats: LogStats,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spool = spool
        self.store = store
        self.dead_letter = dead_letter
        self.settings = settings
        self.stats = stats
        self.clock = clock
        self._own: Cursor | None = None
        self._adopted: list[Cursor] = []
        self._store_open = False
        self._next_adopt = 0.0
        self._next_retention = 0.0
        self._next_backlog = 0.0

    # -- the task ---------------------------------------------------------------------------------

    async def run(self) -> None:
        delay = 0.1
        while True:
            try:  # also while the store is down: the backlog gauge must keep growing
                await self._housekeeping()
            except OSError as exc:
                log.warning("request log housekeeping failed: %s", exc)
            try:
                progressed = await self.ship_once()
            except StoreUnavailable as exc:
                self._failed(str(exc))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self.settings.retry_max_s)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not stop shipping for the life of the process
                log.exception("request log shipper failed; it retries")
                self._failed(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(self.settings.retry_max_s)
                continue
            delay = 0.1
            # Ship again at once only after a full batch (a backlog); otherwise let rows gather for
            # an interval: a few large batches cost far less CPU than many small ones under load.
            if progressed < self.settings.batch_rows:
                await asyncio.sleep(self.settings.ship_interval_ms / 1000.0)

    async def drain(self, timeout_s: float) -> bool:
        """Ship what is spooled, for at most `timeout_s` (at shutdown). True when all of it went."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if not await asyncio.wait_for(self.ship_once(), max(deadline - time.monotonic(), 0.01)):
                    return True
            except (StoreUnavailable, TimeoutError) as exc:
                self._failed(str(exc))
                return False
        return False

    def _failed(self, error: str) -> None:
        if self.stats.store_up or self.stats.last_error != error:
            log.warning("request log store unavailable, rows stay in the spool: %s", error)
        self.stats.store_up = False
        self.stats.store_errors += 1
        self.stats.last_error = error

    # -- one pass ---------------------------------------------------------------------------------

    def _cursors(self) -> list[Cursor]:
        if self._own is None and self.spool.directory is not None:
            self._own = Cursor(self.spool.directory, self.spool)
        return ([self._own] if self._own is not None else []) + list(self._adopted)

    async def ship_once(self) -> int:
        """Store one batch from each spool that has one; the largest batch's rows (0: nothing)."""
        progressed = 0
        for cursor in self._cursors():
            batch = await asyncio.to_thread(cursor.read, self.settings.batch_rows)
            if batch is None:
                if cursor.owner is None:
                    await asyncio.to_thread(cursor.release)
                    self._adopted.remove(cursor)
                continue
            if not self._store_open:
                await self.store.open()
                self._store_open = True
            await self._ship(batch)
            await asyncio.to_thread(cursor.commit, batch)
            rows = len(batch.lines) + len(batch.torn)
            if cursor is self._own:
                self.stats.own_done += rows
            progressed = max(progressed, rows)
        return progressed

    async def _ship(self, batch: Batch) -> None:
        dead: list[tuple[Any, str]] = [
            (t.decode("utf-8", "replace"), "torn line: the write was cut short") for t in batch.torn
        ]
        rows: list[Row] = []
        feedback: list[Feedback] = []
        for i, line in enumerate(batch.lines):
            if i and not i % DECODE_SLICE:  # a batch decodes in milliseconds: let requests run between
                await asyncio.sleep(0)
            try:
                record = _decode(line)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                dead.append((line.decode("utf-8", "replace"), f"undecodable: {exc}"))
                continue
            if isinstance(record, Row):
                rows.append(record)
            else:
                feedback.append(record)
        if rows:
            dead += await _isolate(rows, self.store.insert)
        if feedback:
            dead += await _isolate(feedback, self.store.put_feedback)
        if dead:
            await asyncio.to_thread(self._write_dead, dead)
        self.stats.rows_shipped += len(rows) - sum(isinstance(r, Row) for r, _ in dead)
        self.stats.batches += 1
        self.stats.last_shipped_at = self.clock()
        if not self.stats.store_up and self.stats.store_errors:
            log.info("request log store reachable again; shipping the spool")
        self.stats.store_up, self.stats.last_error = True, None

    def _write_dead(self, dead: list[tuple[Any, str]]) -> None:
        now = self.clock()
        lines = b"".join(
            _encode({"at": now, "reason": reason, "record": record}) + b"\n" for record, reason in dead
        )
        self.dead_letter.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dead_letter, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        try:
            os.write(fd, lines)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.stats.rows_dead_lettered += len(dead)
        log.error(
            "request log: %d record(s) the store rejected went to %s (first: %s)",
            len(dead),
            self.dead_letter,
            dead[0][1],
        )

    # -- housekeeping -----------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        if now >= self._next_adopt:
            self._next_adopt = now + ADOPT_EVERY_S
            taken = {c.directory for c in self._adopted}
            found = await asyncio.to_thread(adopt_orphans, Path(self.spool.root), self.spool.directory, taken)
            if found:
                log.info("request log: shipping %d spool(s) left by stopped processes", len(found))
            self._adopted += found
            self.stats.adopted_spools += len(found)
        if now >= self._next_backlog:
            self._next_backlog = now + BACKLOG_EVERY_S
            self.stats.backlog_bytes = await asyncio.to_thread(
                lambda: sum(c.pending_bytes() for c in self._cursors())
            )
        days = self.settings.retention_days
        if days is not None and now >= self._next_retention and self._store_open:
            self._next_retention = now + RETENTION_EVERY_S
            try:
                deleted = await self.store.delete_before(self.clock() - days * 86400.0)
            except (StoreUnavailable, RowRejected) as exc:
                self._next_retention = now + 60.0
                log.warning("request log retention failed, retrying in a minute: %s", exc)
                return
            self.stats.retention_deleted += deleted
            if deleted:
                log.info("request log retention: deleted %d row(s) older than %g day(s)", deleted, days)


async def _isolate(
    items: Sequence[T], put: Callable[[Sequence[T]], Awaitable[None]]
) -> list[tuple[Any, str]]:
    """Store `items` in one go; when the store rejects the data, one by one, and return the ones
    it rejects alone (with the reason). StoreUnavailable propagates: the batch is retried whole."""
    try:
        await put(items)
        return []
    except RowRejected as exc:
        if len(items) == 1:
            return [(items[0], str(exc))]
    dead: list[tuple[Any, str]] = []
    for item in items:
        try:
            await put([item])
        except RowRejected as exc:
            dead.append((item, str(exc)))
    return dead
