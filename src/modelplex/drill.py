"""`modelplex drill`: rehearse a provider outage with your own config, against simulated providers.

The config's routing (models, pools, fallbacks, routes, timeouts, retry and breaker settings) runs
unchanged in an in-process gateway whose deployments point at simulators, one per wire format.
Steady traffic goes to every model with a deployment of the chosen provider; the provider goes
down, then comes back. The report: time to the first answer via a fallback, requests lost, the
failover times the gateway measured, upstream attempts on the failing provider, and the time until
traffic is served by it again. No request leaves the machine and no real credential is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn
from rich.console import Console
from rich.table import Table

from modelplex.config.load import format_loc, load_config
from modelplex.config.schema import Config
from modelplex.providers.base import Adapter
from modelplex.providers.openai import OpenAIAdapter
from modelplex.providers.registry import Registry, load_registry
from modelplex.routing.health import Health
from modelplex.runtime import config_checks
from modelplex.simulator.server import KINDS, ProviderSpec, SimProvider

DRILL_KEY = "sk-modelplex-drill-key"
SIM_KEY = "sim-drill-key"
PLACEHOLDER = "drill-placeholder"
# Realistic but short: the drill is about failover, not model speed.
SIM_BEHAVIOUR: dict[str, Any] = {"ttft_ms": {"p50": 40, "p95": 150}, "tokens_per_s": 400, "output_tokens": 16}
SECRETS = ("api_key", "aws_access_key_id", "aws_secret_access_key", "aws_session_token")
# fault -> (status for /_sim/down, scripted outcome for per-model behaviour)
FAULTS: dict[str, tuple[int, str]] = {"503": (503, "503"), "reset": (0, "reset")}


class DrillError(Exception):
    """The drill cannot run with this config and these options."""


@dataclass(frozen=True)
class Wire:
    """The simulator kind that plays a provider, and the path its base_url needs after the host."""

    kind: str
    path: str = ""


WIRES: dict[str, Wire] = {
    "openai": Wire("openai", "/v1"),
    "anthropic": Wire("anthropic"),
    "gemini": Wire("gemini", "/v1beta"),
    "bedrock": Wire("bedrock"),
    "cohere": Wire("cohere"),
    "mistral": Wire("mistral", "/v1"),
    "azure": Wire("azure"),
}


def wire_for(adapter: Adapter) -> Wire | None:
    wire = WIRES.get(adapter.name)
    if wire is None and isinstance(adapter, OpenAIAdapter):
        wire = WIRES["openai"]  # an OpenAI-compatible vendor speaks OpenAI's wire format
    return wire if wire is not None and wire.kind in KINDS else None


class Placeholders(Mapping[str, str]):
    """The environment, with a stand-in for each variable the config names but is not set."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def __getitem__(self, name: str) -> str:
        return self._env.get(name, PLACEHOLDER)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str)

    def __iter__(self) -> Iterator[str]:
        return iter(self._env)

    def __len__(self) -> int:
        return len(self._env)


@dataclass(frozen=True)
class Options:
    provider: str
    duration: float = 20.0  # seconds the provider stays down
    rps: float = 20.0
    warmup: float = 3.0
    recovery_timeout: float | None = None  # default: breaker max_open_s + 10
    models: tuple[str, ...] = ()  # default: every model with a deployment of the provider
    fault: str = "503"


@dataclass
class Setup:
    """What the drill does with a config: which simulators, which deployments go down, what traffic."""

    wires: dict[str, Wire]  # deployment -> its simulator
    down: list[str]  # deployments of the provider
    upstream: dict[str, str]  # deployment -> upstream model name (base, as the simulator keys it)
    targets: list[str]  # models or routes the traffic asks for
    left_out: list[str] = field(default_factory=list)  # what has no simulator, with why


