"""Rule routes: conditions on request features select a model; checked for sense at load time.

routes:
  - name: auto
    rules:
      - when: {task: summary, prompt_words: {lt: 1000}}
        model: cheap
      - when: {task: analysis, prompt_words: {gt: 5000}}
        model: premium
    default: standard
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from modelplex.config.load import Loc
from modelplex.config.schema import Condition, Config, Route, When
from modelplex.routing.features import Features


def _number_ok(value: float | None, c: Condition | None) -> bool:
    if c is None:
        return True
    if value is None:
        return False
    return (
        (c.lt is None or value < c.lt)
        and (c.lte is None or value <= c.lte)
        and (c.gt is None or value > c.gt)
        and (c.gte is None or value >= c.gte)
        and (c.eq is None or value == c.eq)
    )


def _one_of(value: str | None, wanted: str | list[str] | None) -> bool:
    if wanted is None:
        return True
    if value is None:
        return False
    return value == wanted if isinstance(wanted, str) else value in wanted


def matches(when: When, f: Features) -> bool:
    return (
        _number_ok(f.prompt_tokens, when.prompt_tokens)
        and _number_ok(f.prompt_words, when.prompt_words)
        and _number_ok(f.max_tokens, when.max_tokens)
        and (when.tools is None or when.tools == f.tools)
        and (when.json_schema is None or when.json_schema == f.json_schema)
        and (when.vision is None or when.vision == f.vision)
        and (when.stream is None or when.stream == f.stream)
        and _one_of(f.task, when.task)
        and (not when.tags_any or any(t in f.tags for t in when.tags_any))
        and (not when.tags_all or all(t in f.tags for t in when.tags_all))
        and _one_of(f.team, when.team)
        and _one_of(f.tier, when.tier)
        and _one_of(f.key, when.key)
        and (when.dialect is None or when.dialect == f.dialect)
    )


def select(route: Route, f: Features) -> tuple[str, str] | None:
    """(model, rule label) of the first rule that matches, or None."""
    for i, rule in enumerate(route.rules):
        if matches(rule.when, f):
            return rule.model, rule.name or f"rules[{i}]"
    return None


def _bounds(c: Condition) -> tuple[float, bool, float, bool]:
    """The interval a condition allows: (low, low inclusive, high, high inclusive)."""
    low, low_inc, high, high_inc = -math.inf, False, math.inf, False
    for bound, inclusive in ((c.gt, False), (c.gte, True), (c.eq, True)):
        if bound is not None and (bound > low or (bound == low and not inclusive)):
            low, low_inc = bound, inclusive
    for bound, inclusive in ((c.lt, False), (c.lte, True), (c.eq, True)):
        if bound is not None and (bound < high or (bound == high and not inclusive)):
            high, high_inc = bound, inclusive
    return low, low_inc, high, high_inc


def impossible(c: Condition) -> bool:
    low, low_inc, high, high_inc = _bounds(c)
    return low > high or (low == high and not (low_inc and high_inc))


def check_routes(config: Config) -> Iterable[tuple[Loc, str]]:
    models = {m.name for m in config.models}
    routes = {r.name for r in config.routes}
    for i, m in enumerate(config.models):
        for field in ("context_window_fallbacks", "content_policy_fallbacks"):
            for j, name in enumerate(getattr(m, field)):
                if name not in models:
                    yield ("models", i, field, j), f"unknown model {name!r}"
    seen: set[str] = set()
    for i, r in enumerate(config.routes):
        loc: Loc = ("routes", i)
        if r.name in models:
            yield (*loc, "name"), f"route {r.name!r} has the name of a model"
        if r.name in seen:
            yield (*loc, "name"), f"duplicate route name {r.name!r}"
        seen.add(r.name)
        for field in ("default", "baseline"):
            name = getattr(r, field)
            if name is not None and name not in models:
                yield (*loc, field), f"unknown model {name!r}"
        if r.complexity is not None:
            for field in ("cheap", "premium"):
                if getattr(r.complexity, field) not in models:
                    yield (*loc, "complexity", field), f"unknown model {getattr(r.complexity, field)!r}"
            chosen = [
                x
                for x in (r.complexity.premium_share, r.complexity.quality_floor, r.complexity.threshold)
                if x is not None
            ]
            if len(chosen) != 1:
                yield (*loc, "complexity"), "set exactly one of premium_share, quality_floor, threshold"
        for j, rule in enumerate(r.rules):
            if rule.model not in models:
                yield (*loc, "rules", j, "model"), f"unknown model {rule.model!r}"
            for feature in ("prompt_tokens", "prompt_words", "max_tokens"):
                cond = getattr(rule.when, feature)
                if cond is not None and impossible(cond):
                    yield (*loc, "rules", j, "when", feature), "no value can satisfy this condition"
            if rule.when.tags_any == []:
                yield (*loc, "rules", j, "when", "tags_any"), "an empty list can never match"
    for i, k in enumerate(config.keys):
        for j, name in enumerate(k.models or []):
            if name not in models and name not in routes:
                yield ("keys", i, "models", j), f"unknown model or route {name!r}"
