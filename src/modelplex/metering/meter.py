"""Settle a finished request's money: answer cost, waste, counterfactual cost, in integers.

* cost: what the answer cost, in the answering provider's currency and in the reporting currency.
  A failed request has no answer: everything it spent is waste.
* waste: tokens a provider charged for attempts that did not become the answer (hedge losers,
  failed attempts that reported usage, a stream cut mid-way).
* counterfactual: what the same usage would have cost on the route's baseline model, in the
  reporting currency; savings = counterfactual - cost.
* unpriced: the answering deployment has no price: cost is None, never 0, and it is counted.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from modelplex.config.schema import Metering
from modelplex.context import RequestContext
from modelplex.metering.cost import MicroPrice, convert
from modelplex.runtime import Runtime


class Meter:
    def __init__(self, settings: Metering) -> None:
        self.currency = settings.currency
        self.rates: dict[str, Decimal] = {settings.currency: Decimal(1)}
        for code, rate in settings.exchange_rates.items():
            try:
                self.rates[code] = Decimal(rate)
            except InvalidOperation:
                raise ValueError(f"metering.exchange_rates.{code}: not a number: {rate!r}") from None

    def to_report(self, micro: int, currency: str) -> int | None:
        rate = self.rates.get(currency)
        return convert(micro, rate) if rate is not None else None

    def _report_cost(self, price: MicroPrice | None, ctx_usage: object) -> int | None:
        from modelplex.types import Usage

        if price is None or not isinstance(ctx_usage, Usage):
            return None
        return self.to_report(price.cost(ctx_usage), price.currency)

    def settle(self, rt: Runtime, ctx: RequestContext) -> None:
        answered = ctx.answered_by
        failed = ctx.error is not None or ctx.aborted
        waste = 0
        for a in ctx.attempts:
            # The answer's own usage is the request's usage: counted below, once, as cost or waste.
            if a.usage is None or a.usage is ctx.usage:
                continue
            endpoint = rt.endpoints.get(a.deployment)
            cost = self._report_cost(endpoint.price if endpoint else None, a.usage)
            waste += cost or 0
        ctx.unpriced = answered is not None and answered.price is None
        if answered is not None and answered.price is not None and ctx.usage is not None:
            price = answered.price
            native = price.cost(ctx.usage)
            report = self.to_report(native, price.currency)
            if failed:
                waste += report or 0
            else:
                ctx.cost_micro, ctx.cost_currency, ctx.report_cost_micro = native, price.currency, report
        ctx.waste_micro = waste
        ctx.counterfactual_micro = self._counterfactual(rt, ctx) if not failed else None

    def _counterfactual(self, rt: Runtime, ctx: RequestContext) -> int | None:
        route = rt.routes.get(ctx.route) if ctx.route else None
        if route is None or route.baseline is None or ctx.usage is None:
            return ctx.report_cost_micro
        baseline = rt.models.get(route.baseline)
        if baseline is None:
            return None
        price = next((e.price for e in baseline.endpoints if e.price is not None), None)
        if price is None:
            return None
        return self.to_report(price.cost(ctx.usage), price.currency)
