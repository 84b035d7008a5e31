"""Three gateway processes behind nginx, sharing real Redis and PostgreSQL: limits and budgets hold
globally, a breaker opened by one replica's failures is respected by the others, a revoked key is
refused by all, and server-sent events pass through the balancer as they are produced.

Every request goes through nginx (round robin). nginx's access log names the replica that served
each request; each replica also tags its upstream requests (`x-replica`), so the simulator's log
tells which replica sent what upstream.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import pytest
import redis
from lb import TAG_HEADER, Nginx

from helpers import ADMIN_KEY, GATEWAY_KEY, Gateway, Sims, base_config, deployment, services_up
from modelplex.simulator.core import SimRequest

REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
REPLICAS = 3
KEYS = {
    "rpm": "sk-nx-rpm-00000000000001",
    "concurrency": "sk-nx-concurrency-000001",
    "budget": "sk-nx-budget-00000000001",
}
RPM = 60
CONCURRENCY = 3
BUDGET_EUR = 0.05  # five requests at 0.01 EUR (10 output tokens at 1,000 EUR per 1M)
BREAKER_FAILURES = 3
PROPAGATION_S = 1.0  # a replica polls the shared breaker state every 0.25 s; slack for a busy machine
REVOCATION_S = 5.0  # gateway keys are cached for 2 s in each replica
BAD = "nx-bad+script=503"
SLOW = "nx-slow+ttft_ms=2000"


@dataclass
class Cluster:
    nginx: Nginx
    gateways: list[Gateway]
    sims: Sims
    schema: str
    prefix: str
    by_upstream: dict[str, int] = field(default_factory=dict)  # "127.0.0.1:port" -> replica index

    @property
    def url(self) -> str:
        return self.nginx.url

    def replicas(self, tag: str, status: int | None = None, expect: int | None = None) -> Counter[int]:
        """Requests with this tag that nginx finished, by the replica that served them. nginx logs a
        request after its response is sent: with `expect`, wait (briefly) until that many are logged."""
        deadline = time.monotonic() + 2.0
        while True:
            counts = Counter(self.by_upstream[s.upstream] for s in self.nginx.served(tag)
                             if status is None or s.status == status)
            if expect is None or sum(counts.values()) >= expect or time.monotonic() > deadline:
                return counts
            time.sleep(0.05)


def replica_config(sims: Sims, i: int, prefix: str, schema: str) -> dict[str, Any]:
    sim = sims["openai"]
    tag = {"x-replica": str(i)}
    price = {"input": 0, "output": 1000, "currency": "EUR"}
    # Replica 0 alone cannot reach the primary (say, a bad network path): only its requests fail.
    primary = BAD if i == 0 else "nx-good"
    deps = [
        deployment("priced", "openai", sim, "gpt-sim", price=price, headers=tag),
        deployment("slow", "openai", sim, SLOW, headers=tag),
        deployment("primary", "openai", sim, primary, headers=tag),
        deployment("backup", "openai", sim, "nx-backup", headers=tag),
        deployment("streamer", "openai", sim, "nx-stream+tokens_per_s=20+output_tokens=30", headers=tag),
    ]
    models = [
        {"name": "m", "deployments": ["priced"]},
        {"name": "slow", "deployments": ["slow"]},
        {"name": "brk", "deployments": ["primary"], "fallbacks": ["brk-fb"]},
        {"name": "brk-fb", "deployments": ["backup"]},
        {"name": "s", "deployments": ["streamer"]},
    ]
    cfg = base_config(deps, models)
    cfg["keys"] += [
        {"name": "rpm", "key": KEYS["rpm"], "rpm": RPM},
        {"name": "concurrency", "key": KEYS["concurrency"], "concurrency": CONCURRENCY},
        {"name": "budget", "key": KEYS["budget"]},
    ]
    cfg["budgets"] = [{"scope": "key", "name": "budget", "period": "day", "amount": BUDGET_EUR}]
    cfg["admission"] = {"default_max_output_tokens": 10}
    cfg["routing"] = {
        "retry": {"max_attempts_per_deployment": 1},
        "breaker": {"consecutive_failures": BREAKER_FAILURES, "open_s": 30, "max_open_s": 60},
    }
    cfg["storage"] = {"redis_url": REDIS_URL, "redis_prefix": prefix,
                      "postgres_dsn": POSTGRES_DSN, "postgres_schema": schema}
    cfg["server"]["key_hmac_secret"] = "nginx-cluster-shared-secret"
    cfg["request_log"] = {"enabled": False}
    return cfg


@pytest.fixture(scope="module")
def cluster(sims: Sims, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    services_up()
    tag = uuid.uuid4().hex[:10]
    schema, prefix = f"mpx_nx_{tag}", f"mpx-test-nx-{tag}:"
    tmp = tmp_path_factory.mktemp("nginx-cluster")
    gateways: list[Gateway] = []
    nginx: Nginx | None = None
    try:
        for i in range(REPLICAS):
            gateways.append(Gateway(replica_config(sims, i, prefix, schema), tmp, name=f"replica{i}"))
        upstreams = [f"127.0.0.1:{g.port}" for g in gateways]
        (tmp / "nginx").mkdir()
        nginx = Nginx(upstreams, tmp / "nginx")
        yield Cluster(nginx, gateways, sims, schema, prefix, {u: i for i, u in enumerate(upstreams)})
    finally:
        if nginx is not None:
            nginx.stop()
        for g in gateways:
            g.stop()
        _cleanup(schema, prefix)


def _cleanup(schema: str, prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()

    async def drop() -> None:
        conn = await asyncpg.connect(POSTGRES_DSN)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()

    asyncio.run(drop())


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


async def send(cluster: Cluster, key: str, n: int, body: dict[str, Any], tag: str,
               concurrency: int = 50) -> list[Reply]:
    """n chat completions through nginx, `concurrency` at a time, each with the tag header."""
    sem = asyncio.Semaphore(concurrency)
    headers = {"authorization": f"Bearer {key}", TAG_HEADER: tag}
    async with aiohttp.ClientSession() as session:

        async def one() -> Reply:
            async with (sem, session.post(f"{cluster.url}/v1/chat/completions", json=body,
                                          headers=headers) as resp):
                data = await resp.read()
                return Reply(resp.status, {k.lower(): v for k, v in resp.headers.items()}, data)

        return await asyncio.gather(*(one() for _ in range(n)))


async def admin(cluster: Cluster, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    async with aiohttp.ClientSession() as session, session.request(
        method, f"{cluster.url}{path}", json=body, headers={"authorization": f"Bearer {ADMIN_KEY}"}
    ) as resp:
        assert resp.status in (200, 201), await resp.text()
        return await resp.json()


def ask(model: str = "m", max_tokens: int | None = 10) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


def upstream_sent(sims: Sims, model: str) -> list[SimRequest]:
    return [r for r in sims["openai"].state.log if r.model == model]


def replica_of(record: SimRequest) -> str:
    return {k.lower(): v for k, v in record.headers.items()}.get("x-replica", "?")


def new_tag() -> str:
    return uuid.uuid4().hex


async def test_rpm_limit_holds_across_replicas(cluster: Cluster) -> None:
    tag = new_tag()
    started = time.monotonic()
    replies = await send(cluster, KEYS["rpm"], 5 * RPM, ask(), tag)
    assert time.monotonic() - started < 60  # all within one minute window
    statuses = Counter(r.status for r in replies)
    assert set(statuses) <= {200, 429}, statuses
    assert RPM * 0.95 <= statuses[200] <= RPM, statuses  # held, and not starved by disagreement
    refused = next(r for r in replies if r.status == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-requests"] == str(RPM)
    # Every replica admitted some of them and refused some: the count is global, not per replica.
    assert set(cluster.replicas(tag, 200)) == set(range(REPLICAS))
    assert set(cluster.replicas(tag, 429)) == set(range(REPLICAS))


def max_overlap(records: list[SimRequest]) -> int:
    """The most requests in progress at one time."""
    events = sorted([(r.at, 1) for r in records] + [(r.ended or r.at, -1) for r in records])
    current = peak = 0
    for _, delta in events:
        current += delta
        peak = max(peak, current)
    return peak


async def test_concurrency_limit_holds_across_replicas(cluster: Cluster) -> None:
    tag = new_tag()
    replies = await send(cluster, KEYS["concurrency"], 10 * CONCURRENCY, ask("slow"), tag)
    statuses = Counter(r.status for r in replies)
    assert set(statuses) <= {200, 429}, statuses
    assert statuses[200] >= CONCURRENCY
    sent = upstream_sent(cluster.sims, SLOW)
    assert all(r.ended is not None for r in sent)
    # Never more than the limit upstream at once, although they came through three replicas.
    assert max_overlap(sent) <= CONCURRENCY
    assert set(cluster.replicas(tag, 429)) == set(range(REPLICAS))


def cost_micro(reply: Reply) -> int:
    amount, currency = reply.headers["x-modelplex-cost"].split()
    assert currency == "EUR"
    return int(Decimal(amount) * 1_000_000)


async def test_budget_never_exceeded_across_replicas(cluster: Cluster) -> None:
    tag = new_tag()
    replies = await send(cluster, KEYS["budget"], 60, ask(), tag, concurrency=60)
    admitted = [r for r in replies if r.status == 200]
    refused = [r for r in replies if r.status == 429]
    assert len(admitted) + len(refused) == 60
    spent = sum(cost_micro(r) for r in admitted)
    assert spent <= int(BUDGET_EUR * 1_000_000)  # never over, whichever replica admitted
    assert len(admitted) == 5 and spent == int(BUDGET_EUR * 1_000_000)  # and nothing left unused
    assert "x-modelplex-budget" in refused[0].headers
    assert len(cluster.replicas(tag, 429)) == REPLICAS


async def test_breaker_opened_by_one_replica_is_respected_by_all(cluster: Cluster) -> None:
    sims = cluster.sims
    # Sequential requests, round robin: replicas 1 and 2 are answered by the primary; replica 0
    # fails on it (and falls back to the backup) until its breaker opens.
    tag = new_tag()
    for _ in range(10 * BREAKER_FAILURES):
        [reply] = await send(cluster, GATEWAY_KEY, 1, ask("brk", None), tag)
        assert reply.status == 200
        if len(upstream_sent(sims, BAD)) >= BREAKER_FAILURES:
            break
    assert len(upstream_sent(sims, BAD)) == BREAKER_FAILURES
    good = upstream_sent(sims, "nx-good")
    assert {replica_of(r) for r in good} == {"1", "2"}  # the others were using the primary
    assert all(r.outcome == "ok" for r in good)
    await asyncio.sleep(PROPAGATION_S)
    mark = len(sims["openai"].state.log)
    tag = new_tag()
    replies = await send(cluster, GATEWAY_KEY, 30, ask("brk", None), tag, concurrency=5)
    assert [r.status for r in replies] == [200] * 30
    assert {r.headers["x-modelplex-deployment"] for r in replies} == {"backup"}
    assert cluster.replicas(tag, 200, expect=30) == Counter(dict.fromkeys(range(REPLICAS), 10))
    after = sims["openai"].state.log[mark:]
    # No replica sends to the primary any more: 1 and 2 never failed on it themselves.
    assert [r for r in after if r.model in ("nx-good", BAD)] == []
    assert {replica_of(r) for r in after} == {"0", "1", "2"}
    for gw in cluster.gateways:  # (read straight from each replica: what it believes)
        async with aiohttp.ClientSession() as session, session.get(
            f"{gw.url}/admin/health", headers={"authorization": f"Bearer {ADMIN_KEY}"}
        ) as resp:
            health = (await resp.json())["deployments"]["primary"]
        assert health["breaker"] == "open", health


async def test_revoked_key_is_refused_by_every_replica(cluster: Cluster) -> None:
    created = await admin(cluster, "POST", "/admin/keys", {"name": f"temp-{new_tag()[:8]}"})
    key = created["key"]
    tag = new_tag()
    replies = await send(cluster, key, 3 * REPLICAS, ask(), tag, concurrency=1)
    assert [r.status for r in replies] == [200] * (3 * REPLICAS)
    assert set(cluster.replicas(tag, 200)) == set(range(REPLICAS))  # each replica has it cached
    await admin(cluster, "POST", f"/admin/keys/{created['id']}/revoke")
    revoked = time.monotonic()
    while True:
        tag = new_tag()
        replies = await send(cluster, key, 3 * REPLICAS, ask(), tag, concurrency=1)
        if all(r.status == 401 for r in replies):
            break
        assert time.monotonic() - revoked < REVOCATION_S, [r.status for r in replies]
        await asyncio.sleep(0.2)
    assert cluster.replicas(tag, 401) == Counter(dict.fromkeys(range(REPLICAS), 3))
    body = json.loads(replies[0].body)
    assert body["error"]["code"] == "invalid_api_key", body


async def test_streams_pass_through_the_balancer_unbuffered(cluster: Cluster) -> None:
    body = {"model": "s", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    headers = {"authorization": f"Bearer {GATEWAY_KEY}", TAG_HEADER: new_tag()}
    async with aiohttp.ClientSession() as session, session.post(
        f"{cluster.url}/v1/chat/completions", json=body, headers=headers
    ) as resp:
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        started = time.monotonic()
        first: float | None = None
        text = b""
        async for chunk in resp.content.iter_any():
            if first is None and b'"content":' in chunk:
                first = time.monotonic() - started
            text += chunk
        total = time.monotonic() - started
    assert text.rstrip().endswith(b"data: [DONE]")
    assert text.count(b'"content":') >= 30
    # 30 tokens at 20/s take 1.5 s: the first arrives long before the end, not all at once.
    assert first is not None and total - first > 0.8, (first, total)