def prepare(config: Config, registry: Registry, options: Options) -> Setup:
    wires: dict[str, Wire] = {}
    left_out: list[str] = []
    for d in config.deployments:
        wire = wire_for(registry[d.provider])
        if wire is None:
            left_out.append(f"deployment {d.name} (no simulator speaks the format of {d.provider})")
        else:
            wires[d.name] = wire
    providers = sorted({d.provider for d in config.deployments})
    if options.provider not in providers:
        raise DrillError(f"no deployment uses provider {options.provider!r} (in use: {', '.join(providers)})")
    down = [d.name for d in config.deployments if d.provider == options.provider and d.name in wires]
    if not down:
        raise DrillError(f"no simulator speaks the wire format of provider {options.provider!r}")
    targets = list(options.models) or [
        m.name for m in config.models if any(d in down for d in m.deployments)]
    known = {m.name for m in config.models} | {r.name for r in config.routes}
    unknown = [t for t in targets if t not in known]
    if unknown:
        raise DrillError(f"unknown model or route: {', '.join(unknown)}")
    upstream = {d.name: d.model.split("+", 1)[0] for d in config.deployments}
    return Setup(wires=wires, down=down, upstream=upstream, targets=targets, left_out=left_out)


def drill_config(config: Config, setup: Setup, urls: Mapping[str, str], port: int) -> dict[str, Any]:
    """The user's config pointed at the simulators, with nothing that reaches outside: in-memory
    stores, one drill key, no limits, no request log, no alerts or traces."""
    data = config.model_dump(mode="json", exclude_unset=True)
    deployments = []
    for d in data["deployments"]:
        wire = setup.wires.get(d["name"])
        if wire is None:
            continue
        d["base_url"] = urls[wire.kind] + wire.path
        for secret in SECRETS:
            if d.get(secret) is not None:
                d[secret] = SIM_KEY
        deployments.append(d)
    data["deployments"] = deployments
    setup.left_out += _prune(data, {d["name"] for d in deployments})
    server = data.get("server", {})
    data["server"] = {"host": "127.0.0.1", "port": port, "reload": False, "workers": 1, **{
        k: server[k] for k in ("default_deadline_ms", "max_body_bytes") if k in server}}
    data["keys"] = [{"name": "drill", "key": DRILL_KEY, "team": "drill"}]
    data["storage"] = {"backend": "memory"}
    data["request_log"] = {"enabled": False}
    data["alerts"] = {"enabled": False}
    data["observability"] = {"tracing": {"enabled": False}}
    for section in ("limits", "budgets"):
        data.pop(section, None)
    return data


def _prune(data: dict[str, Any], kept: set[str]) -> list[str]:
    """Drop models left without deployments and what refers to them; say what went."""
    for m in data["models"]:
        m["deployments"] = [d for d in m["deployments"] if d in kept]
    gone = [f"model {m['name']} (no simulated deployment)" for m in data["models"] if not m["deployments"]]
    data["models"] = [m for m in data["models"] if m["deployments"]]
    names = {m["name"] for m in data["models"]}
    for m in data["models"]:
        for fld in ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks"):
            m[fld] = [n for n in m.get(fld, []) if n in names]
    routes = []
    for r in data.get("routes", []):
        if r["default"] not in names:
            gone.append(f"route {r['name']} (its default model has no simulated deployment)")
            continue
        r["rules"] = [rule for rule in r.get("rules", []) if rule["model"] in names]
        if r.get("baseline") not in names:
            r.pop("baseline", None)
        c = r.get("complexity")
        if c is not None and not {c["cheap"], c["premium"]} <= names:
            r.pop("complexity")
        routes.append(r)
    data["routes"] = routes
    return gone


def validate(data: dict[str, Any], registry: Registry) -> Config:
    from pydantic import ValidationError

    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise DrillError(f"the simulated config is not valid: {exc}") from None
    checks = config_checks(registry)
    problems = [f"{format_loc(loc)}: {msg}" for check in checks for loc, msg in check(config)]
    if problems:
        raise DrillError("the simulated config is not valid:\n  " + "\n  ".join(problems))
    return config


# --- traffic -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Sample:
    sent: float  # monotonic
    done: float
    ok: bool  # a complete answer: 200 and a finish (non-stream), or [DONE] without an error event
    deployment: str | None
    failover_ms: float | None


