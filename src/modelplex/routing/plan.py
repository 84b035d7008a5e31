"""Planning: which model serves a request, and the ordered candidates to try.

1. Resolve the model: a route name (e.g. `auto`) runs its rules, then its complexity step, then
   its default; any other name is a model.
2. Filter each pool by capability: context window, tools, JSON schema, vision. A request too long
   for every deployment of its model goes to the model's context-window fallbacks up front.
3. Order each pool by its model's strategy; append the fallback models' pools.
Health (breaker, cooldown) is left to execution, which skips what is unavailable at that moment.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from modelplex.config.schema import Route
from modelplex.errors import InvalidRequest, ModelNotFound, PermissionDenied
from modelplex.routing import rules
from modelplex.routing.features import Features
from modelplex.routing.health import Health
from modelplex.routing.strategies import STRATEGIES
from modelplex.runtime import Caller, Endpoint, Runtime


@dataclass(frozen=True, slots=True)
class Candidate:
    model: str  # public model name this candidate serves
    endpoint: Endpoint


@dataclass(slots=True)
class Plan:
    requested: str  # what the caller asked for: a model or a route
    model: str  # the model chosen
    route: Route | None
    reason: str  # how it was chosen: "model", "rules[0]", "complexity:premium", "default", ...
    candidates: list[Candidate]
    features: Features
    context_fallback: bool = False  # the request went to a context-window fallback up front
    skipped: list[str] = field(default_factory=list)  # deployments filtered out, with why


def fits(e: Endpoint, f: Features) -> str | None:
    """Why this deployment cannot serve the request, or None if it can."""
    caps = e.deployment.capabilities
    if caps.context_window is not None and f.prompt_tokens + (f.max_tokens or 0) > caps.context_window:
        return "context window"
    if f.tools and not caps.tools:
        return "tools"
    if f.json_schema and not caps.json_schema:
        return "JSON schema"
    if f.vision and not caps.vision:
        return "vision"
    return None


def resolve(rt: Runtime, requested: str, f: Features) -> tuple[str, Route | None, str]:
    route = rt.routes.get(requested)
    if route is None:
        if requested not in rt.models:
            raise ModelNotFound(f"The model `{requested}` does not exist or you do not have access to it.")
        return requested, None, "model"
    picked = rules.select(route, f)
    if picked is not None:
        return picked[0], route, picked[1]
    scorer = rt.complexity.get(route.name)
    if scorer is not None and route.complexity is not None:
        premium = scorer(f)
        model = route.complexity.premium if premium else route.complexity.cheap
        return model, route, f"complexity:{'premium' if premium else 'cheap'}"
    return route.default, route, "default"


def plan(
    rt: Runtime,
    health: Health,
    requested: str,
    caller: Caller | None,
    f: Features,
    rng: random.Random,
    now: float,
) -> Plan:
    if caller is not None and caller.models is not None and requested not in caller.models:
        raise PermissionDenied(f"This key may not use `{requested}`.")
    model, route, reason = resolve(rt, requested, f)
    p = Plan(requested=requested, model=model, route=route, reason=reason, candidates=[], features=f)
    chain = _chain(rt, model)
    _fill(rt, health, p, chain, rng, now)
    if not p.candidates and any(why.endswith("context window") for why in p.skipped):
        # Too long for the model and its fallbacks: go to the context-window fallbacks up front.
        bigger = [m for name in chain for m in rt.models[name].spec.context_window_fallbacks]
        if bigger:
            p.context_fallback = True
            _fill(rt, health, p, _dedupe(bigger), rng, now)
    if not p.candidates:
        needs = sorted({why.split(": ", 1)[1] for why in p.skipped})
        raise InvalidRequest(
            f"No deployment of `{model}` or its fallbacks can serve this request (needs: {', '.join(needs)})."
        )
    return p


def _dedupe(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def _chain(rt: Runtime, model: str) -> list[str]:
    return _dedupe([model, *rt.models[model].fallbacks])


def _fill(rt: Runtime, health: Health, p: Plan, models: list[str], rng: random.Random, now: float) -> None:
    seen = {c.endpoint.name for c in p.candidates}
    for name in models:
        entry = rt.models[name]
        pool = []
        for e in entry.endpoints:
            why = fits(e, p.features)
            if why is not None:
                p.skipped.append(f"{e.name}: {why}")
            elif e.name not in seen:
                pool.append(e)
        for e in STRATEGIES[entry.spec.strategy](pool, health, p.features, rng, now):
            seen.add(e.name)
            p.candidates.append(Candidate(model=name, endpoint=e))


def larger_context(
    rt: Runtime, health: Health, p: Plan, failed: Candidate, rng: random.Random, now: float
) -> list[Candidate]:
    """After a provider's context_length_exceeded: candidates of the context-window fallback
    models whose window is larger than the failed deployment's (or unknown)."""
    limit = failed.endpoint.deployment.capabilities.context_window
    names = _dedupe(rt.models[failed.model].spec.context_window_fallbacks)
    extra = Plan(
        requested=p.requested,
        model=p.model,
        route=p.route,
        reason=p.reason,
        candidates=[],
        features=p.features,
    )
    _fill(rt, health, extra, names, rng, now)
    return [
        c
        for c in extra.candidates
        if limit is None or (c.endpoint.deployment.capabilities.context_window or limit + 1) > limit
    ]


def content_policy(
    rt: Runtime, health: Health, p: Plan, failed: Candidate, rng: random.Random, now: float
) -> list[Candidate]:
    names = _dedupe(rt.models[failed.model].spec.content_policy_fallbacks)
    extra = Plan(
        requested=p.requested,
        model=p.model,
        route=p.route,
        reason=p.reason,
        candidates=[],
        features=p.features,
    )
    _fill(rt, health, extra, names, rng, now)
    return extra.candidates
