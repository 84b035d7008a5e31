"""The per-request record that every pipeline stage reads and adds to."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from modelplex.errors import ModelplexError
from modelplex.runtime import Caller, Endpoint

if TYPE_CHECKING:
    from modelplex.limits.admission import Ticket
    from modelplex.routing.features import Features
from modelplex.types import Usage


def new_request_id() -> str:
    return os.urandom(12).hex()


@dataclass(slots=True)
class AttemptRecord:
    deployment: str
    provider: str
    model: str  # public model the attempt served
    started: float  # monotonic
    ended: float = 0.0
    outcome: str = "pending"  # ok | <error code> | cancelled
    upstream_status: int | None = None
    ttft_s: float | None = None
    usage: Usage | None = None
    hedge: bool = False
    message: str | None = None

    @property
    def elapsed_ms(self) -> float:
        return (self.ended - self.started) * 1000.0 if self.ended else 0.0


@dataclass(slots=True)
class RequestContext:
    dialect: str
    operation: str  # chat | embeddings
    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=time.monotonic)
    wall_started: float = field(default_factory=time.time)
    deadline: float = 0.0  # monotonic; set once the runtime's default is known
    caller: Caller | None = None
    model: str | None = None  # the public model or route asked for
    stream: bool = False
    tags: tuple[str, ...] = ()
    attempts: list[AttemptRecord] = field(default_factory=list)
    answered_by: Endpoint | None = None
    answered_model: str | None = None  # public model whose deployment answered
    upstream_s: float = 0.0  # time spent waiting on the answering upstream before its first byte
    first_byte_at: float | None = None  # monotonic, first byte of the answer sent to the client
    usage: Usage | None = None
    status: int = 200
    error: ModelplexError | None = None
    aborted: bool = False  # the client went away
    route: str | None = None  # the route that chose the model, if any
    route_reason: str | None = None  # which rule / step chose it
    first_failure_at: float | None = None  # monotonic, the first failed attempt
    failover_s: float | None = None  # first failure -> first byte of the answer
    skipped_events: int = 0  # malformed upstream events skipped
    resumed: bool = False  # a cut stream was continued by prefill
    features: Features | None = None  # what routing saw of the request (prompt text, task, tags, ...)
    ticket: Ticket | None = None  # what admission took, settled at the end
    output_text: str | None = None  # the answer's text (first choice), for a request log that stores it
    # Settled money, integer micro-units (metering/meter.py). None: unknown (unpriced or failed).
    cost_micro: int | None = None  # the answer, in cost_currency (the provider's)
    cost_currency: str | None = None
    report_cost_micro: int | None = None  # the answer, in the reporting currency
    waste_micro: int = 0  # attempts that did not become the answer, reporting currency
    counterfactual_micro: int | None = None  # the same usage on the route's baseline model
    unpriced: bool = False  # the answering deployment has no price

    def overhead_ms(self, now: float | None = None) -> float:
        """Gateway time so far that was not spent waiting on the answering upstream."""
        end = now if now is not None else time.monotonic()
        return max((end - self.started - self.upstream_s) * 1000.0, 0.0)
