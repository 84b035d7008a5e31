"""The request log loses nothing: under load, the PostgreSQL store is cut off for 30 s and comes
back, and the gateway process is SIGKILLed and restarted in the middle of it; afterwards every
answered request has exactly one row. A poison row lands in the dead-letter file and the rest of
its batch is stored.

The outage is a TCP proxy between the gateway and PostgreSQL that closes every connection and
stops listening (connection refused), exactly what the gateway sees when the server stops; it
spares the shared PostgreSQL that other work on this machine uses.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from rl_servers import POSTGRES_DSN

from helpers import ADMIN_KEY, GATEWAY_KEY, Gateway, LoopThread, Sims, base_config, deployment, free_port
from modelplex.config.requestlog import RequestLog as Settings
from modelplex.observability.requestlog_row import Row
from modelplex.observability.requestlog_ship import LogStats, Shipper
from modelplex.observability.requestlog_spool import Spool
from modelplex.observability.requestlog_store import PostgresLogStore

OUTAGE_S = 30.0


class Proxy:
    """127.0.0.1:<port> -> PostgreSQL; `cut` closes every connection and the listening socket."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.target = host, port
        self.port = free_port()
        self.server: asyncio.base_events.Server | None = None
        self.conns: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in list(self.conns):
            w.transport.abort()
        self.conns.clear()
        self.server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(self.host, self.target)
        except OSError:
            writer.close()
            return
        self.conns |= {writer, up_w}

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                w.transport.abort()

        await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        self.conns -= {writer, up_w}


class Load:
    """Threads sending chat requests to whichever gateway is current; every answer's id is kept."""

    def __init__(self, threads: int = 3) -> None:
        self.url: str | None = None
        self.answered: list[str] = []
        self.failed = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self.lock = threading.Lock()

    def _run(self) -> None:
        body = json.dumps({"model": "oa", "messages": [{"role": "user", "content": "count to 3"}]})
        headers = {"authorization": f"Bearer {GATEWAY_KEY}", "content-type": "application/json"}
        while not self.stop.is_set():
            url = self.url
            if url is None:
                time.sleep(0.05)
                continue
            host, port = url.removeprefix("http://").split(":")
            try:
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                conn.request("POST", "/v1/chat/completions", body, headers)
                resp = conn.getresponse()
                resp.read()
                rid = resp.getheader("x-modelplex-request-id")
                conn.close()
            except OSError:
                with self.lock:
                    self.failed += 1
                time.sleep(0.05)
                continue
            if rid:
                with self.lock:
                    self.answered.append(rid)
            time.sleep(0.004)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)


def live(gw: Gateway) -> dict[str, Any]:
    basic = base64.b64encode(f"x:{ADMIN_KEY}".encode()).decode()
    req = urllib.request.Request(gw.url + "/dashboard/api/live", headers={"authorization": f"Basic {basic}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        data: dict[str, Any] = json.loads(r.read())
        return data


async def stored_ids(schema: str) -> list[str]:
    conn = await asyncpg.connect(POSTGRES_DSN, server_settings={"search_path": schema})
    try:
        return [r[0] for r in await conn.fetch("SELECT request_id FROM request_log")]
    except asyncpg.UndefinedTableError:
        return []
    finally:
        await conn.close()


def test_postgres_outage_and_sigkill_lose_nothing(sims: Sims, loop_thread: LoopThread, tmp_path: Path,
                                                  pg_schema: str) -> None:
    pg_host, pg_port = "127.0.0.1", int(POSTGRES_DSN.rsplit(":", 1)[1].split("/")[0])
    proxy = Proxy(pg_host, pg_port)
    loop_thread.run(proxy.start())
    dsn = f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
    cfg = base_config([deployment("oa-dep", "openai", sims["openai"], "gpt-sim", price={"input": 1, "output": 2})],
                      [{"name": "oa", "deployments": ["oa-dep"]}],
                      request_log={"store": "postgres", "postgres_dsn": dsn, "postgres_schema": pg_schema,
                                   "ship_interval_ms": 50, "retry_max_s": 1.0, "fsync_interval_ms": 50})
    gw = Gateway(cfg, tmp_path, workers=2, name="gw1")
    load = Load()
    load.url = gw.url
    load.start()
    gw2: Gateway | None = None
    try:
        time.sleep(2.0)
        before_cut = len(load.answered)
        loop_thread.run(proxy.cut())
        cut_at = time.monotonic()
        time.sleep(6.0)
        stats = live(gw)["request_log"]
        assert stats["store_up"] is False and stats["backlog_rows"] > 0, stats
        # SIGKILL the whole gateway (master and workers) with rows unshipped, then start another.
        load.url = None
        gw.signal(signal.SIGKILL)
        gw.proc.wait(10)
        gw2 = Gateway(cfg, tmp_path, workers=2, name="gw2")
        load.url = gw2.url
        time.sleep(max(OUTAGE_S - (time.monotonic() - cut_at), 0))
        loop_thread.run(proxy.start())
        time.sleep(3.0)
    finally:
        load.finish()
    answered = set(load.answered)
    assert len(answered) == len(load.answered) and before_cut > 0 and len(answered) > before_cut + 100
    deadline = time.monotonic() + 40
    ids: list[str] = []
    while time.monotonic() < deadline:
        ids = loop_thread.run(stored_ids(pg_schema))
        if answered <= set(ids):
            break
        time.sleep(0.5)
    try:
        missing = answered - set(ids)
        assert not missing, f"{len(missing)} answered request(s) without a row, e.g. {sorted(missing)[:3]}"
        assert len(ids) == len(set(ids))  # one row per request id
        assert not (tmp_path / "modelplex-requests.dead.jsonl").exists()
    finally:
        assert gw2 is not None
        gw2.stop()


async def test_postgres_poison_row_is_dead_lettered_and_its_batch_stored(tmp_path: Path, pg_schema: str) -> None:
    from test_spool_ship import row  # the same row factory

    settings = Settings(batch_rows=50, retention_days=None)
    spool = Spool(tmp_path / "spool", settings.segment_bytes)
    store = PostgresLogStore(POSTGRES_DSN, pg_schema)
    shipper = Shipper(spool, store, tmp_path / "dead.jsonl", settings, LogStats())
    good = [row(i) for i in range(20)]
    # PostgreSQL refuses a NUL character in jsonb (and in text): a real poison row.
    poison = row(99, tags=["bad\u0000tag"])
    enc = __import__("msgspec").json.Encoder().encode
    for r in [*good[:10], poison, *good[10:]]:
        spool.append(enc(r) + b"\n")
    while await shipper.ship_once():
        pass
    await store.close()
    assert sorted(await stored_ids(pg_schema)) == [r.request_id for r in good]
    dead = [json.loads(x) for x in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert len(dead) == 1 and dead[0]["record"]["request_id"] == "req-000099"
    assert isinstance(Row, type)
