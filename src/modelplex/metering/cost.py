"""Cost arithmetic in integers: prices in micro-units per 1M tokens, costs in micro-units.

A request's cost is computed exactly (tokens × micro-price is an integer of 1e-12 units) and rounded
once, half to even, to micro-units; every later sum is of integers, so a ledger always equals the
sum of its requests. Currency conversion is one more single rounding with a decimal rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from modelplex.types import Usage

MICRO = 1_000_000
PER_TOKENS = 1_000_000  # prices are per 1M tokens


def to_micro(amount: float | int | str | Decimal) -> int:
    """An amount of currency (e.g. 2.5) as integer micro-units; more than 6 decimals is an error."""
    try:
        d = Decimal(str(amount))
    except InvalidOperation:
        raise ValueError(f"not a number: {amount!r}") from None
    scaled = d * MICRO
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} has more than 6 decimal places")
    return int(scaled)


def micro_to_str(micro: int, places: int = 6) -> str:
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    return f"{sign}{whole}.{frac:06d}"[: len(f"{sign}{whole}.") + places]


def round_div(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half to even, in integers."""
    q, r = divmod(numerator, denominator)
    twice = 2 * r
    if twice > denominator or (twice == denominator and q % 2 == 1):
        q += 1
    return q


@dataclass(frozen=True, slots=True)
class MicroPrice:
    """Micro-units of `currency` per 1M tokens of each kind."""

    input: int
    output: int
    cached_input: int
    cache_write: int
    reasoning: int
    currency: str = "USD"

    def cost(self, u: Usage) -> int:
        exact = (
            u.input_tokens * self.input
            + u.output_tokens * self.output
            + u.cached_input_tokens * self.cached_input
            + u.cache_write_tokens * self.cache_write
            + u.reasoning_tokens * self.reasoning
        )
        return round_div(exact, PER_TOKENS)

    def worst_case(self, prompt_tokens: int, max_output_tokens: int) -> int:
        """Upper bound before the answer: every prompt token at the dearest prompt price (uncached,
        cache read or cache write), every output token at the dearer of output and reasoning price."""
        prompt_price = max(self.input, self.cached_input, self.cache_write)
        exact = prompt_tokens * prompt_price + max_output_tokens * max(self.output, self.reasoning)
        return -(-exact // PER_TOKENS)


def convert(micro: int, rate: Decimal) -> int:
    """micro-units of one currency -> micro-units of another at `rate` (target per source).

    The product is taken exactly as a ratio of integers: Decimal arithmetic would round it to the
    context precision (28 digits) before the final rounding, a second rounding that can land on
    the wrong side of a half.
    """
    numerator, denominator = rate.as_integer_ratio()
    return round_div(micro * numerator, denominator)
