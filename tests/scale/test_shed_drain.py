"""Load shedding, graceful drain on SIGTERM, and SIGHUP reload across workers."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

from helpers import GATEWAY_KEY, Gateway, Sims, base_config, deployment

AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}


def ready_status(gw: Gateway) -> int:
    try:
        with urllib.request.urlopen(f"{gw.url}/readyz", timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


async def post(
    session: aiohttp.ClientSession, gw: Gateway, path: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    async with session.post(f"{gw.url}{path}", json=body, headers=headers) as resp:
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.read()


async def test_overload_is_shed_with_503_in_the_callers_dialect(sims: Sims, tmp_path: Path) -> None:
    slow = deployment("slow", "openai", sims["openai"], "gpt-sim+ttft_ms=1000")
    cfg = base_config([slow], [{"name": "m", "deployments": ["slow"]}])
    cfg["server"].update(max_in_flight=2, max_queue=2, queue_timeout_ms=5000)
    gw = Gateway(cfg, tmp_path)
    try:
        oa = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        an = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            calls = [post(session, gw, "/v1/chat/completions", oa, AUTH) for _ in range(9)]
            calls.append(post(session, gw, "/v1/messages", an, {**AUTH, "anthropic-version": "2023-06-01"}))
            results = await asyncio.gather(*calls)
            elapsed = time.monotonic() - started
        ok = [r for r in results if r[0] == 200]
        shed = [r for r in results if r[0] == 503]
        assert len(ok) == 4 and len(shed) == 6  # 2 in flight + 2 queued; the rest refused at once
        assert all(r[1]["retry-after"] == "1" for r in shed)
        bodies = [json.loads(r[2]) for r in shed]
        assert any(b.get("type") == "error" and b["error"]["type"] == "overloaded_error" for b in bodies)
        assert any("error" in b and b["error"]["type"] == "server_error" for b in bodies)
        assert elapsed < 4  # the queued ones were served after the first two, not timed out
        # Health is never shed.
        assert ready_status(gw) == 200
    finally:
        gw.stop()


async def _streams(gw: Gateway, n: int) -> list[tuple[int, str]]:
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as session:

        async def one() -> tuple[int, str]:
            async with session.post(f"{gw.url}/v1/chat/completions", json=body, headers=AUTH) as resp:
                return resp.status, (await resp.read()).decode()

        return await asyncio.gather(*(one() for _ in range(n)))


async def test_sigterm_drains_streams_and_fails_readiness_first(sims: Sims, tmp_path: Path) -> None:
    # Streams of ~2.4 s (40 tokens at 16/s): SIGTERM arrives while all of them are mid-way.
    dep = deployment(
        "s",
        "openai",
        sims["openai"],
        "gpt-sim+tokens_per_s=16+output_tokens=40",
        timeouts={"connect": 2, "first_token": 5, "idle": 5, "total": 20},
    )
    cfg = base_config([dep], [{"name": "m", "deployments": ["s"]}])
    cfg["server"].update(drain_delay_s=1.0, drain_deadline_s=20)
    for workers in (1, 2):
        (tmp_path / f"w{workers}").mkdir()
        gw = Gateway(cfg, tmp_path / f"w{workers}", workers=workers)
        try:
            streams = asyncio.ensure_future(_streams(gw, 6))
            await asyncio.sleep(0.6)
            gw.signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            assert ready_status(gw) == 503  # readiness goes false first, while still serving
            results = await streams
            for status, text in results:
                assert status == 200 and text.rstrip().endswith("data: [DONE]"), text[-200:]
                assert text.count('"content":') >= 40  # the whole answer, not cut by the shutdown
            assert gw.proc.wait(25) is not None
        finally:
            gw.stop()


async def test_sighup_reloads_every_worker(sims: Sims, tmp_path: Path) -> None:
    dep = deployment("d", "openai", sims["openai"], "gpt-sim")
    cfg = base_config([dep], [{"name": "a", "deployments": ["d"]}])
    cfg["server"]["reload"] = False
    gw = Gateway(cfg, tmp_path, workers=2)
    try:
        cfg["models"].append({"name": "b", "deployments": ["d"]})
        gw.write_config(cfg)
        pids = {gw.proc.pid}
        gw.proc.send_signal(signal.SIGHUP)  # to the supervisor only: it forwards to the workers
        body = {"model": "b", "messages": [{"role": "user", "content": "x"}]}
        deadline = time.monotonic() + 5
        async with aiohttp.ClientSession() as session:
            while True:
                statuses = [
                    (await post(session, gw, "/v1/chat/completions", body, AUTH))[0] for _ in range(20)
                ]
                if statuses == [200] * 20:
                    break  # new connections land on both workers: both reloaded
                assert time.monotonic() < deadline, statuses
                await asyncio.sleep(0.2)
        assert gw.proc.poll() is None and gw.proc.pid in pids  # nothing was restarted
        assert "Terminated child process" not in gw.log()
    finally:
        gw.stop()
