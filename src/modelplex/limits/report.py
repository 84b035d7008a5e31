"""How full each budget is: for budget alerts and the dashboard.

Budgets named in the config (`budgets:` with a `name` other than `*`) and budgets on team records in
the key store are reported as `<scope>:<name>:<period>` -> (spent, cap) in reporting micro-units.
Budgets given per key or user (or with `name: "*"`) are enforced but not enumerated here.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from modelplex.metering.cost import to_micro
from modelplex.services import Services
from modelplex.storage.base import BudgetRule, StoreUnavailable


def budget_source(svc: Services) -> Callable[[], Awaitable[dict[str, tuple[int, int]]]]:
    async def usage() -> dict[str, tuple[int, int]]:
        stores = svc.stores
        if stores is None:
            return {}
        rules: list[BudgetRule] = []
        for b in svc.runtime().config.budgets:
            if b.name != "*":
                rules.append(BudgetRule(f"{b.scope}:{b.name}", b.period, to_micro(b.amount), b.hard))
        try:
            for team in await stores.keys.list_teams():
                rules.extend(
                    BudgetRule(f"team:{team.name}", s.period, s.amount_micro, s.hard) for s in team.budgets
                )
        except StoreUnavailable:
            pass
        out: dict[str, tuple[int, int]] = {}
        now = time.time()
        for rule in rules:
            try:
                state = await stores.counters.budget_state(rule, now)
            except StoreUnavailable:
                continue
            out[f"{rule.scope}:{rule.period}"] = (state.spent_micro, rule.cap_micro)
        return out

    return usage


def dashboard_budgets(svc: Services) -> Callable[[], Awaitable[list[dict[str, object]]]]:
    """The same budgets, in the shape the dashboard's budget panel draws."""
    source = budget_source(svc)

    async def rows() -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for name, (spent, cap) in sorted((await source()).items()):
            scope, _, period = name.rpartition(":")
            out.append({"scope": scope, "period": period, "spent_micro": spent, "limit_micro": cap})
        return out

    return rows
