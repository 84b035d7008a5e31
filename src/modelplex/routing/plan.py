"""Planning: the ordered list of candidates for one request (pool order, then fallback models)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from modelplex.errors import ModelNotFound, PermissionDenied
from modelplex.runtime import Caller, Endpoint, ModelEntry, Runtime


@dataclass(frozen=True, slots=True)
class Candidate:
    model: str  # public model name this candidate serves
    endpoint: Endpoint


def order_pool(entry: ModelEntry, rng: random.Random) -> list[Endpoint]:
    endpoints = list(entry.endpoints)
    if entry.spec.strategy == "weighted" and len(endpoints) > 1:
        # Weighted order without replacement: the first pick is proportional to weight.
        keyed = [
            (rng.random() ** (1.0 / e.deployment.weight) if e.deployment.weight > 0 else 0.0, e)
            for e in endpoints
        ]
        keyed.sort(key=lambda pair: pair[0], reverse=True)
        endpoints = [e for _, e in keyed]
    return endpoints


def plan(rt: Runtime, model: str, caller: Caller | None, rng: random.Random) -> list[Candidate]:
    entry = rt.models.get(model)
    if entry is None:
        raise ModelNotFound(f"The model `{model}` does not exist or you do not have access to it.")
    if caller is not None and caller.models is not None and model not in caller.models:
        raise PermissionDenied(f"This key may not use the model `{model}`.")
    seen: set[str] = set()
    out: list[Candidate] = []
    for name in (model, *entry.fallbacks):
        fallback = rt.models[name]
        for endpoint in order_pool(fallback, rng):
            if endpoint.name not in seen:
                seen.add(endpoint.name)
                out.append(Candidate(model=name, endpoint=endpoint))
    return out
