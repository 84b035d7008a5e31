"""`modelplex demo`: simulated providers, the gateway on the embedded defaults, a traffic mix, a summary.

Everything runs in this one process and event loop: two simulated providers (OpenAI and
Anthropic wire formats, with realistic latency and a few injected failures), the gateway, and a
client sending a mix of OpenAI- and Anthropic-dialect requests, streaming and not, with tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from modelplex.app import build_app
from modelplex.config.schema import Config
from modelplex.context import RequestContext
from modelplex.providers.registry import load_registry
from modelplex.serve import services_for
from modelplex.simulator.server import ProviderSpec, SimProvider

DEMO_KEY = "sk-modelplex-demo-key"


def demo_config(openai_url: str, anthropic_url: str, port: int, state_dir: str) -> dict[str, Any]:
    sim_openai = {
        "provider": "openai",
        "base_url": f"{openai_url}/v1",
        "api_key": "sim-key",
        "timeouts": {"connect": 2, "first_token": 5, "idle": 5, "total": 30},
    }
    sim_anthropic = {
        "provider": "anthropic",
        "base_url": anthropic_url,
        "api_key": "sim-key",
        "timeouts": {"connect": 2, "first_token": 5, "idle": 5, "total": 30},
    }
    return {
        "server": {"host": "127.0.0.1", "port": port, "reload": False},
        # The embedded default: keys, counters and the ledger in one SQLite file (here a temp dir).
        "storage": {"backend": "sqlite", "sqlite_path": f"{state_dir}/modelplex-demo.db"},
        "request_log": {"sqlite_path": f"{state_dir}/requests.db", "spool_dir": f"{state_dir}/spool",
                        "dead_letter_path": f"{state_dir}/dead-letter.jsonl"},
        "keys": [{"name": "demo", "key": DEMO_KEY, "team": "demo"}],
        "deployments": [
            {
                "name": "openai-mini",
                "model": "gpt-4o-mini",
                **sim_openai,
                "price": {"input": 0.15, "output": 0.60, "cached_input": 0.075},
                "capabilities": {"context_window": 128000},
            },
            {
                "name": "openai-4o",
                "model": "gpt-4o",
                **sim_openai,
                "price": {"input": 2.50, "output": 10.00, "cached_input": 1.25},
                "capabilities": {"context_window": 128000},
            },
            {
                "name": "anthropic-haiku",
                "model": "claude-haiku",
                **sim_anthropic,
                "price": {"input": 0.80, "output": 4.00, "cached_input": 0.08, "cache_write": 1.00},
                "capabilities": {"context_window": 200000, "json_schema": False, "prefill": True},
            },
            {
                "name": "anthropic-sonnet",
                "model": "claude-sonnet",
                **sim_anthropic,
                "price": {"input": 3.00, "output": 15.00, "cached_input": 0.30, "cache_write": 3.75},
                "capabilities": {"context_window": 200000, "json_schema": False, "prefill": True},
            },
        ],
        "models": [
            {
                "name": "fast",
                "deployments": ["openai-mini"],
                "fallbacks": ["fast-backup"],
                "description": "cheap and quick; falls back to Anthropic",
            },
            {"name": "fast-backup", "deployments": ["anthropic-haiku"]},
            {
                "name": "smart",
                "deployments": ["anthropic-sonnet"],
                "fallbacks": ["smart-backup"],
                "description": "the premium model; falls back to OpenAI",
            },
            {"name": "smart-backup", "deployments": ["openai-4o"]},
        ],
    }


@dataclass
class Collector:
    """Gateway-side record of every finished request, for the summary."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def __call__(self, ctx: RequestContext, end: float) -> None:
        dep = ctx.answered_by
        self.rows.append(
            {
                "provider": dep.target.provider if dep else "-",
                "deployment": dep.name if dep else "-",
                "status": ctx.status if not ctx.aborted else 499,
                "latency": end - ctx.started,
                "attempts": len(ctx.attempts),
                "cost": ctx.report_cost_micro,
                "stream": ctx.stream,
            }
        )


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def _requests(base: str) -> list[tuple[str, str, dict[str, Any], dict[str, str]]]:
    """(label, url, body, headers) of the traffic mix."""
    oa = {"Authorization": f"Bearer {DEMO_KEY}"}
    an = {"x-api-key": DEMO_KEY, "anthropic-version": "2023-06-01"}
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    q = "Summarise the benefits of a gateway in front of many LLM providers."
    return [
        (
            "openai fast",
            f"{base}/v1/chat/completions",
            {"model": "fast", "messages": [{"role": "user", "content": q}]},
            oa,
        ),
        (
            "openai fast stream",
            f"{base}/v1/chat/completions",
            {
                "model": "fast",
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": q}],
            },
            oa,
        ),
        (
            "openai smart tools",
            f"{base}/v1/chat/completions",
            {
                "model": "smart",
                "tools": [tool],
                "messages": [{"role": "user", "content": "Weather in Paris?"}],
            },
            oa,
        ),
        (
            "anthropic smart",
            f"{base}/v1/messages",
            {"model": "smart", "max_tokens": 200, "messages": [{"role": "user", "content": q}]},
            an,
        ),
        (
            "anthropic fast stream",
            f"{base}/v1/messages",
            {
                "model": "fast",
                "max_tokens": 200,
                "stream": True,
                "messages": [{"role": "user", "content": q}],
            },
            an,
        ),
    ]


