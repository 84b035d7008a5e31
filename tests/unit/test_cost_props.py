"""Property tests for cost arithmetic: exact integers, one rounding half to even, honest bounds."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from modelplex.metering.cost import MICRO, PER_TOKENS, MicroPrice, convert, round_div, to_micro
from modelplex.types import Usage

KINDS = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens")

# up to $1,000 per 1M tokens, in micro-units; up to 10M tokens of each kind in one request
micro_prices = st.integers(min_value=0, max_value=1_000 * MICRO)
token_counts = st.integers(min_value=0, max_value=10_000_000)

prices = st.builds(
    MicroPrice,
    input=micro_prices,
    output=micro_prices,
    cached_input=micro_prices,
    cache_write=micro_prices,
    reasoning=micro_prices,
)
usages = st.builds(
    Usage,
    input_tokens=token_counts,
    output_tokens=token_counts,
    cached_input_tokens=token_counts,
    cache_write_tokens=token_counts,
    reasoning_tokens=token_counts,
)


def _exact(price: MicroPrice, u: Usage) -> Fraction:
    return Fraction(
        u.input_tokens * price.input
        + u.output_tokens * price.output
        + u.cached_input_tokens * price.cached_input
        + u.cache_write_tokens * price.cache_write
        + u.reasoning_tokens * price.reasoning,
        PER_TOKENS,
    )


def _plus(u: Usage, kind: str, extra: int) -> Usage:
    counts = {k: getattr(u, k) for k in KINDS}
    counts[kind] += extra
    return Usage(**counts)


def _sum(parts: list[Usage]) -> Usage:
    return Usage(**{k: sum(getattr(p, k) for p in parts) for k in KINDS})


# --- round_div ----------------------------------------------------------------------------------


@given(st.integers(min_value=-(10**30), max_value=10**30), st.integers(min_value=1, max_value=10**18))
@example(5, 2)  # 2.5 -> 2
@example(7, 2)  # 3.5 -> 4
@example(-5, 2)  # -2.5 -> -2
@example(-7, 2)  # -3.5 -> -4
def test_round_div_matches_fraction_half_even(numerator: int, denominator: int) -> None:
    # round() of a Fraction rounds half to even
    assert round_div(numerator, denominator) == round(Fraction(numerator, denominator))


@given(st.integers(min_value=-(10**30), max_value=10**30), st.integers(min_value=1, max_value=10**18))
def test_round_div_is_within_half(numerator: int, denominator: int) -> None:
    assert abs(Fraction(numerator, denominator) - round_div(numerator, denominator)) <= Fraction(1, 2)


# --- cost ---------------------------------------------------------------------------------------


@given(prices, usages)
def test_cost_is_the_exact_product_rounded_once(price: MicroPrice, u: Usage) -> None:
    assert price.cost(u) == round(_exact(price, u))


@given(prices, usages, st.sampled_from(KINDS), st.integers(min_value=0, max_value=10_000_000))
def test_cost_is_monotone_in_every_token_kind(price: MicroPrice, u: Usage, kind: str, extra: int) -> None:
    assert price.cost(_plus(u, kind, extra)) >= price.cost(u)


@given(usages, st.sampled_from(("input", "output", "cached_input", "cache_write", "reasoning")))
def test_cost_is_monotone_in_every_price(u: Usage, kind: str) -> None:
    cheap = MicroPrice(1, 1, 1, 1, 1)
    w = {k: 2 if k == kind else 1 for k in ("input", "output", "cached_input", "cache_write", "reasoning")}
    dear = MicroPrice(w["input"], w["output"], w["cached_input"], w["cache_write"], w["reasoning"])
    assert dear.cost(u) >= cheap.cost(u)


@given(prices, st.lists(usages, min_size=1, max_size=20))
def test_cost_of_a_sum_is_within_one_per_part_of_the_sum_of_costs(
    price: MicroPrice, parts: list[Usage]
) -> None:
    # each cost is within half a micro-unit of its exact value, so the ledger (a sum of per-request
    # costs) and the cost of the summed usage differ by at most (parts + 1) / 2 <= parts
    separate = sum(price.cost(p) for p in parts)
    together = price.cost(_sum(parts))
    assert abs(together - separate) <= len(parts)


@given(prices)
def test_no_usage_costs_nothing(price: MicroPrice) -> None:
    assert price.cost(Usage()) == 0


@given(usages)
def test_a_zero_price_costs_nothing(u: Usage) -> None:
    assert MicroPrice(0, 0, 0, 0, 0).cost(u) == 0


# --- worst_case ---------------------------------------------------------------------------------


@st.composite
def bounded_usage(draw: st.DrawFn) -> tuple[int, int, Usage]:
    """A prompt and output budget, and a usage that fits inside them in any mix of kinds."""
    prompt_tokens = draw(token_counts)
    max_output = draw(token_counts)
    cached = draw(st.integers(0, prompt_tokens))
    written = draw(st.integers(0, prompt_tokens - cached))
    uncached = draw(st.integers(0, prompt_tokens - cached - written))
    reasoning = draw(st.integers(0, max_output))
    output = draw(st.integers(0, max_output - reasoning))
    usage = Usage(
        input_tokens=uncached,
        cached_input_tokens=cached,
        cache_write_tokens=written,
        output_tokens=output,
        reasoning_tokens=reasoning,
    )
    return prompt_tokens, max_output, usage


@given(prices, bounded_usage())
@example(
    MicroPrice(input=1, output=0, cached_input=5, cache_write=1, reasoning=0),
    (1_000_000, 0, Usage(cached_input_tokens=1_000_000)),
)
def test_worst_case_bounds_every_usage_that_fits(price: MicroPrice, case: tuple[int, int, Usage]) -> None:
    prompt_tokens, max_output, usage = case
    assert usage.prompt_total <= prompt_tokens and usage.completion_total <= max_output
    assert price.worst_case(prompt_tokens, max_output) >= price.cost(usage)


@given(prices, token_counts, token_counts)
def test_worst_case_rounds_up_and_never_by_a_whole_unit(
    price: MicroPrice, prompt_tokens: int, max_output: int
) -> None:
    exact = Fraction(
        prompt_tokens * max(price.input, price.cached_input, price.cache_write)
        + max_output * max(price.output, price.reasoning),
        PER_TOKENS,
    )
    bound = price.worst_case(prompt_tokens, max_output)
    assert exact <= bound < exact + 1


# --- convert ------------------------------------------------------------------------------------

rates = st.decimals(min_value=0, max_value=10_000, places=40, allow_nan=False, allow_infinity=False)


@given(st.integers(min_value=-(10**18), max_value=10**18), rates)
@example(3, Decimal("0.1666666666666666666666666666667"))  # 0.5000...0001: Decimal's 28 digits said 0
@example(1, Decimal("0.5"))  # tie -> 0
@example(3, Decimal("0.5"))  # tie -> 2
def test_convert_rounds_the_exact_product_once_half_to_even(micro: int, rate: Decimal) -> None:
    assert convert(micro, rate) == round(Fraction(micro) * Fraction(rate))


@given(st.integers(min_value=-(10**18), max_value=10**18))
def test_convert_at_par_is_the_identity(micro: int) -> None:
    assert convert(micro, Decimal(1)) == micro
    assert convert(micro, Decimal("1.000")) == micro


@given(st.integers(min_value=0, max_value=10**18), rates, rates)
def test_convert_is_monotone_in_the_rate(micro: int, a: Decimal, b: Decimal) -> None:
    low, high = sorted((a, b))
    assert convert(micro, low) <= convert(micro, high)


# --- to_micro -----------------------------------------------------------------------------------


@given(st.decimals(min_value=0, max_value=10**9, places=6, allow_nan=False, allow_infinity=False))
def test_to_micro_is_exact_at_six_places(amount: Decimal) -> None:
    assert to_micro(amount) == amount * MICRO
    assert to_micro(str(amount)) == amount * MICRO


@given(st.integers(min_value=0, max_value=10**9), st.integers(min_value=1, max_value=9))
def test_to_micro_rejects_a_seventh_decimal(whole: int, seventh: int) -> None:
    with pytest.raises(ValueError, match="6 decimal"):
        to_micro(Decimal(whole) + Decimal(seventh) / 10**7)


@pytest.mark.parametrize(
    ("amount", "micro"), [(2.5, 2_500_000), (0.0375, 37_500), (0.006, 6_000), ("1.32", 1_320_000), (0, 0)]
)
def test_to_micro_reads_float_and_text_prices_exactly(amount: float | str, micro: int) -> None:
    assert to_micro(amount) == micro
