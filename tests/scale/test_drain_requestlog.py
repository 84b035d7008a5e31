"""SIGTERM during streaming load: no stream is cut before the drain deadline, and after the process
has exited every answered request has exactly one row in the request log (SQLite store)."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from helpers import GATEWAY_KEY, Gateway, Sims, base_config, deployment

AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}
TOKENS = 30  # at 20 tokens/s: 1.5 s per stream
CLIENTS = 12
LOAD_BEFORE_SIGTERM_S = 2.0
DRAIN_DELAY_S = 1.5


@dataclass
class Outcome:
    request_id: str
    status: int
    complete: bool
    content_events: int
    started: float  # monotonic, when the request was sent


@dataclass
class Load:
    answered: list[Outcome] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # the error that stopped each client
    stop: bool = False


async def client(url: str, load: Load, stream: bool) -> None:
    """One caller: request after request (a new connection each) until one cannot be made."""
    body = {"model": "m", "stream": stream, "messages": [{"role": "user", "content": "x"}]}
    timeout = aiohttp.ClientTimeout(total=40)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True), timeout=timeout) as s:
        while not load.stop:
            started = time.monotonic()
            try:
                async with s.post(f"{url}/v1/chat/completions", json=body, headers=AUTH) as resp:
                    text = (await resp.read()).decode()
                    rid = resp.headers.get("x-modelplex-request-id", "")
                    complete = text.rstrip().endswith("data: [DONE]") if stream else '"usage"' in text
                    load.answered.append(Outcome(rid, resp.status, complete, text.count('"content":'), started))
            except (aiohttp.ClientError, TimeoutError) as exc:
                # After the drain delay the gateway stops accepting: that is how a caller learns.
                load.failures.append(type(exc).__name__)
                return


def log_rows(db: Path) -> list[tuple[str, int]]:
    conn = sqlite3.connect(db)
    try:
        return [(r[0], r[1]) for r in conn.execute("SELECT request_id, status FROM request_log")]
    finally:
        conn.close()


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_under_streaming_load_keeps_every_stream_and_every_log_row(
    sims: Sims, tmp_path: Path, workers: int
) -> None:
    dep = deployment("s", "openai", sims["openai"], f"gpt-sim+tokens_per_s=20+output_tokens={TOKENS}")
    cfg = base_config([dep], [{"name": "m", "deployments": ["s"]}])
    cfg["server"].update(drain_delay_s=DRAIN_DELAY_S, drain_deadline_s=20)
    db = tmp_path / "requests.db"
    cfg["request_log"] = {"sqlite_path": str(db), "spool_dir": str(tmp_path / "spool"), "ship_interval_ms": 50}
    gw = Gateway(cfg, tmp_path, workers=workers)
    load = Load()
    try:
        # Mostly streams; a quarter plain completions.
        clients = [asyncio.ensure_future(client(gw.url, load, stream=i % 4 != 3)) for i in range(CLIENTS)]
        await asyncio.sleep(LOAD_BEFORE_SIGTERM_S)
        gw.signal(signal.SIGTERM)
        sigterm = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*clients), 60)
        exit_code = await asyncio.to_thread(gw.proc.wait, 40)
        exited = time.monotonic()
    finally:
        load.stop = True
        gw.stop()
    # uvicorn re-raises a captured SIGTERM once it has shut down cleanly (one worker: -15); the
    # multi-worker supervisor exits 0.
    assert exit_code in (0, -signal.SIGTERM), gw.log_path.read_text(errors="replace")[-3000:]
    assert "Application shutdown complete" in gw.log_path.read_text(errors="replace")
    answered = load.answered
    assert len(answered) >= CLIENTS * 2
    assert all(o.status == 200 for o in answered), Counter(o.status for o in answered)
    # Not one stream was cut: each has the whole answer and its terminator.
    cut = [o for o in answered if not o.complete]
    assert cut == [], cut[:3]
    assert all(o.content_events >= TOKENS for o in answered if o.content_events > 1)
    # During the drain delay the gateway still took new requests; then every client was refused.
    assert any(o.started > sigterm + 0.2 for o in answered)
    assert len(load.failures) == CLIENTS
    assert exited - sigterm < DRAIN_DELAY_S + 20
    # Every answered request has exactly one row, and no row is for a request nobody got.
    rows = log_rows(db)
    per_id = Counter(rid for rid, _ in rows)
    ids = {o.request_id for o in answered}
    assert len(ids) == len(answered) and "" not in ids
    missing = ids - per_id.keys()
    assert not missing, f"{len(missing)} of {len(ids)} answered requests have no log row"
    assert [rid for rid, n in per_id.items() if n != 1] == []
    assert set(per_id) == ids
    assert {status for _, status in rows} == {200}


@pytest.mark.parametrize("workers", [1, 2])
async def test_after_the_drain_delay_new_connections_are_refused_at_once(
    sims: Sims, tmp_path: Path, workers: int
) -> None:
    # A refused connection is one a load balancer can retry on another replica; one accepted and
    # left unanswered until the process exits (the supervisor still listening) is a 502.
    dep = deployment("s", "openai", sims["openai"], "gpt-sim+tokens_per_s=5+output_tokens=30")
    cfg = base_config([dep], [{"name": "m", "deployments": ["s"]}])
    cfg["server"].update(drain_delay_s=0.5, drain_deadline_s=20)
    cfg["request_log"] = {"enabled": False}
    gw = Gateway(cfg, tmp_path, workers=workers)
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:

            async def stream() -> bytes:  # ~6 s: keeps the process draining
                async with s.post(f"{gw.url}/v1/chat/completions", json=body, headers=AUTH) as resp:
                    return await resp.read()

            long = asyncio.ensure_future(stream())
            await asyncio.sleep(0.5)
            gw.signal(signal.SIGTERM)
            await asyncio.sleep(2.0)
            started = time.monotonic()
            with pytest.raises(aiohttp.ClientConnectorError):
                await s.post(f"{gw.url}/v1/chat/completions", json={**body, "stream": False}, headers=AUTH,
                             timeout=aiohttp.ClientTimeout(total=15))
            assert time.monotonic() - started < 1.0
            assert gw.proc.poll() is None  # still draining the stream
            assert (await long).rstrip().endswith(b"data: [DONE]")
    finally:
        gw.stop()