async def _traffic(base: str, duration: float, console: Console) -> int:
    mix = _requests(base)
    rng = random.Random(7)
    sent = 0
    deadline = time.monotonic() + duration
    total = max(int(duration * 12), 1)
    columns = (
        TextColumn("[bold]demo traffic"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}"),
        TimeRemainingColumn(),
    )
    async with aiohttp.ClientSession() as session:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("traffic", total=total, last="")

            async def one() -> None:
                label, url, body, headers = rng.choice(mix)
                async with session.post(url, json=body, headers=headers) as resp:
                    await resp.read()
                    dep = resp.headers.get("x-modelplex-deployment", "-")
                    progress.update(task, advance=1, last=f"{label} → {resp.status} via {dep}")

            async def worker() -> None:
                nonlocal sent
                while time.monotonic() < deadline and sent < total:
                    sent += 1  # counted before the await, so the workers never overshoot the total
                    with contextlib.suppress(aiohttp.ClientError):
                        await one()

            workers = [asyncio.create_task(worker()) for _ in range(4)]
            await asyncio.gather(*workers)
    return sent


def _summary(console: Console, rows: list[dict[str, Any]], currency: str) -> None:
    ok = [r for r in rows if r["status"] < 400]
    lat = [r["latency"] * 1000 for r in ok]
    table = Table(title="modelplex demo: what the gateway saw")
    for col in ("requests", "errors", "fallbacks", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(col, justify="right")
    table.add_row(
        str(len(rows)),
        str(len(rows) - len(ok)),
        str(sum(1 for r in rows if r["attempts"] > 1)),
        f"{_pct(lat, 0.5):.0f}",
        f"{_pct(lat, 0.95):.0f}",
        f"{_pct(lat, 0.99):.0f}",
    )
    console.print(table)
    per = Table(title="per provider (answered requests)")
    for col in ("provider", "requests", f"cost {currency}", f"cost per request {currency}"):
        per.add_column(col, justify="right")
    providers = sorted({r["provider"] for r in ok})
    for p in providers:
        mine = [r for r in ok if r["provider"] == p]
        micro = sum(r["cost"] or 0 for r in mine)
        per.add_row(p, str(len(mine)), f"{micro / 1e6:.6f}", f"{micro / 1e6 / max(len(mine), 1):.8f}")
    console.print(per)


async def run_demo(port: int, duration: float, traffic: bool, exit_after: bool) -> None:
    console = Console()
    if port and not _free(port):
        console.print(f"[red]port {port} is in use[/red]; run `modelplex demo --port 0` for any free port")
        return
    sims = [
        await SimProvider(
            ProviderSpec(
                name="openai",
                kind="openai",
                default={
                    "ttft_ms": {"p50": 60, "p95": 250},
                    "tokens_per_s": 400,
                    "output_tokens": 24,
                    "rates": {"500": 0.05, "429": 0.02},
                    "retry_after": "1",
                },
            )
        ).start(),
        await SimProvider(
            ProviderSpec(
                name="anthropic",
                kind="anthropic",
                seed=1,
                default={
                    "ttft_ms": {"p50": 90, "p95": 300},
                    "tokens_per_s": 300,
                    "output_tokens": 24,
                    "cached_input_tokens": 8,
                    "rates": {"529": 0.03},
                },
            )
        ).start(),
    ]
    if port == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    state = tempfile.TemporaryDirectory(prefix="modelplex-demo-")
    config = Config.model_validate(demo_config(sims[0].url, sims[1].url, port, state.name))
    svc = services_for(config, load_registry(), None, {})
    collector = Collector()
    svc.sinks.append(collector)
    server = uvicorn.Server(
        uvicorn.Config(
            build_app(svc),
            host="127.0.0.1",
            port=port,
            loop="asyncio",
            lifespan="on",
            access_log=False,
            log_level="warning",
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving
            return
        await asyncio.sleep(0.02)
    base = f"http://127.0.0.1:{port}"
    console.print(
        f"[bold green]modelplex[/bold green] gateway on {base} over simulated OpenAI ({sims[0].url}) "
        f"and Anthropic ({sims[1].url}); models: fast, smart"
    )
    try:
        if traffic:
            await _traffic(base, duration, console)
            _summary(console, collector.rows, svc.meter.currency)
        console.print(
            f"\n[bold]Gateway:[/bold] {base}/v1    [bold]Key:[/bold] {DEMO_KEY}\n"
            f"  curl {base}/v1/chat/completions -H 'Authorization: Bearer {DEMO_KEY}' "
            f"-H 'content-type: application/json' "
            f"-d '{json.dumps({'model': 'fast', 'messages': [{'role': 'user', 'content': 'hi'}]})}'\n"
            f"  OpenAI SDK:    OpenAI(base_url='{base}/v1', api_key='{DEMO_KEY}')\n"
            f"  Anthropic SDK: Anthropic(base_url='{base}', api_key='{DEMO_KEY}')"
        )
        if not exit_after:
            console.print("serving until Ctrl-C")
            await serving
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        for sim in sims:
            await sim.stop()
        state.cleanup()