async def _stream_complete(resp: aiohttp.ClientResponse) -> bool:
    done = finished = False
    async for raw in resp.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            done = True
            continue
        event = json.loads(payload)
        if "error" in event:
            return False
        finished = finished or any(c.get("finish_reason") for c in event.get("choices") or ())
    return done and finished


class Traffic:
    """Open-loop traffic at a steady rate: a request every 1/rps seconds whatever the answers do,
    alternating streamed and not, round-robin over the targets."""

    def __init__(self, base: str, targets: list[str], rps: float, timeout: float) -> None:
        self.url = f"{base}/v1/chat/completions"
        self.targets, self.rps, self.timeout = targets, rps, timeout
        self.samples: list[Sample] = []
        self.stopping = asyncio.Event()

    async def run(self, session: aiohttp.ClientSession) -> None:
        pending: set[asyncio.Task[None]] = set()
        start, i = time.monotonic(), 0
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), max(start + i / self.rps - time.monotonic(), 0))
                break
            task = asyncio.create_task(self.one(session, i))
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
        if pending:
            await asyncio.wait(pending)

    async def one(self, session: aiohttp.ClientSession, i: int) -> None:
        stream = i % 2 == 1
        body = {"model": self.targets[i % len(self.targets)], "stream": stream,
                "messages": [{"role": "user", "content": f"drill request {i}"}]}
        sent, ok, dep, failover = time.monotonic(), False, None, None
        try:
            async with session.post(self.url, json=body, headers={"Authorization": f"Bearer {DRILL_KEY}"},
                                    timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                dep = resp.headers.get("x-modelplex-deployment")
                raw = resp.headers.get("x-modelplex-failover-ms")
                failover = float(raw) if raw is not None else None
                if resp.status == 200 and stream:
                    ok = await _stream_complete(resp)
                elif resp.status == 200:
                    data = await resp.json(content_type=None)
                    ok = bool(data["choices"][0].get("finish_reason")) and "usage" in data
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, IndexError):
            ok = False
        self.samples.append(Sample(sent, time.monotonic(), ok, dep, failover))


class BreakerWatch:
    """When each watched deployment's breaker opened and closed, seen from inside the gateway."""

    def __init__(self, health: Health, names: list[str]) -> None:
        self.health, self.names = health, names
        self.changes: list[tuple[float, str, str]] = []  # (monotonic, deployment, state)

    async def run(self, interval: float = 0.01) -> None:
        last: dict[str, str] = {}
        while True:
            now = time.time()
            for name in self.names:
                b = self.health.of(name).breaker
                state = "half_open" if b.state == "open" and now >= b.open_until else b.state
                if last.get(name) != state:
                    last[name] = state
                    self.changes.append((time.monotonic(), name, state))
            await asyncio.sleep(interval)

    def first(self, name: str, state: str, after: float) -> float | None:
        return next((t for t, n, s in self.changes if n == name and s == state and t >= after), None)


class Outage:
    """Takes the provider's deployments down and back: a whole simulator when it plays only that
    provider, else a scripted fault for its upstream models."""

    def __init__(self, sims: dict[str, SimProvider], setup: Setup, fault: str) -> None:
        self.status, self.outcome = FAULTS[fault]
        self.plan: list[tuple[SimProvider, list[str] | None]] = []
        for kind, sim in sims.items():
            on_sim = [d for d, w in setup.wires.items() if w.kind == kind]
            mine = [d for d in on_sim if d in setup.down]
            if mine:
                whole = len(mine) == len(on_sim)
                self.plan.append((sim, None if whole else sorted({setup.upstream[d] for d in mine})))

    async def _post(self, session: aiohttp.ClientSession, url: str, body: Any) -> None:
        async with session.post(url, json=body) as resp:
            resp.raise_for_status()

    async def start(self, session: aiohttp.ClientSession) -> None:
        for sim, models in self.plan:
            if models is None:
                await self._post(session, f"{sim.url}/_sim/down", {"status": self.status})
            else:
                script = {m: {"script": [self.outcome]} for m in models}
                await self._post(session, f"{sim.url}/_sim/behaviour", script)

    async def end(self, session: aiohttp.ClientSession) -> None:
        for sim, models in self.plan:
            if models is None:
                await self._post(session, f"{sim.url}/_sim/up", {})
            else:
                await self._post(session, f"{sim.url}/_sim/behaviour", {m: {"script": []} for m in models})

    def attempts(self, start: float, end: float) -> int:
        """Requests the failing provider's simulators received in [start, end)."""
        n = 0
        for sim, models in self.plan:
            n += sum(1 for r in sim.state.log if start <= r.at < end
                     and (models is None or r.model.split("+", 1)[0] in models))
        return n


