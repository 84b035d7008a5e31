"""Breaker state shared across replicas through Redis: what one gateway process learns by failing,
another acts on within a poll interval, without failing itself.

Two real `modelplex serve` processes (A and B) share one Redis prefix and one simulated primary.
Each tags its upstream requests with its own header, so the simulator log tells who sent what.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import redis
import redis.asyncio

from helpers import ADMIN_KEY, GATEWAY_KEY, Gateway, Sims, base_config, deployment
from modelplex.routing.shared_health import RedisSharedHealth

REDIS_URL = "redis://127.0.0.1:6379/0"
PROPAGATION_S = 0.5  # the poll interval is 0.25 s; a publish is one round trip
FAST = {"connect": 1, "first_token": 2, "idle": 2, "total": 5}


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


pytestmark = pytest.mark.skipif(not _redis_up(), reason="needs Redis on 127.0.0.1:6379")


@pytest.fixture
def prefix() -> Iterator[str]:
    p = f"mpx-test-shb-{uuid.uuid4().hex[:8]}:"
    yield p
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{p}*"):
        client.delete(key)


def _config(sims: Sims, replica: str, upstream: str, prefix: str) -> dict[str, Any]:
    sim = sims["openai"]
    tag = {"x-replica": replica}
    cfg = base_config(
        [deployment("primary", "openai", sim, upstream, timeouts=FAST, headers=tag),
         deployment("backup", "openai", sim, f"{upstream.split('+')[0]}-backup", timeouts=FAST, headers=tag)],
        [{"name": "m", "deployments": ["primary"], "fallbacks": ["m-fb"]},
         {"name": "m-fb", "deployments": ["backup"]}],
    )
    cfg["storage"] = {"redis_url": REDIS_URL, "redis_prefix": prefix}
    cfg["routing"] = {
        "retry": {"max_attempts_per_deployment": 1},
        "breaker": {"consecutive_failures": 3, "open_s": 10, "max_open_s": 20},
    }
    return cfg


@pytest.fixture
def pair(sims: Sims, prefix: str, tmp_path_factory: pytest.TempPathFactory,
         request: pytest.FixtureRequest) -> Iterator[tuple[Gateway, Gateway, str]]:
    upstream: str = request.param
    tmp = tmp_path_factory.mktemp("shared-breaker")
    a = Gateway(_config(sims, "a", upstream, prefix), tmp, name="a")
    try:
        b = Gateway(_config(sims, "b", upstream, prefix), tmp, name="b")
    except Exception:
        a.stop()
        raise
    yield a, b, upstream
    a.stop()
    b.stop()


def ask(gw: Gateway) -> str:
    c = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=10)
    raw = c.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "hi"}])
    return raw.headers["x-modelplex-deployment"]


def health(gw: Gateway) -> dict[str, Any]:
    req = urllib.request.Request(f"{gw.url}/admin/health", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        out: dict[str, Any] = json.loads(resp.read())["deployments"]["primary"]
        return out


def sent_by(sims: Sims, model: str, replica: str) -> list[Any]:
    return [r for r in sims["openai"].state.log
            if r.model == model and {k.lower(): v for k, v in r.headers.items()}.get("x-replica") == replica]


def wait_for(check: Any, timeout: float) -> float:
    """Seconds until check() held (polled every 10 ms), or raise after timeout."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(0.01)
    return time.monotonic() - started


@pytest.mark.parametrize("pair", ["shb+script=ok,503"], indirect=True)
def test_breaker_opened_by_one_replica_stops_the_other(pair: tuple[Gateway, Gateway, str], sims: Sims) -> None:
    a, b, model = pair
    # B uses the primary (it answers), so it would keep sending there on its own.
    assert ask(b) == "primary"
    assert health(b)["breaker"] == "closed"
    # A's three failures open A's breaker: its fourth request does not touch the primary.
    for _ in range(3):
        assert ask(a) == "backup"
    opened = time.monotonic()
    assert len(sent_by(sims, model, "a")) == 3
    assert ask(a) == "backup" and len(sent_by(sims, model, "a")) == 3
    # B learns it from Redis, within the poll interval, without a failure of its own.
    waited = wait_for(lambda: health(b)["breaker"] == "open", timeout=3)
    assert time.monotonic() - opened < PROPAGATION_S + 0.1, f"B saw the opening after {waited:.2f}s"
    for _ in range(5):
        assert ask(b) == "backup"
    mine = sent_by(sims, model, "b")
    assert [r.outcome for r in mine] == ["ok"]  # one answered request before, nothing after


@pytest.mark.parametrize("pair", ["shc+script=429:retry-after=5,ok"], indirect=True)
def test_cooldown_from_429_is_shared(pair: tuple[Gateway, Gateway, str], sims: Sims) -> None:
    a, b, model = pair
    assert health(b)["cooling_down_until"] is None  # (also builds B's admin API before the clock runs)
    assert ask(a) == "backup"  # A's 429 (Retry-After 5 s) cools the primary down
    cooled = time.monotonic()
    wait_for(lambda: health(b)["cooling_down_until"] is not None, timeout=3)
    assert time.monotonic() - cooled < PROPAGATION_S + 0.1
    assert ask(b) == "backup"
    assert sent_by(sims, model, "b") == []  # B never sent to the cooled-down deployment


async def test_publish_only_moves_later_and_expires(prefix: str) -> None:
    t0 = time.time()
    now = [t0]
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    shared = RedisSharedHealth(client, prefix, clock=lambda: now[0])
    try:
        await shared.publish("dep:one", "open", t0 + 10)
        await shared.publish("dep:one", "open", t0 + 5)  # an earlier end never shortens the state
        await shared.publish("dep-2", "cooldown", t0 + 3)
        assert await shared.snapshot() == {("dep:one", "open"): t0 + 10, ("dep-2", "cooldown"): t0 + 3}
        now[0] = t0 + 4  # the next publish drops what has ended
        await shared.publish("dep-3", "open", t0 + 20)
        assert await shared.snapshot() == {("dep:one", "open"): t0 + 10, ("dep-3", "open"): t0 + 20}
        # The hash expires (with a second of slack) when its latest state does.
        assert 19_000 < await client.pttl(f"{prefix}health") <= 21_000
    finally:
        await shared.close()


async def test_snapshot_with_redis_down_raises() -> None:
    shared = RedisSharedHealth.open("redis://127.0.0.1:1/0", "mpx-test-down:", 0.2)
    try:
        with pytest.raises(redis.RedisError):
            await shared.snapshot()
    finally:
        await shared.close()
