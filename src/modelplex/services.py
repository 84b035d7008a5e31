"""The long-lived parts of a gateway process, built once and passed to every request."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from modelplex.context import RequestContext
from modelplex.limits.admission import Admission
from modelplex.limits.keys import KeyResolver
from modelplex.metering.meter import Meter
from modelplex.routing.health import Health
from modelplex.runtime import Runtime, RuntimeHolder
from modelplex.server.shed import Shedder
from modelplex.storage.factory import Stores, open_stores
from modelplex.transport import Transport

# Called once per finished request, after it is settled, with its context and the monotonic end
# time. A sink runs on the request path: it must not block (append to a spool, bump a counter).
Sink = Callable[[RequestContext, float], None]
Handler = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


@dataclass
class Services:
    """What a gateway process holds for its lifetime. Optional parts (metrics, the request log,
    alerts, admin) plug in by adding sinks, routes, background tasks and closers."""

    holder: RuntimeHolder
    transport: Transport = field(default_factory=Transport)
    rng: random.Random = field(default_factory=random.Random)
    sinks: list[Sink] = field(default_factory=list)
    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)  # (method, path) -> ASGI handler
    tasks: list[Callable[[], Coroutine[Any, Any, None]]] = field(
        default_factory=list
    )  # run for the process life
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # run at shutdown, in order
    startup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)  # before serving, in order
    workers: int = 1
    stores: Stores | None = None  # opened at startup
    keys: KeyResolver = field(default_factory=lambda: KeyResolver(None))
    admission: Admission | None = None  # set at startup
    draining: bool = False  # SIGTERM received: readiness fails, the process is about to stop
    shedder: Shedder = field(init=False)
    health: Health = field(init=False)
    meter: Meter = field(init=False)

    def __post_init__(self) -> None:
        config = self.holder.current.config
        self.health = Health(config.routing)
        self.meter = Meter(config.metering)
        server = config.server
        self.shedder = Shedder(server.max_in_flight, server.max_queue, server.queue_timeout_ms / 1000)
        self.holder.on_reload.append(self._reloaded)
        self.startup.insert(0, self._open_stores)

    async def _open_stores(self) -> None:
        config = self.holder.current.config
        self.stores = await open_stores(config.storage, self.workers)
        self.keys = KeyResolver(self.stores.keys)
        self.admission = Admission(self.stores.counters, self.stores.ledger, self.keys, config.admission,
                                   config.storage.reservation_ttl_s, lambda: self.meter)
        admission = self.admission
        self.tasks.append(admission.run)
        self.closers.append(admission.close)
        self.closers.append(self.stores.close)
        if config.storage.redis_url:
            from modelplex.routing.shared_health import RedisSharedHealth

            shared = RedisSharedHealth.open(config.storage.redis_url, config.storage.redis_prefix,
                                            config.storage.redis_timeout_s)
            self.health.shared = shared
            self.tasks.append(lambda: self.health.poll(0.25))
            self.closers.append(shared.close)

    def _reloaded(self, rt: Runtime) -> None:
        self.health.configure(rt.config.routing)
        self.meter = Meter(rt.config.metering)
        server = rt.config.server
        self.shedder.configure(server.max_in_flight, server.max_queue, server.queue_timeout_ms / 1000)

    def runtime(self) -> Runtime:
        return self.holder.current
