"""The dashboard in headless Chromium: after a traffic run it renders every chart with data and
logs no console error; a screenshot is saved to artifacts/dashboard.png.

Chromium is driven over the DevTools protocol (a WebSocket), with the admin key sent as HTTP
Basic auth the way a browser sends it after its login prompt.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest
import websockets

from helpers import ADMIN_KEY, GATEWAY_KEY, ROOT, Gateway, Sims, base_config, deployment, in_ci

CHARTS = ("traffic", "latency", "latency-providers", "errors", "cost", "savings", "pareto")
ARTIFACTS = ROOT / "artifacts"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        if in_ci():
            pytest.fail("chromium is not installed (scripts/system-deps installs it)")
        pytest.skip("chromium is not installed")
    return found


@pytest.fixture
def gw(sims: Sims, tmp_path: Path) -> Iterator[Gateway]:
    deps = [deployment("oa-mini", "openai", sims["openai"], "gpt-sim+ttft_ms=40", price={"input": 0.15, "output": 0.6}),
            deployment("oa-big", "openai", sims["openai"], "gpt-big+ttft_ms=120+rates=500:0.3",
                       price={"input": 2.5, "output": 10}),
            deployment("an-dep", "anthropic", sims["anthropic"], "claude-sim+ttft_ms=80",
                       price={"input": 3, "output": 15})]
    deps.append(deployment("oa-flaky", "openai", sims["openai"], "gpt-flaky+rates=500:0.5",
                           price={"input": 0.15, "output": 0.6}))
    models = [{"name": "mini", "deployments": ["oa-mini"]}, {"name": "flaky", "deployments": ["oa-flaky"]},
              {"name": "big", "deployments": ["oa-big"], "fallbacks": ["claude"]},
              {"name": "claude", "deployments": ["an-dep"]}]
    routes = [{"name": "auto", "default": "mini", "baseline": "claude",
               "rules": [{"name": "analysis", "when": {"task": "analysis"}, "model": "big"}]}]
    cfg = base_config(deps, models, routes=routes)
    cfg["routing"] = {"retry": {"max_attempts_per_deployment": 1}}
    g = Gateway(cfg, tmp_path)
    yield g
    g.stop()


def traffic(url: str, n: int = 90) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=GATEWAY_KEY, max_retries=0)
    tasks = itertools.cycle(["summary", "analysis", "chat", "extraction"])

    def one(i: int) -> None:
        task = next(tasks)
        model = "flaky" if i % 6 == 0 else "auto" if i % 5 else "claude"
        with contextlib.suppress(openai.APIError):
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"{task} #{i % 7} please"}],
                                           extra_headers={"x-modelplex-task": task})

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(one, range(n)))


class DevTools:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        mid = next(self.ids)
        await self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), 20))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result
            self.events.append(msg)

    async def evaluate(self, expression: str) -> Any:
        r = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return r["result"].get("value")

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console.{p['type']}: {[a.get('value', a.get('description')) for a in p.get('args', [])]}")
            elif m == "Runtime.exceptionThrown":
                out.append(f"exception: {p['exceptionDetails'].get('exception', {}).get('description')}")
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
        return out


def start_chromium(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    profile = tmp_path / "chromium-profile"
    proc = subprocess.Popen(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
         "--remote-debugging-address=127.0.0.1", "--window-size=1400,2600", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 20
    port_file = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return proc, int(port_file.read_text().split()[0])
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("chromium did not open its DevTools port")


async def drive(port: int, url: str) -> tuple[dict[str, Any], list[str], bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
        page = next(t for t in json.loads(r.read()) if t["type"] == "page")
    async with websockets.connect(page["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024) as ws:
        dt = DevTools(ws)
        for domain in ("Runtime", "Log", "Page", "Network"):
            await dt.call(f"{domain}.enable")
        basic = base64.b64encode(f"admin:{ADMIN_KEY}".encode()).decode()
        await dt.call("Network.setExtraHTTPHeaders", headers={"Authorization": f"Basic {basic}"})
        await dt.call("Page.navigate", url=url)
        state: dict[str, Any] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = await dt.evaluate(
                "JSON.stringify({renders: window.__dashboard ? window.__dashboard.renders : 0,"
                " error: window.__dashboard ? window.__dashboard.lastError : 'no app',"
                " points: Object.fromEntries([...document.querySelectorAll('.chart')]"
                "   .map(e => [e.id, Number(e.dataset.points || 0)])),"
                " marks: document.querySelectorAll('.chart svg path.series, .chart svg rect.bar').length,"
                " breakers: document.querySelectorAll('#breakers .state').length,"
                " error_rows: [...document.querySelectorAll('#errors-table tr')]"
                "   .filter(r => r.cells[2] && Number(r.cells[2].textContent) > 0).length})") or "{}"
            state = json.loads(state) if isinstance(state, str) else state
            if state.get("renders", 0) >= 2 and all(state["points"].get(c, 0) > 0 for c in CHARTS):
                break
            await asyncio.sleep(0.5)
        shot = await dt.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return state, dt.errors(), base64.b64decode(shot["data"])


def test_dashboard_renders_charts_from_a_traffic_run(gw: Gateway, tmp_path: Path) -> None:
    traffic(gw.url)
    proc, port = start_chromium(tmp_path)
    try:
        state, errors, png = asyncio.run(drive(port, f"{gw.url}/dashboard"))
    finally:
        os.killpg(proc.pid, 9)
        proc.wait(10)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "dashboard.png").write_bytes(png)
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    assert state.get("error") is None, state
    assert state["renders"] >= 2, state  # it refreshed on its own
    empty = [c for c in CHARTS if state["points"].get(c, 0) <= 0]
    assert not empty, f"charts without data: {empty} ({state})"
    assert state["marks"] >= 20 and state["breakers"] == 4, state
    assert state["error_rows"] >= 1, state  # the flaky deployment's errors are listed
    assert errors == [], errors
