"""The AWS Lambda entry point: API Gateway HTTP API (v2) events through `modelplex.serverless.handler`
in a process of its own, as a Lambda runtime would call it, against a simulated provider."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
import redis
import yaml

from helpers import GATEWAY_KEY, Sims, base_config, deployment, services_up

pytest.importorskip("mangum")
DRIVER = Path(__file__).with_name("lambda_invoke.py")


def http_api_event(method: str, path: str, body: dict[str, Any] | None = None, key: str = GATEWAY_KEY,
                   base64_body: bool = False) -> dict[str, Any]:
    """An API Gateway HTTP API payload (format version 2.0), as Lambda hands it to a handler."""
    raw = json.dumps(body).encode() if body is not None else None
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "authorization": f"Bearer {key}",
            "content-type": "application/json",
            "host": "abc123.execute-api.eu-west-1.amazonaws.com",
            "user-agent": "test",
            "x-forwarded-for": "203.0.113.7",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7",
                     "userAgent": "test"},
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "29/Nov/2026:10:00:00 +0000",
            "timeEpoch": 1795946400000,
        },
        "isBase64Encoded": base64_body,
    }
    if raw is not None:
        event["body"] = base64.b64encode(raw).decode() if base64_body else raw.decode()
    return event


def invoke(config: dict[str, Any], events: list[dict[str, Any]], tmp: Path) -> list[dict[str, Any]]:
    config_path, events_path = tmp / "lambda.yaml", tmp / "events.json"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    events_path.write_text(json.dumps(events))
    db = [config["request_log"]["sqlite_path"]] if config["request_log"].get("store", "sqlite") == "sqlite" else []
    done = subprocess.run(
        [sys.executable, str(DRIVER), str(events_path), *db], capture_output=True, text=True, timeout=120,
        env={**os.environ, "MODELPLEX_CONFIG": str(config_path)}, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def chat(stream: bool = False) -> dict[str, Any]:
    return {"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hello"}]}


def test_lambda_handler_serves_http_api_events(sims: Sims, tmp_path: Path) -> None:
    dep = deployment("d", "openai", sims["openai"], "gpt-sim+tokens_per_s=200+output_tokens=12",
                     price={"input": 1, "output": 2})
    config = base_config([dep], [{"name": "m", "deployments": ["d"]}])
    config["server"]["reload"] = False
    # On Lambda only /tmp is writable: the spool goes there (tmp_path stands for it here).
    config["storage"] = {"sqlite_path": str(tmp_path / "modelplex.db")}
    config["request_log"] = {"sqlite_path": str(tmp_path / "requests.db"), "spool_dir": str(tmp_path / "spool"),
                             "ship_interval_ms": 10}
    events = [
        http_api_event("POST", "/v1/chat/completions", chat()),
        http_api_event("POST", "/v1/chat/completions", chat(), base64_body=True),
        http_api_event("POST", "/v1/chat/completions", chat(stream=True)),
        http_api_event("POST", "/v1/chat/completions", chat(), key="sk-not-a-key-000000000000"),
        http_api_event("GET", "/healthz"),
    ]
    out = invoke(config, events, tmp_path)
    assert len(out) == len(events)
    # The gateway is built once per cold start, not per invocation.
    assert [o["cold_starts"] for o in out] == [1] * len(events)
    first, second, stream, bad_key, health = (o["response"] for o in out)
    for r in (first, second):
        assert r["statusCode"] == 200, r
        assert r["headers"]["content-type"].startswith("application/json")
        body = json.loads(r["body"])
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["content"]
        assert body["usage"]["completion_tokens"] == 12
        assert r["headers"]["x-modelplex-deployment"] == "d"
        assert r["headers"]["x-modelplex-cost"].endswith("EUR")
    # A stream comes back whole, in one buffered body: API Gateway cannot relay server-sent events.
    assert stream["statusCode"] == 200
    assert stream["headers"]["content-type"].startswith("text/event-stream")
    assert stream["body"].rstrip().endswith("data: [DONE]")
    assert stream["body"].count("chat.completion.chunk") >= 12
    assert bad_key["statusCode"] == 401
    assert json.loads(bad_key["body"])["error"]["code"] == "invalid_api_key"
    assert health["statusCode"] == 200
    # Each invocation's request-log row was stored before the invocation returned (the instance
    # may be frozen, or dropped, right after).
    for i in range(3):
        rid = out[i]["response"]["headers"]["x-modelplex-request-id"]
        assert rid in out[i]["logged"], (i, out[i]["logged"])
    # A warm invocation does not pay for the flush timeout: nothing waited on it.
    assert out[1]["seconds"] < 1.0, [o["seconds"] for o in out]


REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def test_lambda_handler_with_the_recommended_shared_stores(sims: Sims, tmp_path: Path) -> None:
    """Redis counters and PostgreSQL keys, ledger and request log, as docs/scale.md recommends:
    the clients live across invocations on the instance's loop, limits hold, and every row is
    stored by the time the instance stops."""
    services_up()
    tag = uuid.uuid4().hex[:10]
    schema, log_schema, prefix = f"mpx_lambda_{tag}", f"mpx_lambda_log_{tag}", f"mpx-test-lambda-{tag}:"
    dep = deployment("d", "openai", sims["openai"], "gpt-sim", price={"input": 1, "output": 2})
    config = base_config([dep], [{"name": "m", "deployments": ["d"]}])
    config["server"].update(reload=False, key_hmac_secret="lambda-shared-secret")
    config["keys"] = [{"name": "limited", "key": GATEWAY_KEY, "rpm": 3}]
    # A budget: the ledger records budgeted spend (every request's cost is in the request log).
    config["budgets"] = [{"scope": "key", "name": "limited", "period": "month", "amount": 100}]
    config["storage"] = {"redis_url": REDIS_URL, "redis_prefix": prefix, "postgres_dsn": POSTGRES_DSN,
                         "postgres_schema": schema}
    config["request_log"] = {"store": "postgres", "postgres_dsn": POSTGRES_DSN, "postgres_schema": log_schema,
                             "sqlite_path": str(tmp_path / "unused.db"), "spool_dir": str(tmp_path / "spool"),
                             "ship_interval_ms": 10}
    try:
        out = invoke(config, [http_api_event("POST", "/v1/chat/completions", chat()) for _ in range(5)], tmp_path)
        statuses = [o["response"]["statusCode"] for o in out]
        assert statuses == [200, 200, 200, 429, 429]  # the RPM window lives in Redis, across invocations
        ids = [o["response"]["headers"]["x-modelplex-request-id"] for o in out[:3]]

        async def stored() -> tuple[int, int]:
            conn = await asyncpg.connect(POSTGRES_DSN)
            try:
                ledger = await conn.fetchval(
                    f'SELECT COUNT(*) FROM "{schema}".ledger WHERE request_id = ANY($1)', ids)
                logged = await conn.fetchval(
                    f'SELECT COUNT(*) FROM "{log_schema}".request_log WHERE request_id = ANY($1)', ids)
                return int(ledger), int(logged)
            finally:
                await conn.close()

        assert asyncio.run(stored()) == (3, 3)
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
        client.close()

        async def drop() -> None:
            conn = await asyncpg.connect(POSTGRES_DSN)
            for s in (schema, log_schema):
                await conn.execute(f'DROP SCHEMA IF EXISTS "{s}" CASCADE')
            await conn.close()

        asyncio.run(drop())
