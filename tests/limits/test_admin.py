"""The admin API and virtual keys, end to end on a real gateway process."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from click.testing import CliRunner

from helpers import ADMIN_KEY, GATEWAY_KEY, Gateway, Sims, base_config, deployment
from modelplex.cli import main


def call(
    gw: Gateway, method: str, path: str, body: Any = None, key: str | None = ADMIN_KEY
) -> tuple[int, Any]:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    req = urllib.request.Request(
        f"{gw.url}{path}",
        method=method,
        headers=headers,
        data=json.dumps(body).encode() if body is not None else None,
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def chat(gw: Gateway, key: str, model: str = "oa") -> int:
    try:
        openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0).chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}]
        )
    except openai.APIStatusError as exc:
        return exc.status_code
    return 200


@pytest.fixture(scope="module")
def gw(sims: Sims, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    cfg = base_config(
        [
            deployment("oa-dep", "openai", sims["openai"], "gpt-sim"),
            deployment("oa-dep2", "openai", sims["openai"], "gpt-sim-2"),
        ],
        [{"name": "oa", "deployments": ["oa-dep"]}, {"name": "other", "deployments": ["oa-dep2"]}],
    )
    g = Gateway(cfg, tmp_path_factory.mktemp("admin"))
    yield g
    g.stop()


def test_admin_needs_its_own_credential(gw: Gateway) -> None:
    assert call(gw, "GET", "/admin/keys", key=None)[0] == 401
    assert call(gw, "GET", "/admin/keys", key=GATEWAY_KEY)[0] == 401  # a gateway key is not an admin key
    assert call(gw, "GET", "/admin/keys")[0] == 200


def test_key_lifecycle(gw: Gateway) -> None:
    status, created = call(
        gw,
        "POST",
        "/admin/keys",
        {"name": "app", "team": "research", "models": ["oa"], "metadata": {"owner": "ana"}},
    )
    assert status == 201
    secret, key_id = created["key"], created["id"]
    assert secret.startswith("sk-mpx-") and created["prefix"] == secret[:12]
    # Shown once: never listed or fetched again.
    _, listed = call(gw, "GET", "/admin/keys?team=research")
    assert [k["id"] for k in listed] == [key_id] and "key" not in listed[0]
    assert secret not in json.dumps(listed)
    assert "key" not in call(gw, "GET", f"/admin/keys/{key_id}")[1]
    assert chat(gw, secret) == 200
    assert chat(gw, secret, "other") == 403  # limited to its models
    assert call(gw, "PATCH", f"/admin/keys/{key_id}", {"models": ["oa", "other"]})[0] == 200
    assert chat(gw, secret, "other") == 200
    assert call(gw, "POST", f"/admin/keys/{key_id}/revoke")[1]["revoked_at"]
    assert chat(gw, secret) == 401
    assert call(gw, "GET", "/admin/keys/key_nope")[0] == 404


def test_expired_key_is_refused(gw: Gateway) -> None:
    _, created = call(gw, "POST", "/admin/keys", {"name": "old", "expires_at": "2020-01-01T00:00:00Z"})
    assert chat(gw, created["key"]) == 401


def test_bad_admin_input(gw: Gateway) -> None:
    assert call(gw, "POST", "/admin/keys", {"name": ""})[0] == 422
    assert call(gw, "POST", "/admin/keys", {"name": "x", "models": ["nope"]})[0] == 422
    assert call(gw, "POST", "/admin/keys", {"name": "x", "surprise": 1})[0] == 422
    assert call(gw, "POST", "/admin/keys", {"name": "x", "budgets": [{"amount": -1}]})[0] == 422


def test_teams_and_users(gw: Gateway) -> None:
    assert (
        call(
            gw,
            "PUT",
            "/admin/teams/research",
            {"name": "research", "limits": {"rpm": 10}, "budgets": [{"amount": 5, "period": "day"}]},
        )[0]
        == 200
    )
    teams = call(gw, "GET", "/admin/teams")[1]
    assert teams[0]["limits"]["rpm"] == 10 and teams[0]["budgets"][0]["amount"] == 5.0
    assert call(gw, "PUT", "/admin/users/ana", {"id": "ana", "team": "research"})[0] == 200
    assert [u["id"] for u in call(gw, "GET", "/admin/users?team=research")[1]] == ["ana"]
    assert call(gw, "DELETE", "/admin/users/ana")[0] == 204


def test_openapi_documents_the_admin_api(gw: Gateway) -> None:
    status, spec = call(gw, "GET", "/admin/openapi.json", key=None)
    assert status == 200
    assert {
        "/admin/keys",
        "/admin/keys/{key_id}",
        "/admin/keys/{key_id}/revoke",
        "/admin/teams/{name}",
        "/admin/users/{user_id}",
        "/admin/health",
        "/admin/budgets",
    } <= set(spec["paths"])


def test_health_shows_breakers(gw: Gateway) -> None:
    status, health = call(gw, "GET", "/admin/health")
    assert status == 200 and health["deployments"]["oa-dep"]["breaker"] == "closed"


def test_keys_cli(gw: Gateway) -> None:
    runner = CliRunner(env={"MODELPLEX_URL": gw.url, "MODELPLEX_ADMIN_KEY": ADMIN_KEY})
    result = runner.invoke(
        main, ["keys", "create", "--name", "cli", "--team", "ops", "--rpm", "60", "--budget", "10/month"]
    )
    assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    assert created["limits"]["rpm"] == 60 and created["budgets"][0]["period"] == "month"
    assert chat(gw, created["key"]) == 200
    listed = json.loads(runner.invoke(main, ["keys", "list", "--team", "ops"]).output)
    assert [k["name"] for k in listed] == ["cli"]
    assert runner.invoke(main, ["keys", "revoke", created["id"]]).exit_code == 0
    assert chat(gw, created["key"]) == 401
    bad = CliRunner(env={"MODELPLEX_URL": gw.url, "MODELPLEX_ADMIN_KEY": "wrong"}).invoke(
        main, ["keys", "list"]
    )
    assert bad.exit_code == 1 and "401" in bad.output


def test_key_limits_apply(gw: Gateway) -> None:
    _, created = call(gw, "POST", "/admin/keys", {"name": "slow", "limits": {"rpm": 2}})
    codes = [chat(gw, created["key"]) for _ in range(4)]
    assert codes == [200, 200, 429, 429]
    req = urllib.request.Request(
        f"{gw.url}/v1/chat/completions",
        method="POST",
        data=json.dumps({"model": "oa", "messages": [{"role": "user", "content": "x"}]}).encode(),
        headers={"authorization": f"Bearer {created['key']}", "content-type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=5)
    assert exc.value.code == 429
    assert int(exc.value.headers["retry-after"]) >= 1
    assert exc.value.headers["x-ratelimit-limit-requests"] == "2"
    body = json.loads(exc.value.read())
    assert body["error"]["type"] == "rate_limit_error" and "key" in body["error"]["message"]
    time.sleep(0.01)
