"""Redis paused mid-run: nothing hangs past the Redis timeout + 100 ms, hard budgets fail closed
with a clear 503, rate limits go local, and limits are global again soon after Redis returns.

A private redis-server is started for this test (pausing the shared one would stall every other
test on the machine); SIGSTOP pauses it exactly as a hung Redis would look to the gateway.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import redis

from helpers import Gateway, Sims, base_config, deployment, free_port, in_ci

REDIS_TIMEOUT_S = 0.25
KEYS = {"limited": "sk-down-limited-000001", "budgeted": "sk-down-budgeted-00001"}


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    binary = shutil.which("redis-server")
    if binary is None:
        if in_ci():
            raise RuntimeError("redis-server is required")
        pytest.skip("redis-server not installed")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path_factory.mktemp("redis")),
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield proc, port
    os.kill(proc.pid, signal.SIGCONT)
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def gw(
    sims: Sims, private_redis: tuple[Any, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    _, port = private_redis
    dep = deployment("d", "openai", sims["openai"], "gpt-sim", price={"input": 1, "output": 2})
    cfg = base_config([dep], [{"name": "m", "deployments": ["d"]}])
    cfg["keys"] = [
        {"name": "limited", "key": KEYS["limited"], "rpm": 1000},
        {"name": "budgeted", "key": KEYS["budgeted"]},
    ]
    cfg["budgets"] = [{"scope": "key", "name": "budgeted", "period": "day", "amount": 100}]
    cfg["storage"] = {"redis_url": f"redis://127.0.0.1:{port}/0", "redis_timeout_s": REDIS_TIMEOUT_S}
    cfg["admission"] = {"store_retry_s": 2.0}
    g = Gateway(cfg, tmp_path_factory.mktemp("down"))
    yield g
    g.stop()


async def call(session: aiohttp.ClientSession, gw: Gateway, key: str) -> tuple[int, float, str]:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    async with session.post(
        f"{gw.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
    ) as resp:
        text = await resp.text()
        return resp.status, float(resp.headers.get("x-modelplex-overhead-ms", "0")), text


async def test_redis_paused(gw: Gateway, private_redis: tuple[subprocess.Popen[bytes], int]) -> None:
    proc, port = private_redis
    async with aiohttp.ClientSession() as session:
        assert (await call(session, gw, KEYS["limited"]))[0] == 200
        assert (await call(session, gw, KEYS["budgeted"]))[0] == 200
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            paused = [await call(session, gw, KEYS[k]) for _ in range(6) for k in ("limited", "budgeted")]
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        resumed_at = time.monotonic()
        limited = paused[0::2]
        budgeted = paused[1::2]
        # Nothing waits on the paused store longer than its timeout (plus 100 ms of everything else).
        assert max(overhead for _, overhead, _ in paused) <= (REDIS_TIMEOUT_S + 0.1) * 1000
        assert all(status == 200 for status, _, _ in limited)  # rate limits: a local share
        assert all(status == 503 for status, _, _ in budgeted)  # hard budgets: closed
        assert "counter store is unreachable" in budgeted[0][2]
        # Once Redis is back, budgets (and with them every limit) go through it again within 10 s.
        while (await call(session, gw, KEYS["budgeted"]))[0] != 200:
            assert time.monotonic() - resumed_at < 10
            await asyncio.sleep(0.25)
        before = sum(1 for _ in redis.Redis(port=port).scan_iter("mpx:*"))
        assert before > 0  # the counters are in Redis again
