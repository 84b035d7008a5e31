"""The long-lived parts of a gateway process, built once and passed to every request."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from modelplex.context import RequestContext
from modelplex.routing.health import Health
from modelplex.runtime import Runtime, RuntimeHolder
from modelplex.transport import Transport

# Called once per finished request with its context and the monotonic end time.
Sink = Callable[[RequestContext, float], None]


@dataclass
class Services:
    holder: RuntimeHolder
    transport: Transport = field(default_factory=Transport)
    rng: random.Random = field(default_factory=random.Random)
    sinks: list[Sink] = field(default_factory=list)
    health: Health = field(init=False)

    def __post_init__(self) -> None:
        self.health = Health(self.holder.current.config.routing)
        self.holder.on_reload.append(lambda rt: self.health.configure(rt.config.routing))

    def runtime(self) -> Runtime:
        return self.holder.current
