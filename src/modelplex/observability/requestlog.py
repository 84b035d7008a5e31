"""The request log's sink: one row per finished request, appended to the worker's spool before the
request's handler returns, and shipped to the store by a background task (requestlog_ship.py).

Nothing here queries the store and nothing waits on it: on the request path the cost is building
the row, encoding it, and one `write` to the spool. `RequestLog.stats` holds the counters and
gauges (backlog, dead letters, store up/down) other code reads for metrics and alerts;
`find(svc)` returns the installed sink.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from modelplex.config.requestlog import RequestLog as Settings
from modelplex.context import RequestContext
from modelplex.observability.requestlog_row import Feedback, Row, RowBuilder, load_redactor
from modelplex.observability.requestlog_ship import LogStats, Shipper
from modelplex.observability.requestlog_spool import Spool
from modelplex.observability.requestlog_store import LogStore, PostgresLogStore, SqliteLogStore
from modelplex.services import Services

if TYPE_CHECKING:
    from modelplex.dashboard.install import Dashboard

log = logging.getLogger("modelplex.requestlog")
DRAIN_AT_SHUTDOWN_S = 5.0
_encode = msgspec.json.Encoder().encode


def resolve(base: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base / p


def open_store(settings: Settings, base: Path) -> LogStore:
    if settings.store == "postgres":
        assert settings.postgres_dsn is not None
        return PostgresLogStore(settings.postgres_dsn.get_secret_value(), settings.postgres_schema)
    return SqliteLogStore(str(resolve(base, settings.sqlite_path)))


class RequestLog:
    """A sink (`svc.sinks`). With `enabled: false` it still builds rows for its observers (the
    dashboard's live view) but writes nothing."""

    def __init__(self, svc: Services, settings: Settings, base: Path, store: LogStore | None = None) -> None:
        self.settings = settings
        self._svc = svc
        redact = None
        if settings.store_prompts:
            redact = load_redactor(settings.redact) if settings.redact else (lambda text, kind: text)
        self.builder = RowBuilder(
            currency=lambda: svc.meter.currency,
            # svc.meter is replaced on a config reload: look it up at each call.
            to_report=lambda micro, currency: svc.meter.to_report(micro, currency),  # noqa: PLW0108
            redact=redact,
            max_text_chars=settings.max_text_chars,
        )
        self.stats = LogStats()
        self.observers: list[Callable[[Row], None]] = []
        self.spool: Spool | None = None
        self.shipper: Shipper | None = None
        if settings.enabled:
            self.spool = Spool(resolve(base, settings.spool_dir), settings.segment_bytes)
            self.shipper = Shipper(self.spool, store or open_store(settings, base),
                                   resolve(base, settings.dead_letter_path), settings, self.stats)
        self._last_loss_log = 0.0
        self.dashboard: Dashboard | None = None  # set by requestlog_install (budgets plug in there)

    def __call__(self, ctx: RequestContext, end: float) -> None:
        try:
            row = self.builder.build(self._svc.runtime(), ctx, end)
        except Exception:  # a bad row must never fail the request it describes
            log.exception("request log: could not build the row of request %s", ctx.request_id)
            self.stats.rows_lost += 1
            return
        if self.spool is not None:
            self._append(_encode(row) + b"\n")
        for observe in self.observers:
            try:
                observe(row)
            except Exception:
                log.exception("request log observer failed")

    def feedback(self, item: Feedback) -> None:
        if self.spool is not None:
            self._append(_encode(item) + b"\n")

    def _append(self, line: bytes) -> None:
        assert self.spool is not None
        try:
            self.spool.append(line)
        except OSError as exc:
            self.stats.rows_lost += 1
            now = time.monotonic()
            if now - self._last_loss_log > 10.0:
                self._last_loss_log = now
                log.error("request log: the spool refused a row (%s); %d row(s) lost so far",
                          exc, self.stats.rows_lost)
            return
        self.stats.rows_spooled += 1

    async def fsync_loop(self) -> None:
        """Background task: the spool reaches the disk within `fsync_interval_ms`."""
        interval = self.settings.fsync_interval_ms / 1000.0
        while True:
            await asyncio.sleep(interval)
            if self.spool is not None and self.spool.dirty:
                await asyncio.to_thread(self.spool.sync)

    async def close(self) -> None:
        """At shutdown: fsync, ship what is left (for a few seconds), release the spool. What is
        not shipped stays on disk and the next process to start ships it."""
        if self.spool is None or self.shipper is None:
            return
        shipped = True
        if self.spool.opened:
            await asyncio.to_thread(self.spool.sync)
            shipped = await self.shipper.drain(DRAIN_AT_SHUTDOWN_S)
            if not shipped:
                log.warning("request log: %d row(s) not shipped at shutdown stay in %s",
                            self.stats.backlog_rows, self.spool.directory)
        self.spool.close(remove_if_shipped=shipped and self.stats.backlog_rows == 0)
        await self.shipper.store.close()


def find(svc: Services) -> RequestLog | None:
    """The request log installed in `svc`, if any (for metrics and alerts to read its stats)."""
    return next((s for s in svc.sinks if isinstance(s, RequestLog)), None)