# --- the run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    down: float  # monotonic: the provider goes down
    up: float  # it is back


def run(path: Path, env: Mapping[str, str], options: Options, as_json: bool) -> dict[str, Any]:
    """Load the config (missing environment variables get a stand-in), run the drill, print the
    report. Raises ConfigError or DrillError."""
    registry = load_registry()
    config = load_config(path, Placeholders(env), config_checks(registry))
    console = Console(stderr=as_json)
    report = asyncio.run(drill(config, registry, options, None if as_json else console))
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        render(report, console)
    return report


async def drill(config: Config, registry: Registry, options: Options,
                console: Console | None = None) -> dict[str, Any]:
    if options.fault not in FAULTS:
        raise DrillError(f"unknown fault {options.fault!r} (known: {', '.join(FAULTS)})")
    setup = prepare(config, registry, options)
    sims: dict[str, SimProvider] = {}
    try:
        for i, kind in enumerate(sorted({w.kind for w in setup.wires.values()})):
            spec = ProviderSpec(name=f"drill-{kind}", kind=kind, default=SIM_BEHAVIOUR, seed=i)
            sims[kind] = await SimProvider(spec).start()
        data = drill_config(config, setup, {k: s.url for k, s in sims.items()}, _free_port())
        simulated = validate(data, registry)
        names = {m.name for m in simulated.models} | {r.name for r in simulated.routes}
        setup.targets = [t for t in setup.targets if t in names]
        if not setup.targets:
            raise DrillError("no model to send traffic to is left without the unsimulated deployments")
        return await _serve(simulated, registry, Rehearsal(setup, options, sims, console))
    finally:
        for sim in sims.values():
            await sim.stop()


