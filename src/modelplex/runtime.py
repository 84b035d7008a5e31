"""The resolved, immutable picture of one config: adapters, targets, models, keys.

A `Runtime` is built once per config load and swapped atomically by `RuntimeHolder`; a request
reads `holder.current` once at its start and keeps that snapshot to its end, so a reload never
changes a request in flight.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelplex.config.load import Check, ConfigError, Loc, load_config
from modelplex.config.schema import Config, Deployment, Model, Route
from modelplex.metering.catalog import Catalog, resolve_price
from modelplex.metering.cost import MicroPrice
from modelplex.providers.base import Adapter, Target
from modelplex.providers.registry import Registry, UnknownProvider
from modelplex.storage.base import BudgetSpec

log = logging.getLogger("modelplex.config")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request, as far as limits, budgets and the log care."""

    key_name: str
    digest: bytes = field(repr=False)
    team: str
    user: str | None
    models: frozenset[str] | None  # None: every model and route
    tier: str | None = None
    key_id: str | None = None  # a virtual key's id; None for keys from the config file
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    budgets: tuple[BudgetSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One deployment ready to call: its adapter and its resolved target."""

    adapter: Adapter
    target: Target
    price: MicroPrice | None = None  # None: unpriced (metered as unknown, never as 0)

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def deployment(self) -> Deployment:
        return self.target.deployment


@dataclass(frozen=True, slots=True)
class ModelEntry:
    spec: Model
    endpoints: tuple[Endpoint, ...]
    fallbacks: tuple[str, ...]


def key_digest(secret: bytes, key: str) -> bytes:
    return hmac.new(secret, key.encode("utf-8"), hashlib.sha256).digest()


@dataclass(frozen=True)
class Runtime:
    config: Config
    registry: Registry
    endpoints: Mapping[str, Endpoint]
    models: Mapping[str, ModelEntry]
    hmac_secret: bytes
    keys: Mapping[bytes, Caller] = field(default_factory=dict)
    routes: Mapping[str, Route] = field(default_factory=dict)
    # Per route with a complexity step: features -> "send to premium?"
    complexity: Mapping[str, Callable[[Any], bool]] = field(default_factory=dict)
    source: str = "<memory>"

    def caller_for(self, key: str) -> Caller | None:
        digest = key_digest(self.hmac_secret, key)
        caller = self.keys.get(digest)
        # Only HMACs are held; the lookup is by digest, and the final equality is constant-time.
        if caller is None or not hmac.compare_digest(caller.digest, digest):
            return None
        return caller


def provider_checks(registry: Registry) -> Check:
    def check(config: Config) -> Iterable[tuple[Loc, str]]:
        for i, d in enumerate(config.deployments):
            try:
                adapter = registry[d.provider]
            except UnknownProvider:
                known = ", ".join(registry)
                yield ("deployments", i, "provider"), f"unknown provider {d.provider!r} (known: {known})"
                continue
            for fld, message in adapter.check(d):
                yield ("deployments", i, fld), message

    return check


def config_checks(registry: Registry) -> list[Check]:
    from modelplex.routing.rules import check_routes

    return [provider_checks(registry), check_routes]


def build_runtime(
    config: Config,
    registry: Registry,
    source: str = "<memory>",
    hmac_secret: bytes | None = None,
    catalog: Catalog | None = None,
) -> Runtime:
    from modelplex.routing.complexity_route import build_scorers

    endpoints = {
        d.name: Endpoint(
            adapter=registry[d.provider],
            target=registry[d.provider].prepare(d),
            price=resolve_price(d, catalog) if catalog is not None else _config_price(d),
        )
        for d in config.deployments
    }
    models = {
        m.name: ModelEntry(
            spec=m, endpoints=tuple(endpoints[n] for n in m.deployments), fallbacks=tuple(m.fallbacks)
        )
        for m in config.models
    }
    if config.server.key_hmac_secret is not None:
        secret = config.server.key_hmac_secret.get_secret_value().encode("utf-8")
    else:
        secret = hmac_secret or secrets.token_bytes(32)
    keys = {
        (digest := key_digest(secret, k.key.get_secret_value())): Caller(
            key_name=k.name,
            digest=digest,
            team=k.team,
            user=k.user,
            tier=k.tier,
            models=frozenset(k.models) if k.models is not None else None,
            rpm=k.rpm,
            tpm=k.tpm,
            concurrency=k.concurrency,
        )
        for k in config.keys
    }
    return Runtime(
        config=config,
        registry=registry,
        endpoints=endpoints,
        models=models,
        hmac_secret=secret,
        keys=keys,
        routes={r.name: r for r in config.routes},
        complexity=build_scorers(config),
        source=source,
    )


def _config_price(d: Deployment) -> MicroPrice | None:
    from modelplex.metering.prices import micro_price

    return micro_price(d.price) if d.price is not None else None


class RuntimeHolder:
    """Holds the current Runtime; reloads from its file, keeping the old one on any error."""

    def __init__(
        self, runtime: Runtime, path: Path | None, env: Mapping[str, str], catalog: Catalog | None = None
    ) -> None:
        self.current = runtime
        self.path = path
        self._env = env
        self._catalog = catalog
        self._stamp = _stamp(path) if path else None
        self.generation = 1
        self.last_error: str | None = None
        self.on_reload: list[Callable[[Runtime], None]] = []

    def changed_on_disk(self) -> bool:
        return self.path is not None and _stamp(self.path) != self._stamp

    def reload(self) -> bool:
        """Load the file again. True if a new config now serves; on error the old one stays."""
        if self.path is None:
            return False
        self._stamp = _stamp(self.path)
        registry = self.current.registry
        try:
            config = load_config(self.path, self._env, config_checks(registry))
            runtime = build_runtime(config, registry, str(self.path), self.current.hmac_secret, self._catalog)
        except ConfigError as exc:
            self.last_error = str(exc)
            log.error("config reload rejected, the previous config keeps serving\n%s", exc)
            return False
        self.current = runtime
        self.generation += 1
        self.last_error = None
        for hook in self.on_reload:
            hook(runtime)
        log.info("config reloaded from %s (generation %d)", self.path, self.generation)
        return True


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)
