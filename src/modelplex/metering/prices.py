"""Prices as integers: a deployment's configured price in micro-units per 1M tokens."""

from __future__ import annotations

from modelplex.config.schema import Price
from modelplex.metering.cost import MicroPrice, to_micro


def micro_price(p: Price) -> MicroPrice:
    """Unset kinds default as most providers bill them: cache reads and writes at the input price,
    reasoning at the output price."""
    input_ = to_micro(p.input)
    output = to_micro(p.output)
    return MicroPrice(
        input=input_,
        output=output,
        cached_input=to_micro(p.cached_input) if p.cached_input is not None else input_,
        cache_write=to_micro(p.cache_write) if p.cache_write is not None else input_,
        reasoning=to_micro(p.reasoning) if p.reasoning is not None else output,
        currency=p.currency,
    )
