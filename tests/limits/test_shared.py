"""Limits and budgets that hold across replicas: 3 gateway processes sharing real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import pytest

from helpers import ADMIN_KEY, Gateway, Sims, base_config, deployment, services_up

REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
KEYS = {
    "rpm": "sk-shared-rpm-0000000001",
    "budget-key": "sk-shared-budget-key-0001",
    "budget-team": "sk-shared-budget-team-001",
    "budget-user": "sk-shared-budget-user-001",
    "budget-nomax": "sk-shared-budget-nomax-01",
    "ledger": "sk-shared-ledger-000000001",
}


class Cluster(list[Gateway]):
    schema: str


@pytest.fixture(scope="module")
def cluster(sims: Sims, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    services_up()
    tag = uuid.uuid4().hex[:10]
    schema = f"mpx_shared_{tag}"
    # 1,000 EUR per 1M output tokens, nothing for input: 10 output tokens cost exactly 0.01 EUR.
    priced = deployment(
        "priced", "openai", sims["openai"], "gpt-sim", price={"input": 0, "output": 1000, "currency": "EUR"}
    )
    cfg = base_config([priced], [{"name": "m", "deployments": ["priced"]}])
    cfg["keys"] = [
        {"name": "rpm", "key": KEYS["rpm"], "rpm": 100},
        {"name": "budget-key", "key": KEYS["budget-key"]},
        {"name": "budget-team", "key": KEYS["budget-team"], "team": "bt"},
        {"name": "budget-user", "key": KEYS["budget-user"], "user": "bu"},
        {"name": "budget-nomax", "key": KEYS["budget-nomax"]},
        {"name": "ledger", "key": KEYS["ledger"]},
    ]
    cfg["budgets"] = [
        {"scope": "key", "name": "budget-key", "period": "day", "amount": 0.05},
        {"scope": "team", "name": "bt", "period": "month", "amount": 0.05},
        {"scope": "user", "name": "bu", "period": "total", "amount": 0.05},
        {"scope": "key", "name": "budget-nomax", "period": "day", "amount": 0.05},
        {"scope": "key", "name": "ledger", "period": "month", "amount": 1000},
    ]
    cfg["admission"] = {"default_max_output_tokens": 10}
    cfg["storage"] = {
        "redis_url": REDIS_URL,
        "redis_prefix": f"mpx-test-{tag}:",
        "postgres_dsn": POSTGRES_DSN,
        "postgres_schema": schema,
    }
    cfg["server"]["key_hmac_secret"] = "shared-secret-for-all-replicas"
    tmp = tmp_path_factory.mktemp("shared")
    gateways = Cluster(Gateway(cfg, tmp, name=f"replica{i}") for i in range(3))
    gateways.schema = schema
    yield gateways
    for g in gateways:
        g.stop()

    async def drop() -> None:
        conn = await asyncpg.connect(POSTGRES_DSN)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()

    asyncio.run(drop())


async def burst(
    gateways: list[Gateway], key: str, n: int, body: dict[str, Any], concurrency: int = 100
) -> list[tuple[int, dict[str, str]]]:
    """n requests spread over the replicas, `concurrency` at a time."""
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> tuple[int, dict[str, str]]:
            gw = gateways[i % len(gateways)]
            async with (
                sem,
                session.post(
                    f"{gw.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
                ) as resp,
            ):
                await resp.read()
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}

        return await asyncio.gather(*(one(i) for i in range(n)))


def ask(max_tokens: int | None = 10) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


def cost_micro(headers: dict[str, str]) -> int:
    amount, currency = headers["x-modelplex-cost"].split()
    assert currency == "EUR"
    return int(Decimal(amount) * 1_000_000)


async def test_rpm_holds_across_replicas(cluster: Cluster) -> None:
    started = time.monotonic()
    results = await burst(cluster, KEYS["rpm"], 1000, ask())
    assert time.monotonic() - started < 60  # all within the one minute
    admitted = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 429]
    assert len(admitted) + len(refused) == 1000
    assert len(admitted) <= 100
    assert len(admitted) >= 95  # and the limit is not starved by the replicas disagreeing
    headers = refused[0][1]
    assert int(headers["retry-after"]) >= 1 and headers["x-ratelimit-limit-requests"] == "100"


@pytest.mark.parametrize("key", ["budget-key", "budget-team", "budget-user", "budget-nomax"])
async def test_budget_never_exceeded_across_replicas(cluster: Cluster, key: str) -> None:
    # Worst case per request 0.01 EUR; 100 released at once against a 0.05 EUR budget.
    results = await burst(cluster, KEYS[key], 100, ask(None if key == "budget-nomax" else 10))
    admitted = [r for r in results if r[0] == 200]
    spent = sum(cost_micro(h) for _, h in admitted)
    assert spent <= 50_000  # never over the budget (max_tokens set, or capped under a hard budget)
    assert len(admitted) == 5 and spent == 50_000  # and no budget left unused
    refusals = [h for status, h in results if status == 429]
    assert len(refusals) == 95 and "x-modelplex-budget" in refusals[0]


async def test_ledger_total_equals_request_costs(cluster: Cluster) -> None:
    results = await burst(cluster, KEYS["ledger"], 30, ask(10), concurrency=10)  # budgeted: ledgered
    answered = [h for status, h in results if status == 200]
    ids = [h["x-modelplex-request-id"] for h in answered]
    await asyncio.sleep(1.5)  # ledger rows are shipped every 0.5 s
    conn = await asyncpg.connect(POSTGRES_DSN)
    try:
        rows = await conn.fetch(
            f'SELECT report_cost_micro FROM "{cluster.schema}".ledger WHERE request_id = ANY($1)', ids
        )
    finally:
        await conn.close()
    assert len(rows) == len(ids)  # one row per answered request, from every replica
    assert sum(r["report_cost_micro"] for r in rows) == sum(cost_micro(h) for h in answered)


async def test_revocation_reaches_every_replica_within_5s(cluster: Cluster) -> None:
    req = urllib.request.Request(
        f"{cluster[0].url}/admin/keys",
        method="POST",
        data=json.dumps({"name": "temp"}).encode(),
        headers={"authorization": f"Bearer {ADMIN_KEY}", "content-type": "application/json"},
    )
    with urllib.request.urlopen(req) as resp:
        created = json.loads(resp.read())
    key = created["key"]
    assert [s for s, _ in await burst(cluster, key, 3, ask())] == [200, 200, 200]
    revoke = urllib.request.Request(
        f"{cluster[1].url}/admin/keys/{created['id']}/revoke",
        method="POST",
        headers={"authorization": f"Bearer {ADMIN_KEY}"},
    )
    urllib.request.urlopen(revoke).read()
    revoked_at = time.monotonic()
    while True:
        statuses = [s for s, _ in await burst(cluster, key, 3, ask())]
        if statuses == [401, 401, 401]:
            break
        assert time.monotonic() - revoked_at < 5, statuses
        await asyncio.sleep(0.2)
