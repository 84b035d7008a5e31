"""Orchestration under load: a real `modelplex serve` (one worker), the simulated providers in a
process of their own (sims.py) and this load generator in a third, so no two share an event loop.

Scenarios (each against a fresh gateway; primary: OpenAI format, fallback: Anthropic format with
prefill, so a cut stream can be continued):
  faults  the primary returns 20 % 5xx, 5 % 429, 5 % stalls (half before the first byte, half
          mid-stream) and 2 % mid-stream cuts; the fallback is healthy. 200 clients, half of them
          streaming, each thinking a while (--think) between requests. Every answer is checked
          against what the simulators would send.
  outage  the same load; the primary goes down (503) for a while, then comes back. Attempts are
          counted from the simulators' request logs; the breaker state is read from /admin/health.
  hedge   streaming only, a primary whose TTFT p95 is 2 s: once without hedging, once with it.
Results and how to read them: RESULTS.md.

.venv/bin/python benchmarks/orchestration/bench.py [--scenario all|faults|outage|hedge] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from client import KEY, Result, closed_loop, get_json, post_json

HERE = Path(__file__).resolve().parent
ADMIN = "sk-bench-admin-0001"
TIMEOUTS = {"connect": 1.0, "first_token": 1.5, "idle": 1.0, "total": 5.0}
PREFIX = {"faults": "mix", "outage": "out", "hedge": "hedge"}  # scenario -> its providers in sims.yaml


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(max(int(q * len(ordered) + 0.999999) - 1, 0), len(ordered) - 1)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sims:
    """The simulator process."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "sims.py"), str(config)],
                                     stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.proc.stdout is not None
        self.providers: dict[str, dict[str, Any]] = json.loads(self.proc.stdout.readline())

    def url(self, name: str) -> str:
        return str(self.providers[name]["url"])

    async def log(self, name: str, model: str | None = None) -> list[dict[str, Any]]:
        """The provider's request log; `at` on this process's monotonic clock."""
        started = float(self.providers[name]["started"])
        rows = await get_json(f"{self.url(name)}/_sim/requests")
        return [{**r, "at": started + r["at"]} for r in rows if model is None or r["model"] == model]

    async def reset(self) -> None:
        for name in self.providers:
            await post_json(f"{self.url(name)}/_sim/reset", {})

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(10)


