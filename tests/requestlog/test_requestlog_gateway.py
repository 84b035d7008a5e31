"""The request log through a real gateway process: one row per request with every field the issue
names, prompts redacted, no key anywhere on disk, feedback stored, the dashboard API behind the
admin key."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from helpers import ADMIN_KEY, GATEWAY_KEY, Gateway, Sims, base_config, deployment

PRICE_OA = {"input": 0.5, "output": 1.5}
PRICE_AN = {"input": 3.0, "output": 15.0}


def gateway_config(sims: Sims, **request_log: Any) -> dict[str, Any]:
    deps = [
        deployment("oa-dep", "openai", sims["openai"], "gpt-sim", price=PRICE_OA),
        deployment("an-dep", "anthropic", sims["anthropic"], "claude-sim", price=PRICE_AN),
        deployment("bad-dep", "openai", sims["openai"], "gpt-sim+script=500", price=PRICE_OA),
    ]
    models = [{"name": "oa", "deployments": ["oa-dep"]},
              {"name": "an", "deployments": ["an-dep"]},
              {"name": "fo", "deployments": ["bad-dep"], "fallbacks": ["an"]}]
    routes = [{"name": "auto", "default": "oa", "baseline": "an",
               "rules": [{"name": "hard", "when": {"task": "analysis"}, "model": "an"}]}]
    cfg = base_config(deps, models, routes=routes, request_log={"ship_interval_ms": 50, **request_log})
    cfg["routing"] = {"retry": {"max_attempts_per_deployment": 1}}
    return cfg


def rows(db: Path) -> dict[str, dict[str, Any]]:
    if not db.exists():
        return {}
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return {r["request_id"]: dict(r) for r in conn.execute("SELECT * FROM request_log")}
    except sqlite3.OperationalError:
        return {}
    finally:
        conn.close()


def wait_rows(db: Path, ids: set[str], timeout: float = 10.0) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        got = rows(db)
        if ids <= got.keys() or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


@pytest.fixture
def gw(sims: Sims, tmp_path: Path) -> Iterator[Gateway]:
    g = Gateway(gateway_config(sims, store_prompts=True), tmp_path)
    yield g
    g.stop()


def post(url: str, body: dict[str, Any], key: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"authorization": f"Bearer {key}", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_one_row_per_request_with_every_field(gw: Gateway, tmp_path: Path) -> None:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
    ids: dict[str, str] = {}
    r = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Order 1234 for jane@example.com, key sk-abcdefghijkl"}],
        extra_headers={"x-modelplex-tags": "batch,nightly"})
    ids["plain"] = r.headers["x-modelplex-request-id"]
    r = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Order 98 for  jane@example.com, key sk-abcdefghijkl"}],
        extra_headers={"x-modelplex-task": "analysis"})
    ids["analysis"] = r.headers["x-modelplex-request-id"]
    with client.chat.completions.with_streaming_response.create(
            model="oa", stream=True, messages=[{"role": "user", "content": "stream please"}]) as s:
        ids["stream"] = s.headers["x-modelplex-request-id"]
        s.read()
    r = client.chat.completions.with_raw_response.create(model="fo", messages=[{"role": "user", "content": "x"}])
    ids["failover"] = r.headers["x-modelplex-request-id"]
    try:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    except openai.NotFoundError as exc:
        ids["error"] = exc.response.headers["x-modelplex-request-id"]
    status, body = post(f"{gw.url}/v1/feedback", {"request_id": ids["plain"], "score": 0.75}, GATEWAY_KEY)
    assert status == 202, body
    assert post(f"{gw.url}/v1/feedback", {"request_id": ids["plain"], "score": 1}, "wrong")[0] == 401
    assert post(f"{gw.url}/v1/feedback", {"request_id": ids["plain"]}, GATEWAY_KEY)[0] == 400

    db = tmp_path / "modelplex-requests.db"
    got = wait_rows(db, set(ids.values()))
    assert set(ids.values()) <= got.keys(), gw.log()
    plain, analysis, stream = got[ids["plain"]], got[ids["analysis"]], got[ids["stream"]]
    failover, error = got[ids["failover"]], got[ids["error"]]

    assert plain["route"] == "auto" and plain["model"] == "oa" and plain["deployment"] == "oa-dep"
    assert plain["provider"] == "openai" and plain["key_name"] == "test" and plain["team"] == "testers"
    assert plain["status"] == 200 and plain["error_class"] is None and plain["stream"] == 0
    assert json.loads(plain["tags"]) == ["batch", "nightly"]
    assert plain["input_tokens"] > 0 and plain["output_tokens"] > 0
    assert plain["cost_micro"] > 0 and plain["counterfactual_micro"] > plain["cost_micro"]
    assert plain["latency_ms"] > 0 and plain["currency"] == "EUR"
    # the same template with other numbers and spacing: the same fingerprint
    assert plain["fingerprint"] == analysis["fingerprint"] and len(plain["fingerprint"]) == 16
    assert "[email]" in plain["prompt"] and "[key]" in plain["prompt"] and "jane@" not in plain["prompt"]
    assert analysis["task"] == "analysis" and analysis["model"] == "an" and analysis["provider"] == "anthropic"
    assert analysis["route_reason"]
    assert stream["stream"] == 1 and stream["ttft_ms"] is not None and stream["ttft_ms"] <= stream["latency_ms"]
    attempts = json.loads(failover["attempts"])
    assert [a["deployment"] for a in attempts] == ["bad-dep", "an-dep"]
    assert attempts[0]["outcome"] != "ok" and attempts[1]["answer"] is True
    assert failover["failover_from"] == "openai" and failover["failover_ms"] is not None
    assert failover["attempt_count"] == 2 and failover["status"] == 200
    assert error["status"] == 404 and error["error_class"] == "model_not_found" and error["attempt_count"] == 0

    conn = sqlite3.connect(db)
    assert conn.execute("SELECT score FROM request_feedback WHERE request_id = ?", (ids["plain"],)).fetchone() == (0.75,)
    conn.close()
    # No key, gateway or upstream, anywhere the log writes.
    for path in [db, *tmp_path.joinpath("modelplex-spool").rglob("*")]:
        if path.is_file():
            data = path.read_bytes()
            assert GATEWAY_KEY.encode() not in data and b"sim-upstream-key" not in data, path


def test_dashboard_is_behind_the_admin_key(gw: Gateway) -> None:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
    client.chat.completions.create(model="oa", messages=[{"role": "user", "content": "hi"}])
    for path in ("/dashboard", "/dashboard/app.js", "/dashboard/api/live"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(gw.url + path, timeout=5)
        assert info.value.code == 401 and "Basic" in info.value.headers["www-authenticate"]
        bad = urllib.request.Request(gw.url + path, headers={"authorization": f"Bearer {GATEWAY_KEY}"})
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(bad, timeout=5)
    basic = base64.b64encode(f"admin:{ADMIN_KEY}".encode()).decode()
    page = urllib.request.Request(gw.url + "/dashboard", headers={"authorization": f"Basic {basic}"})
    with urllib.request.urlopen(page, timeout=5) as r:
        assert r.status == 200 and b"modelplex" in r.read()
        assert "default-src 'none'" in r.headers["content-security-policy"]
    api = urllib.request.Request(gw.url + "/dashboard/api/live", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    with urllib.request.urlopen(api, timeout=5) as r:
        data = json.loads(r.read())
    assert sum(data["traffic"]["requests"]) >= 1
    assert {b["deployment"] for b in data["breakers"]} == {"oa-dep", "an-dep", "bad-dep"}
    assert data["request_log"]["rows_spooled"] >= 1
