"""Simulated providers on real sockets, one aiohttp server each, with a control API.

Control API (every simulated provider):
    GET  /_sim/requests     what it saw: time, path, model, outcome, body
    POST /_sim/reset        clear the log and the script positions, bring it back up
    POST /_sim/down         fail every request ({"status": 503}; {"status": 0} resets connections)
    POST /_sim/up           serve again
    POST /_sim/behaviour    {"model": {...settings}} or {"default": {...}}: change behaviour live
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from modelplex.simulator import anthropic, azure, bedrock, cohere, gemini, mistral, openai
from modelplex.simulator.behaviour import Behaviour
from modelplex.simulator.core import SimState

RoutesFn = Callable[[SimState], list[web.RouteDef]]

# Wire formats the simulator speaks, by kind. A kind "all" serves every one on one port.
KINDS: dict[str, RoutesFn] = {
    "openai": openai.routes,
    "anthropic": anthropic.routes,
    "gemini": gemini.routes,
    "bedrock": bedrock.routes,
    "cohere": cohere.routes,
    "mistral": mistral.routes,  # same paths as openai: under kind "all", openai's routes answer
    "azure": azure.routes,
}


def _control_routes(state: SimState) -> list[web.RouteDef]:
    async def requests(request: web.Request) -> web.Response:
        return web.json_response(
            [
                {
                    "at": r.at - state.started,
                    "ended": (r.ended - state.started) if r.ended else None,
                    "path": r.path,
                    "model": r.model,
                    "stream": r.stream,
                    "outcome": r.outcome,
                    "body": r.body.decode("utf-8", "replace"),
                }
                for r in state.log
            ]
        )

    async def reset(request: web.Request) -> web.Response:
        state.reset()
        return web.json_response({"ok": True})

    async def down(request: web.Request) -> web.Response:
        data = await request.json() if request.can_read_body else {}
        state.down = True
        state.down_status = int(data.get("status", 503))
        return web.json_response({"ok": True})

    async def up(request: web.Request) -> web.Response:
        state.down = False
        return web.json_response({"ok": True})

    async def behaviour(request: web.Request) -> web.Response:
        data = await request.json()
        try:
            for model, settings in data.items():
                if model == "default":
                    state.default = Behaviour.from_mapping(settings, state.default)
                else:
                    state.models[model] = Behaviour.from_mapping(
                        settings, state.models.get(model, state.default)
                    )
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    return [
        web.get("/_sim/requests", requests),
        web.post("/_sim/reset", reset),
        web.post("/_sim/down", down),
        web.post("/_sim/up", up),
        web.post("/_sim/behaviour", behaviour),
    ]


@dataclass
class ProviderSpec:
    name: str
    kind: str = "openai"
    host: str = "127.0.0.1"
    port: int = 0
    default: dict[str, Any] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    outages: list[tuple[float, float]] = field(default_factory=list)
    seed: int = 0

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> ProviderSpec:
        known = {"name", "kind", "host", "port", "default", "models", "outages", "seed"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown simulator provider setting(s): {', '.join(sorted(unknown))}")
        kind = data.get("kind", "openai")
        if kind != "all" and kind not in KINDS:
            raise ValueError(f"unknown simulator kind {kind!r} (known: {', '.join(sorted(KINDS))}, all)")
        return cls(
            name=str(data.get("name", kind)),
            kind=kind,
            host=str(data.get("host", "127.0.0.1")),
            port=int(data.get("port", 0)),
            default=dict(data.get("default") or {}),
            models={str(k): dict(v or {}) for k, v in (data.get("models") or {}).items()},
            outages=[(float(a), float(b)) for a, b in data.get("outages") or []],
            seed=int(data.get("seed", 0)),
        )


class SimProvider:
    """One simulated provider: build, start on a port, inspect, stop."""

    def __init__(self, spec: ProviderSpec) -> None:
        self.spec = spec
        default = Behaviour.from_mapping(spec.default)
        models = {m: Behaviour.from_mapping(s, default) for m, s in spec.models.items()}
        self.state = SimState(spec.name, default, models, seed=spec.seed, outages=spec.outages)
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        kinds = list(KINDS) if spec.kind == "all" else [spec.kind]
        for kind in kinds:
            self.app.add_routes(KINDS[kind](self.state))
        self.app.add_routes(_control_routes(self.state))
        self._runner: web.AppRunner | None = None
        self.port = spec.port

    @property
    def url(self) -> str:
        return f"http://{self.spec.host}:{self.port}"

    async def start(self) -> SimProvider:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.spec.host, self.spec.port, backlog=1024, reuse_address=True)
        await site.start()
        if self.port == 0:
            addresses = self._runner.addresses
            self.port = int(addresses[0][1])
        self.state.started = time.monotonic()  # outage windows count from here
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def load_specs(data: dict[str, Any]) -> list[ProviderSpec]:
    providers = data.get("providers")
    if not isinstance(providers, list) or not providers:
        raise ValueError("a simulator config needs a non-empty `providers` list")
    seed = int(data.get("seed", 0))
    specs = []
    for i, p in enumerate(providers):
        if not isinstance(p, dict):
            raise ValueError(f"providers[{i}] must be a mapping")
        specs.append(ProviderSpec.from_mapping({"seed": seed + i, **p}))
    return specs


DEFAULT_SIM = {
    "providers": [
        {
            "name": "openai",
            "kind": "openai",
            "port": 9101,
            "default": {"ttft_ms": {"p50": 120, "p95": 400}, "tokens_per_s": 200, "output_tokens": 24},
        },
        {
            "name": "anthropic",
            "kind": "anthropic",
            "port": 9102,
            "default": {"ttft_ms": {"p50": 180, "p95": 600}, "tokens_per_s": 150, "output_tokens": 24},
        },
    ]
}


def describe(providers: list[SimProvider]) -> str:
    return json.dumps({p.spec.name: {"kind": p.spec.kind, "url": p.url} for p in providers}, indent=2)
