"""A real Prometheus scrapes a real `modelplex serve --workers 2`; its queries see the whole gateway.
The same gateway evaluates alert rules once across its workers and posts them to a webhook."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from obs_helpers import Receiver, wait_until

from helpers import GATEWAY_KEY, Gateway, Sims, base_config, deployment, free_port, in_ci

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "modelplex-rules.yml"
PRICE = {"input": 1.0, "output": 2.0}


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if in_ci():
            pytest.fail(f"{name} is required in CI (Debian package prometheus)")
        pytest.skip(f"{name} not installed")
    return path


class Prometheus:
    def __init__(self, target: str, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / "prometheus.yml"
        config.write_text(yaml.safe_dump({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "modelplex", "static_configs": [{"targets": [target]}]}],
        }))
        self.log = (tmp / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self._ready, timeout=20, every=0.1)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError("prometheus exited")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def gateway(sims: Sims, tmp_path: Path, receiver: Receiver) -> Iterator[Gateway]:
    deps = [deployment("oa-good", "openai", sims["openai"], "gpt-sim", price=PRICE),
            deployment("oa-flaky", "openai", sims["openai"], "gpt-sim+script=500", price=PRICE),
            deployment("oa-bad", "openai", sims["openai"], "gpt-sim+script=503", price=PRICE),
            deployment("an-good", "anthropic", sims["anthropic"], "claude-sim", price=PRICE)]
    models = [{"name": "good", "deployments": ["oa-good"]},
              {"name": "failover", "deployments": ["oa-flaky", "an-good"]},
              {"name": "broken", "deployments": ["oa-bad"]}]
    config = base_config(
        deps, models,
        routing={"breaker": {"consecutive_failures": 3, "open_s": 2, "max_open_s": 2}},
        observability={"metrics": {"multiprocess_dir": str(tmp_path / "metrics"), "flush_interval_s": 0.2}},
        alerts={"evaluate_every_s": 0.25, "webhooks": [{"name": "test", "url": f"{receiver.url}/hook"}],
                "rules": [{"name": "burst", "kind": "error_rate", "threshold": 0.3, "window_s": 3,
                           "keep_firing_s": 1, "min_requests": 5},
                          {"name": "breaker", "kind": "breaker_open", "threshold": 0, "keep_firing_s": 0,
                           "filters": {"deployment": ["oa-bad"]}}]},
    )
    config["request_log"] = {"enabled": False}
    gw = Gateway(config, tmp_path, workers=2)
    yield gw
    gw.stop()
    log = gw.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log


def send(gw: Gateway, model: str, stream: bool = False) -> int:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": stream}
    resp = httpx.post(f"{gw.url}/v1/chat/completions", json=body, timeout=30,
                      headers={"authorization": f"Bearer {GATEWAY_KEY}"})
    return resp.status_code


def burst(gw: Gateway, jobs: list[tuple[str, bool]]) -> list[int]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda job: send(gw, *job), jobs))


def workers_with_requests(tmp_path: Path) -> int:
    return len(list((tmp_path / "metrics").glob("counter_*.db")))


def test_prometheus_sees_every_worker_and_alerts_fire_once(
        gateway: Gateway, receiver: Receiver, tmp_path: Path) -> None:
    prom = Prometheus(f"127.0.0.1:{gateway.port}", tmp_path)
    try:
        wait_until(lambda: prom.value("up") == 1, timeout=20, every=0.25)  # scraping before traffic
        check_series(prom, gateway, tmp_path)
    finally:
        prom.stop()
    check_alerts(gateway, receiver)


def check_series(prom: Prometheus, gateway: Gateway, tmp_path: Path) -> None:
    jobs = [("good", False)] * 16 + [("good", True)] * 8 + [("failover", False)] * 6 + [("nope", False)] * 2
    statuses = burst(gateway, jobs)
    assert statuses.count(200) == 30 and statuses.count(404) == 2
    sent = len(jobs)
    for _ in range(10):  # both workers must have served some: the sums below span processes
        if workers_with_requests(tmp_path) >= 2:
            break
        burst(gateway, [("good", False)] * 8)
        sent += 8
        time.sleep(0.3)
    wait_until(lambda: workers_with_requests(tmp_path) >= 2, timeout=5)
    wait_until(lambda: prom.value("sum(modelplex_requests_total)") == sent, timeout=20, every=0.25)
    by_model = {r["metric"]["model"]: float(r["value"][1])
                for r in prom.query("sum by (model) (modelplex_requests_total)")}
    assert by_model["unknown"] == 2 and by_model["failover"] == 6
    assert by_model["good"] == sent - 8
    assert prom.query('{__name__=~"modelplex_.+", model="nope"}') == []
    # failover: first attempts at oa-flaky fail and fall back to an-good, until its breaker opens
    # and an-good is tried first
    assert prom.value('sum(modelplex_attempts_total{outcome="ok", deployment="an-good"})') == 6
    assert (prom.value('sum(modelplex_attempts_total{kind="fallback", deployment="an-good"})') or 0) >= 1
    assert (prom.value('sum(modelplex_attempts_total{deployment="oa-flaky", outcome="upstream_server_error"})')
            or 0) >= 3
    assert prom.value('sum(modelplex_requests_total{error="model_not_found", error_kind="client"})') == 2
    assert prom.value('sum(modelplex_time_to_first_token_seconds_count{model="good"})') == 8
    assert (prom.value('sum(modelplex_tokens_total{kind="output"})') or 0) > 0
    assert (prom.value('sum(modelplex_spend_total{kind="answer"})') or 0) > 0
    states = prom.query("modelplex_breaker_state")
    assert {r["metric"]["deployment"] for r in states} == {"oa-good", "oa-flaky", "oa-bad", "an-good"}
    assert prom.value('sum(modelplex_breaker_state{deployment="oa-good"})') == 2  # one per live worker
    assert prom.value("max(modelplex_build_info)") == 1
    # A rate is 0/0 = NaN until two scrapes of one series differ; a series is born at its first
    # request, so the burst above may sit wholly before the first sample. Keep traffic flowing.
    def flowing(promql: str) -> float | None:
        send(gateway, "good")
        return finite(prom.value(promql))

    p50 = wait_until(lambda: flowing(
        "histogram_quantile(0.5, sum by (le) (rate(modelplex_request_duration_seconds_bucket[1m])))"),
        timeout=30, every=0.25)
    assert 0 < p50 < 5
    cost = wait_until(lambda: flowing("modelplex:cost_per_successful_response:rate5m"), timeout=30, every=0.25)
    assert cost > 0
    assert "nope" not in httpx.get(f"{gateway.url}/metrics").text


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) and value > 0 else None


def check_alerts(gateway: Gateway, receiver: Receiver) -> None:
    # An error burst on a model whose only deployment fails: the breaker opens too. Both alerts
    # fire once and resolve once, although two workers saw the errors.
    statuses = burst(gateway, [("broken", False)] * 12)
    assert set(statuses) <= {502, 503} and len(statuses) == 12

    def notices() -> list[tuple[str, str]]:
        return sorted((p["alert"], p["status"]) for p in receiver.json())

    expected = [("breaker", "firing"), ("breaker", "resolved"), ("burst", "firing"), ("burst", "resolved")]
    wait_until(lambda: notices() == expected, timeout=20, every=0.1)
    time.sleep(1.0)  # nothing more arrives (no second page from the other worker)
    assert notices() == expected
    fired = next(p for p in receiver.json() if p["alert"] == "breaker" and p["status"] == "firing")
    assert fired["labels"] == {"deployment": "oa-bad"}