class Gateway:
    """`modelplex serve --workers 1` on a config of its own."""

    def __init__(self, config: dict[str, Any], tmp: Path) -> None:
        self.port = config["server"]["port"]
        self.url = f"http://127.0.0.1:{self.port}"
        path = tmp / "modelplex.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = tmp / "gateway.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelplex", "serve", "--config", str(path), "--workers", "1"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        raise RuntimeError(f"gateway not ready:\n{self.log_path.read_text()}")

    async def breaker(self) -> str:
        data = await get_json(f"{self.url}/admin/health", {"Authorization": f"Bearer {ADMIN}"})
        return str(data["deployments"]["primary"]["breaker"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


def gateway_config(sims: Sims, scenario: str, tmp: Path, hedge: bool = False,
                   timeouts: dict[str, float] | None = None) -> dict[str, Any]:
    t, prefix = timeouts or TIMEOUTS, PREFIX[scenario]
    return {
        "server": {"host": "127.0.0.1", "port": _free_port(), "admin_key": ADMIN, "reload": False,
                   "log_level": "warning", "default_deadline_ms": 30000},
        "keys": [{"name": "bench", "key": KEY, "team": "bench"}],
        "storage": {"sqlite_path": str(tmp / "modelplex.db")},
        "deployments": [
            {"name": "primary", "provider": "openai", "model": f"{prefix}-primary",
             "base_url": f"{sims.url(f'{prefix}-primary')}/v1", "api_key": "sim-key", "timeouts": t},
            {"name": "fallback", "provider": "anthropic", "model": f"{prefix}-fallback",
             "base_url": sims.url("fallback"), "api_key": "sim-key", "timeouts": t,
             "capabilities": {"prefill": True}},
        ],
        "models": [{"name": "chat", "deployments": ["primary"], "fallbacks": ["chat-fallback"]},
                   {"name": "chat-fallback", "deployments": ["fallback"]}],
        # Everything else at its defaults: retry, breaker, hedge delay (observed p95) and budget.
        "routing": {"continuation": True, "hedge": {"enabled": hedge}},
    }


@dataclass
class Run:
    scenario: str
    sims: Sims
    tmp: Path
    args: argparse.Namespace

    def gateway(self, **kw: Any) -> Gateway:
        path = self.tmp / f"{self.scenario}-{len(list(self.tmp.iterdir()))}"
        path.mkdir()
        return Gateway(gateway_config(self.sims, self.scenario, path, **kw), path)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def _failover(results: list[Result]) -> dict[str, Any]:
    values = [r.failover_ms for r in results if r.failover_ms is not None]
    slow = Counter(f"{'stream' if r.stream else 'non-stream'}, {r.attempts} attempts"
                   for r in results if r.failover_ms is not None and r.failover_ms >= 2000)
    return {"count": len(values), "p50_ms": pct(values, 0.5), "p95_ms": pct(values, 0.95),
            "p99_ms": pct(values, 0.99), "max_ms": max(values) if values else None,
            "over_2s": dict(slow.most_common())}


def _per_bucket(times: list[float], start: float, seconds: float, width: float) -> list[int]:
    counts = Counter(int((t - start) // width) for t in times if t >= start)
    return [counts.get(i, 0) for i in range(int(seconds // width) + 1)]


# --- scenarios -----------------------------------------------------------------------------------


async def faults(run: Run) -> dict[str, Any]:
    await run.sims.reset()
    gw = run.gateway()
    try:
        start = time.monotonic()
        results = await closed_loop(gw.url, "chat", "faults", run.args.clients,
                                    stop=lambda n: n >= run.args.requests, streaming=lambda c: c % 2 == 1,
                                    think=run.args.think)
        elapsed = time.monotonic() - start
    finally:
        gw.stop()
    primary = await run.sims.log("mix-primary")
    fallback = await run.sims.log("fallback", "mix-fallback")
    ok = [r for r in results if r.ok]
    resumed = sum(1 for r in fallback if json.loads(r["body"])["messages"][-1]["role"] == "assistant")
    return {
        "requests": len(results), "streamed": sum(r.stream for r in results), "seconds": round(elapsed, 1),
        "requests_per_s": round(len(results) / elapsed, 1),
        "succeeded": len(ok), "success_pct": round(100 * len(ok) / len(results), 3),
        "failed": len(results) - len(ok),
        "failures": [f"{r.status} {r.error}" for r in results if not r.ok][:20],
        "truncated_as_success": sum(1 for r in ok if not r.whole),
        "answered_by": dict(Counter(r.deployment for r in ok)),
        "latency_p50_ms": _ms(pct([r.done - r.sent for r in ok], 0.5)),
        "latency_p99_ms": _ms(pct([r.done - r.sent for r in ok], 0.99)),
        "failover": _failover(results),
        "primary_outcomes": dict(Counter(r["outcome"] for r in primary).most_common()),
        "primary_attempts_per_5s": _per_bucket([r["at"] for r in primary], start, elapsed, 5.0),
        "fallback_attempts": len(fallback), "continuations": resumed,
        "upstream_attempts_per_request": round((len(primary) + len(fallback)) / len(results), 3),
    }


async def outage(run: Run) -> dict[str, Any]:
    await run.sims.reset()
    gw = run.gateway()
    a = run.args
    states: list[tuple[float, str]] = []
    stopping = False
    marks: dict[str, float] = {}
    try:
        await gw.breaker()  # builds the admin API before the clock matters

        async def watch() -> None:
            while not stopping:
                state = await gw.breaker()
                states.append((time.monotonic(), state))
                await asyncio.sleep(0.02)

        async def control() -> None:
            nonlocal stopping
            await asyncio.sleep(a.warmup)
            marks["down"] = time.monotonic()
            await post_json(f"{run.sims.url('out-primary')}/_sim/down", {"status": 503})
            await asyncio.sleep(a.outage)
            marks["up"] = time.monotonic()
            await post_json(f"{run.sims.url('out-primary')}/_sim/up", {})
            await asyncio.sleep(a.recovery)
            stopping = True

        loop = closed_loop(gw.url, "chat", "outage", a.clients, stop=lambda n: stopping,
                           streaming=lambda c: c % 2 == 1, think=a.think)
        results, _, _ = await asyncio.gather(loop, watch(), control())
    finally:
        gw.stop()
    primary = [r["at"] for r in await run.sims.log("out-primary")]
    fallback = [r["at"] for r in await run.sims.log("fallback", "out-fallback")]
    return summarise_outage(results, states, marks["down"], marks["up"], primary, fallback)


def _window(results: list[Result], primary: list[float], fallback: list[float], start: float,
            end: float) -> dict[str, Any]:
    sent = [r for r in results if start <= r.sent < end]
    p = sum(1 for t in primary if start <= t < end)
    f = sum(1 for t in fallback if start <= t < end)
    n = len(sent)
    return {"seconds": round(end - start, 3), "client_requests": n, "lost": sum(1 for r in sent if not r.ok),
            "primary_attempts": p, "fallback_attempts": f,
            "primary_per_request": round(p / n, 4) if n else None,
            "all_upstream_per_request": round((p + f) / n, 4) if n else None}


def summarise_outage(results: list[Result], states: list[tuple[float, str]], down: float, up: float,
                     primary: list[float], fallback: list[float]) -> dict[str, Any]:
    opened = next((t for t, s in states if t >= down and s == "open"), None)
    closed = next((t for t, s in states if t >= up and s == "closed"), None)
    during = [r for r in results if down <= r.sent < up]
    first_fallback = min((r.done for r in results if r.sent >= down and r.ok and r.deployment == "fallback"),
                         default=None)
    back = min((r.done for r in results if r.sent >= up and r.ok and r.deployment == "primary"), default=None)
    changes = [(round(t - down, 3), st) for i, (t, st) in enumerate(states)
               if i == 0 or states[i - 1][1] != st]
    per_second = Counter(int(t - down) for t in primary if down <= t < up)
    return {
        "requests": len(results), "lost_during_outage": sum(1 for r in during if not r.ok),
        "lost_overall": sum(1 for r in results if not r.ok),
        "truncated_as_success": sum(1 for r in results if r.ok and not r.whole),
        "breaker_open_after_s": round(opened - down, 3) if opened else None,
        "whole_outage": _window(results, primary, fallback, down, up),
        "before_breaker_open": _window(results, primary, fallback, down, opened) if opened else None,
        "breaker_open": _window(results, primary, fallback, opened, up) if opened else None,
        "breaker_changes_s": changes,
        "primary_attempts_per_second_of_outage": [per_second.get(i, 0) for i in range(int(up - down) + 1)],
        "time_to_first_fallback_s": round(first_fallback - down, 3) if first_fallback else None,
        "failover": _failover(during),
        "breaker_closed_after_return_s": round(closed - up, 3) if closed else None,
        "back_on_primary_after_s": round(back - up, 3) if back else None,
    }


async def hedge(run: Run) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # First-token timeout far above the primary's tail: the hedge, not a timeout, must act.
    slow = {**TIMEOUTS, "first_token": 15.0, "total": 30.0}
    for hedged in (False, True):
        await run.sims.reset()
        gw = run.gateway(hedge=hedged, timeouts=slow)
        try:
            results = await closed_loop(gw.url, "chat", f"hedge-{hedged}", run.args.hedge_clients,
                                        stop=lambda n: n >= run.args.hedge_requests, streaming=lambda c: True,
                                        think=run.args.hedge_think)
        finally:
            gw.stop()
        attempts = len(await run.sims.log("hedge-primary"))
        attempts += len(await run.sims.log("fallback", "hedge-fallback"))
        measured = sorted(results, key=lambda r: r.sent)[run.args.hedge_warmup:]
        ttft = [r.ttft for r in measured if r.ok and r.ttft is not None]
        out["on" if hedged else "off"] = {
            "requests": len(results), "failed": sum(1 for r in results if not r.ok),
            "truncated_as_success": sum(1 for r in results if r.ok and not r.whole),
            "measured": len(ttft), "ttft_p50_ms": _ms(pct(ttft, 0.5)), "ttft_p95_ms": _ms(pct(ttft, 0.95)),
            "ttft_p99_ms": _ms(pct(ttft, 0.99)), "upstream_attempts": attempts,
            "extra_attempts_pct": round(100 * (attempts / len(results) - 1), 2),
            "answered_by": dict(Counter(r.deployment for r in results if r.ok)),
        }
    off, on = out["off"]["ttft_p99_ms"], out["on"]["ttft_p99_ms"]
    out["p99_ttft_improvement_pct"] = round(100 * (1 - on / off), 1) if off and on else None
    return out


# --- the verdict ---------------------------------------------------------------------------------


# (scenario, figure, target, path into the scenario's report, test)
TARGETS: list[tuple[str, str, str, tuple[str, ...], Callable[[float], bool]]] = [
    ("faults", "fault mix: requests that succeed (%)", ">= 99.9", ("success_pct",), lambda v: v >= 99.9),
    ("faults", "fault mix: truncated answers presented as success", "0", ("truncated_as_success",),
     lambda v: v == 0),
    ("faults", "fault mix: fallback time p99 (ms)", "< 2000", ("failover", "p99_ms"), lambda v: v < 2000),
    ("outage", "outage: primary attempts / client requests", "<= 1.25",
     ("whole_outage", "primary_per_request"), lambda v: v <= 1.25),
    ("outage", "outage, breaker open: primary attempts / client requests", "<= 1.05",
     ("breaker_open", "primary_per_request"), lambda v: v <= 1.05),
    ("outage", "outage: all upstream attempts / client requests", "<= 1.25",
     ("whole_outage", "all_upstream_per_request"), lambda v: v <= 1.25),
    ("outage", "outage, breaker open: all upstream attempts / client requests", "<= 1.05",
     ("breaker_open", "all_upstream_per_request"), lambda v: v <= 1.05),
    ("outage", "outage: truncated answers presented as success", "0", ("truncated_as_success",),
     lambda v: v == 0),
    ("outage", "outage: fallback time p99 (ms)", "< 2000", ("failover", "p99_ms"), lambda v: v < 2000),
    ("hedge", "hedging: p99 TTFT improvement (%)", ">= 30", ("p99_ttft_improvement_pct",), lambda v: v >= 30),
    ("hedge", "hedging: extra attempts (%)", "<= 5", ("on", "extra_attempts_pct"), lambda v: v <= 5),
]


def targets(report: dict[str, Any]) -> list[tuple[str, str, Any, bool]]:
    rows = []
    for scenario, name, goal, path, met in TARGETS:
        if scenario not in report:
            continue
        value: Any = report[scenario]
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        rows.append((name, goal, value, value is not None and met(value)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=["all", "faults", "outage", "hedge"], default="all")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--think", type=float, default=2.0,
                        help="mean seconds a client waits between its requests (0: always one in flight)")
    parser.add_argument("--requests", type=int, default=20000, help="fault mix: requests in all")
    parser.add_argument("--warmup", type=float, default=5.0, help="outage: seconds before the primary fails")
    parser.add_argument("--outage", type=float, default=20.0, help="outage: seconds the primary stays down")
    parser.add_argument("--recovery", type=float, default=20.0, help="outage: seconds after it is back")
    parser.add_argument("--hedge-clients", type=int, default=100)
    parser.add_argument("--hedge-requests", type=int, default=4000)
    parser.add_argument("--hedge-think", type=float, default=1.0)
    parser.add_argument("--hedge-warmup", type=int, default=200, help="requests left out of the TTFT figures")
    parser.add_argument("--out", type=Path, default=None, help="write the full report as JSON here")
    parser.add_argument("--keep", type=Path, default=None, help="keep gateway configs and logs here")
    args = parser.parse_args()
    scenarios = ["faults", "outage", "hedge"] if args.scenario == "all" else [args.scenario]
    report: dict[str, Any] = {"command": " ".join(sys.argv), "cpus": os.cpu_count(),
                              "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    sims = Sims(HERE / "sims.yaml")
    try:
        with tempfile.TemporaryDirectory(prefix="modelplex-bench-") as temp:
            tmp = str(args.keep or temp)
            Path(tmp).mkdir(parents=True, exist_ok=True)
            for name in scenarios:
                print(f"running {name} ...", file=sys.stderr, flush=True)
                started = time.monotonic()
                fn = {"faults": faults, "outage": outage, "hedge": hedge}[name]
                report[name] = uvloop.run(fn(Run(name, sims, Path(tmp), args)))
                report[name]["wall_s"] = round(time.monotonic() - started, 1)
                report[name]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        sims.stop()
    print(json.dumps(report, indent=2))
    print("\n| figure | target | result | met |\n|---|---|---|---|")
    for name, goal, value, met in targets(report):
        print(f"| {name} | {goal} | {value} | {'yes' if met else 'NO'} |")
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