async def _serve(config: Config, registry: Registry, rehearsal: Rehearsal) -> dict[str, Any]:
    """The gateway in this process and event loop, for as long as the rehearsal runs."""
    from modelplex.app import build_app
    from modelplex.serve import services_for

    svc = services_for(config, registry, None, {})
    server = uvicorn.Server(uvicorn.Config(
        build_app(svc), host="127.0.0.1", port=config.server.port, loop="asyncio", lifespan="on",
        access_log=False, log_level="error"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                await serving
                raise DrillError("the gateway did not start")
            await asyncio.sleep(0.02)
        report = await rehearsal.perform(f"http://127.0.0.1:{config.server.port}", svc.health, config)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await serving
    report["breaker_settings"] = config.routing.breaker.model_dump()
    return report


class Rehearsal:
    """Traffic before, during and after the outage, then the summary."""

    def __init__(self, setup: Setup, options: Options, sims: dict[str, SimProvider],
                 console: Console | None) -> None:
        self.setup, self.options, self.console = setup, options, console
        self.outage = Outage(sims, setup, options.fault)

    async def perform(self, base: str, health: Health, config: Config) -> dict[str, Any]:
        o = self.options
        recovery = o.recovery_timeout
        if recovery is None:  # the longest a breaker stays open, and time for its probe
            recovery = config.routing.breaker.max_open_s + 10
        client_timeout = min(config.server.default_deadline_ms / 1000.0 + 5.0, 120.0)
        traffic = Traffic(base, self.setup.targets, o.rps, client_timeout)
        watch = BreakerWatch(health, self.setup.down)
        with contextlib.ExitStack() as stack:
            status = stack.enter_context(self.console.status("starting")) if self.console else None

            def show(text: str) -> None:
                if status is not None:
                    lost = sum(1 for s in traffic.samples if not s.ok)
                    status.update(f"{text} · {len(traffic.samples)} done · {lost} lost")

            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
                sending = asyncio.create_task(traffic.run(session))
                watching = asyncio.create_task(watch.run())
                try:
                    t = await self._timeline(session, traffic, recovery, show)
                finally:
                    traffic.stopping.set()
                    watching.cancel()
                    await asyncio.gather(sending, watching, return_exceptions=True)
        return summarise(self.setup, o, traffic.samples, watch, self.outage, t)

    async def _timeline(self, session: aiohttp.ClientSession, traffic: Traffic, recovery: float,
                        show: Callable[[str], None]) -> Timeline:
        provider = self.options.provider
        await _wait(self.options.warmup, lambda left: show(f"before the outage, {left:.0f} s"))
        down = time.monotonic()
        await self.outage.start(session)
        await _wait(self.options.duration, lambda left: show(f"{provider} down, {left:.0f} s left"))
        up = time.monotonic()
        await self.outage.end(session)
        mine = set(self.setup.down)
        before = {s.deployment for s in traffic.samples if s.ok and s.sent < down and s.deployment in mine}

        def back() -> bool:
            return before <= {s.deployment for s in traffic.samples if s.ok and s.sent >= up}

        await _wait(recovery, lambda left: show(f"{provider} is back; waiting for its traffic"), until=back)
        await _wait(min(1.0, recovery), lambda left: show("finishing"))
        traffic.stopping.set()
        return Timeline(down, up)


async def _wait(seconds: float, tick: Callable[[float], None], until: Callable[[], bool] | None = None,
                ) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if until is not None and until():
            return
        tick(left)
        await asyncio.sleep(min(0.1, left))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the report ----------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float | None:
    return sorted(values)[max(math.ceil(q * len(values)) - 1, 0)] if values else None


def _r(value: float | None, places: int = 3) -> float | None:
    return None if value is None else round(value, places)


def _phase(samples: list[Sample], down: set[str]) -> dict[str, Any]:
    answered = [s for s in samples if s.ok]
    latency = [(s.done - s.sent) * 1000 for s in answered]
    return {
        "requests": len(samples),
        "lost": len(samples) - len(answered),
        "by_provider": sum(1 for s in answered if s.deployment in down),
        "by_others": sum(1 for s in answered if s.deployment not in down),
        "latency_p50_ms": _r(_pct(latency, 0.5), 1),
        "latency_p99_ms": _r(_pct(latency, 0.99), 1),
        "answered_by": dict(sorted(Counter(str(s.deployment) for s in answered).items())),
    }


def _distribution(values: list[float]) -> dict[str, Any]:
    return {"count": len(values), "p50": _r(_pct(values, 0.5), 1), "p95": _r(_pct(values, 0.95), 1),
            "p99": _r(_pct(values, 0.99), 1), "max": _r(max(values) if values else None, 1)}


def _since(times: Mapping[str, float | None], origin: float) -> dict[str, float | None]:
    return {d: _r(v - origin) if v is not None else None for d, v in times.items()}


def _latest(values: list[float | None]) -> float | None:
    """The last of the times, or None if any is missing."""
    return None if not values or None in values else max(v for v in values if v is not None)


def summarise(setup: Setup, options: Options, samples: list[Sample], watch: BreakerWatch, outage: Outage,
              t: Timeline) -> dict[str, Any]:
    down = set(setup.down)
    during = [s for s in samples if t.down <= s.sent < t.up]
    fallback = [s.done for s in samples if s.sent >= t.down and s.ok and s.deployment not in down]
    lost = [s for s in during if not s.ok]
    opened = {d: watch.first(d, "open", t.down) for d in setup.down}
    all_open = _latest(list(opened.values()))
    open_requests = sum(1 for s in during if all_open is not None and s.sent >= all_open)
    attempts_open = outage.attempts(all_open, t.up) if all_open is not None else None
    serving = sorted({s.deployment for s in samples if s.ok and s.sent < t.down and s.deployment in down})
    back = {d: min((s.done for s in samples if s.ok and s.sent >= t.up and s.deployment == d), default=None)
            for d in serving}
    attempts = outage.attempts(t.down, t.up)
    return {
        "provider": options.provider, "fault": options.fault, "duration_s": options.duration,
        "rps": options.rps, "targets": setup.targets, "deployments_down": setup.down,
        "left_out": setup.left_out,
        "phases": {
            "before": _phase([s for s in samples if s.sent < t.down], down),
            "outage": _phase(during, down),
            "after": _phase([s for s in samples if s.sent >= t.up], down),
        },
        "time_to_first_fallback_s": _r(min(fallback) - t.down if fallback else None),
        "requests_lost": len(lost),
        "time_to_last_loss_s": _r(max(s.done for s in lost) - t.down if lost else None),
        "failover_ms": _distribution([s.failover_ms for s in during if s.failover_ms is not None]),
        "upstream_attempts": {
            "outage": attempts,
            "per_request": _r(attempts / len(during) if during else None),
            "breakers_open": attempts_open,
            "per_request_breakers_open": _r(attempts_open / open_requests
                                            if attempts_open is not None and open_requests else None),
        },
        "breaker_opened_after_s": _since(opened, t.down),
        "breaker_closed_after_return_s": _since({d: watch.first(d, "closed", t.up) for d in down}, t.up),
        "back_after_s": _since(back, t.up),
        "time_back_s": _r(v - t.up) if (v := _latest(list(back.values()))) is not None else None,
    }


def _s(value: Any, unit: str = " s") -> str:
    return "—" if value is None else f"{value:g}{unit}"


def _per(values: Mapping[str, Any]) -> str:
    return " · ".join(f"{d} {_s(v)}" for d, v in values.items()) or "—"


def render(report: dict[str, Any], console: Console) -> None:
    p = report["provider"]
    what = f"down for {report['duration_s']:g} s ({report['fault']}), {report['rps']:g} requests/s"
    console.print(f"[bold]modelplex drill[/bold]: provider [bold]{p}[/bold] {what}, half streamed, to "
                  + ", ".join(report["targets"]))
    for item in report["left_out"]:
        console.print(f"  [yellow]left out:[/yellow] {item}")
    phases = Table(title="client requests")
    for col in ("phase", "requests", "lost", f"answered by {p}", "by fallbacks", "p50 ms", "p99 ms"):
        phases.add_column(col, justify="left" if col == "phase" else "right")
    for name, row in report["phases"].items():
        phases.add_row(name, *(str(row[k]) for k in ("requests", "lost", "by_provider", "by_others")),
                       _s(row["latency_p50_ms"], ""), _s(row["latency_p99_ms"], ""))
    console.print(phases)
    fo, att = report["failover_ms"], report["upstream_attempts"]
    lost = f"{report['requests_lost']} of {report['phases']['outage']['requests']}"
    if report["requests_lost"]:
        lost += f" (the last ended {report['time_to_last_loss_s']:g} s in)"
    figures = Table(title="outage and recovery", show_header=False)
    figures.add_column(style="bold")
    figures.add_column()
    figures.add_row("time to first answer via a fallback", _s(report["time_to_first_fallback_s"]))
    figures.add_row("requests lost during the outage", lost)
    figures.add_row("failover time (x-modelplex-failover-ms)",
                    f"p50 {_s(fo['p50'], '')} · p95 {_s(fo['p95'], '')} · p99 {_s(fo['p99'], '')} · "
                    f"max {_s(fo['max'], ' ms')} over {fo['count']} failed-over requests")
    figures.add_row(f"upstream attempts on {p} per request",
                    f"{_s(att['per_request'], '')} during the outage · "
                    f"{_s(att['per_request_breakers_open'], '')} once its breakers were open")
    figures.add_row("breakers opened after", _per(report["breaker_opened_after_s"]))
    figures.add_row(f"back on {p} after its return", _per(report["back_after_s"])
                    if report["back_after_s"] else f"— ({p} answered nothing before the outage)")
    figures.add_row("breakers closed after its return", _per(report["breaker_closed_after_return_s"]))
    console.print(figures)
