"""The counter rules that apply to one request: from the config, the key, its team and its user.

Scopes name counters: `key:<id>`, `team:<name>`, `user:<id>`, `model:<name>`, `route:<name>`.
Where several rules give the same scope and kind (a key's own RPM and a config rule for every key),
the tighter limit wins.
"""

from __future__ import annotations

from modelplex.metering.cost import to_micro
from modelplex.metering.meter import Meter
from modelplex.routing.plan import Plan
from modelplex.runtime import Caller, Runtime
from modelplex.storage.base import BudgetRule, BudgetSpec, LimitSpec, RateRule, TeamRecord, UserRecord

PROMPT_OVERHEAD_TOKENS = 64  # per request, on top of the prompt's bytes, for the worst case


def key_scope(caller: Caller) -> str:
    return f"key:{caller.key_id or 'cfg:' + caller.key_name}"


def describe(scope: str) -> str:
    kind, _, name = scope.partition(":")
    return f"{kind} {name!r}" if name else scope


def _scopes(caller: Caller, model: str) -> dict[str, str]:
    out = {"key": key_scope(caller), "team": f"team:{caller.team}", "model": f"model:{model}"}
    if caller.user:
        out["user"] = f"user:{caller.user}"
    return out


def _names(caller: Caller, model: str, route: str | None) -> dict[str, str | None]:
    return {"key": caller.key_name, "team": caller.team, "user": caller.user, "model": model, "route": route}


def rate_rules(
    rt: Runtime, caller: Caller, team: TeamRecord | None, user: UserRecord | None, model: str
) -> tuple[list[RateRule], list[tuple[str, int]]]:
    """(rate-window rules, concurrency (scope, limit) pairs) for this request."""
    scopes = _scopes(caller, model)
    names = _names(caller, model, None)
    limits: dict[tuple[str, str], int] = {}

    def add(scope: str, spec: LimitSpec) -> None:
        for kind, value in (("rpm", spec.rpm), ("tpm", spec.tpm), ("concurrency", spec.concurrency)):
            if value is not None:
                key = (scope, kind)
                limits[key] = min(limits.get(key, value), value)

    add(scopes["key"], LimitSpec(caller.rpm, caller.tpm, caller.concurrency))
    if team is not None:
        add(scopes["team"], team.limits)
    if user is not None and "user" in scopes:
        add(scopes["user"], user.limits)
    for rule in rt.config.limits:
        name = names.get(rule.scope)
        if rule.scope in scopes and name is not None and rule.name in ("*", name):
            add(scopes[rule.scope], LimitSpec(rule.rpm, rule.tpm, rule.concurrency))
    rates = [
        RateRule(scope, "rpm" if kind == "rpm" else "tpm", limit)
        for (scope, kind), limit in sorted(limits.items())
        if kind in ("rpm", "tpm")
    ]
    leases = [(scope, limit) for (scope, kind), limit in sorted(limits.items()) if kind == "concurrency"]
    return rates, leases


def budget_rules(
    rt: Runtime, caller: Caller, team: TeamRecord | None, user: UserRecord | None, route: str | None
) -> list[BudgetRule]:
    scopes = {"key": key_scope(caller), "team": f"team:{caller.team}"}
    if caller.user:
        scopes["user"] = f"user:{caller.user}"
    if route:
        scopes["route"] = f"route:{route}"
    names = _names(caller, "", route)
    rules: dict[tuple[str, str, bool], int] = {}

    def add(scope: str, spec: BudgetSpec) -> None:
        key = (scope, spec.period, spec.hard)
        rules[key] = min(rules.get(key, spec.amount_micro), spec.amount_micro)

    for spec in caller.budgets:
        add(scopes["key"], spec)
    if team is not None:
        for spec in team.budgets:
            add(scopes["team"], spec)
    if user is not None and "user" in scopes:
        for spec in user.budgets:
            add(scopes["user"], spec)
    for rule in rt.config.budgets:
        name = names.get(rule.scope)
        if rule.scope in scopes and name is not None and rule.name in ("*", name):
            add(scopes[rule.scope], BudgetSpec(rule.period, to_micro(rule.amount), rule.hard))
    return [BudgetRule(scope, period, cap, hard) for (scope, period, hard), cap in sorted(rules.items())]  # type: ignore[arg-type]


def worst_case_micro(plan: Plan, default_max_output: int, meter: Meter) -> int:
    """The most this request can cost, in reporting micro-units, on any candidate it may reach.

    Prompt tokens are bounded by the prompt's characters (a token is at least one byte of text
    in every tokenizer modelplex meters), so the reservation holds even for unusual text.
    """
    f = plan.features
    prompt = f.prompt_chars + PROMPT_OVERHEAD_TOKENS
    worst = 0
    for c in plan.candidates:
        price = c.endpoint.price
        if price is None:
            continue
        cap = c.endpoint.deployment.capabilities.max_output_tokens
        out = f.max_tokens or default_max_output
        if cap is not None:
            out = min(out, cap)
        micro = meter.to_report(price.worst_case(prompt, out), price.currency)
        worst = max(worst, micro or 0)
    return worst
