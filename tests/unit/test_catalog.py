"""The shipped price catalog: loads strictly, looks up by alias and date, yields to config prices,
and prices each provider's usage shape to the micro-unit."""

from __future__ import annotations

import copy
import datetime as dt
from importlib import resources
from typing import Any

import pytest
import yaml

from modelplex.config.schema import Deployment, Price
from modelplex.metering.catalog import (
    CATALOG_RESOURCE,
    Catalog,
    CatalogError,
    load_catalog,
    parse_catalog,
    resolve_price,
)
from modelplex.metering.cost import MicroPrice
from modelplex.metering.prices import micro_price
from modelplex.types import Usage

DAY = dt.date(2026, 11, 29)  # the day the shipped catalog was compiled


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


# --- the shipped data ---------------------------------------------------------------------------


def test_catalog_ships_as_package_data() -> None:
    assert resources.files("modelplex.metering").joinpath(CATALOG_RESOURCE).is_file()


def test_shipped_catalog_loads_and_validates(catalog: Catalog) -> None:
    assert len(catalog) >= 20
    assert {e.provider for e in catalog.entries} >= {
        "openai",
        "anthropic",
        "deepseek",
        "groq",
        "gemini",
        "bedrock",
    }


def test_every_entry_has_currency_date_and_official_source(catalog: Catalog) -> None:
    for entry in catalog.entries:
        assert entry.price.currency == "USD", entry.model
        assert entry.source.startswith("https://"), entry.model
        assert entry.price.input > 0 and entry.price.output > 0, entry.model
        if entry.effective_from > DAY:
            # only an announced change to a model already priced on the compile day
            current = catalog.lookup(entry.provider, entry.model, DAY)
            assert current is not None and current.effective_from <= DAY, entry.model


def test_transcribed_prices_say_where_they_were_read(catalog: Catalog) -> None:
    # gemini and bedrock prices come from dated transcriptions of the official pages
    for entry in catalog.entries:
        if entry.provider in {"gemini", "bedrock"}:
            assert "api-evangelist/" in entry.notes and "read 2026-" in entry.notes, entry.model


def test_every_shipped_model_is_priced_on_the_compile_day(catalog: Catalog) -> None:
    for entry in catalog.entries:
        for model_id in (entry.model, *entry.aliases):
            assert catalog.lookup(entry.provider, model_id, DAY) is not None, model_id


def test_prices_are_read_exactly(catalog: Catalog) -> None:
    assert catalog.price("openai", "gpt-6.2-sol", DAY) == MicroPrice(
        input=2_000_000,
        output=10_000_000,
        cached_input=100_000,
        cache_write=2_500_000,
        reasoning=10_000_000,
    )
    # finer than a cent: 0.0375 and 0.006 per 1M tokens survive as integers
    assert catalog.price("groq", "openai/gpt-oss-20b", DAY) == MicroPrice(
        75_000, 300_000, 37_500, 75_000, 300_000
    )
    flash = catalog.price("deepseek", "deepseek-flash", DAY)
    assert flash is not None and flash.cached_input == 6_000


@pytest.mark.parametrize(
    ("provider", "model", "input_", "output"),
    [
        ("gemini", "gemini-3.8-flash", 750_000, 3_750_000),
        ("gemini", "gemini-3.5-flash", 1_500_000, 9_000_000),
        ("gemini", "gemini-3.5-flash-lite", 300_000, 2_500_000),
        ("gemini", "gemini-3.1-pro-preview", 2_000_000, 12_000_000),  # the <= 200k-token tier
        # the AWS price list gives $ per 1K tokens; the catalog carries them per 1M
        ("bedrock", "amazon.nova-micro-v1:0", 35_000, 140_000),
        ("bedrock", "amazon.nova-lite-v1:0", 60_000, 240_000),
        ("bedrock", "amazon.nova-pro-v1:0", 800_000, 3_200_000),
    ],
)
def test_transcribed_providers_price_input_and_output_only(
    catalog: Catalog, provider: str, model: str, input_: int, output: int
) -> None:
    # cache reads/writes were not captured: they bill at the input price (an over-count), and
    # thinking tokens at the output price, as these providers bill them
    assert catalog.price(provider, model, DAY) == MicroPrice(input_, output, input_, input_, output)


def test_unbilled_kinds_default_to_input_and_output(catalog: Catalog) -> None:
    p = catalog.price("openai", "gpt-5-mini", DAY)
    assert p is not None
    assert p.cache_write == p.input == 250_000  # OpenAI bills no separate cache write here
    assert p.reasoning == p.output == 2_000_000  # reasoning tokens are output tokens


def test_the_catalog_file_is_plain_yaml_with_the_documented_shape() -> None:
    text = resources.files("modelplex.metering").joinpath(CATALOG_RESOURCE).read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    assert data["version"] == 1
    for raw in data["entries"]:
        assert set(raw["prices"]) >= {"input", "output"}


# --- lookup -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "alias", "model"),
    [
        ("openai", "gpt-5-mini-2025-08-07", "gpt-5-mini"),
        ("openai", "gpt-5-nano-2025-08-07", "gpt-5-nano"),
        ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("anthropic", "claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("deepseek", "deepseek-v4-flash", "deepseek-flash"),
        ("deepseek", "deepseek-v4-flash-vision-exp", "deepseek-flash"),
    ],
)
def test_lookup_by_alias(catalog: Catalog, provider: str, alias: str, model: str) -> None:
    by_alias = catalog.lookup(provider, alias, DAY)
    assert by_alias is not None
    assert by_alias == catalog.lookup(provider, model, DAY)
    assert by_alias.model == model


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "gpt-5-mini-2099-01-01"),  # an unlisted snapshot is not guessed from its prefix
        ("openai", "GPT-5-MINI"),  # ids are exact
        ("openai", "claude-sonnet-4-5"),  # a model is priced under its own provider only
        ("azure", "gpt-6.2-sol"),
        ("openai", "no-such-model"),
        ("gemini", "gemini-2.5-pro"),  # the transcription has its input price only
        ("gemini", "models/gemini-3.5-flash"),  # ids are the bare model codes
        ("bedrock", "us.amazon.nova-pro-v1:0"),  # inference profiles are not guessed from the base id
        ("bedrock", "amazon.nova-2-lite-v1:0"),  # no confirmed on-demand id and price pairing
        ("mistral", "mistral-medium-latest"),  # no official price source could be read
        ("cohere", "command-a-03-2025"),
    ],
)
def test_unknown_ids_are_unpriced(catalog: Catalog, provider: str, model: str) -> None:
    assert catalog.lookup(provider, model, DAY) is None
    assert catalog.price(provider, model, DAY) is None


def test_lookup_before_a_models_first_price_is_unpriced(catalog: Catalog) -> None:
    assert catalog.lookup("openai", "gpt-6.2-sol", dt.date(2026, 11, 16)) is None
    assert catalog.lookup("openai", "gpt-6.2-sol", dt.date(2026, 11, 17)) is not None
    # a transcribed price applies from the day it was read, not before
    assert catalog.lookup("gemini", "gemini-3.5-flash-lite", dt.date(2026, 10, 6)) is None
    assert catalog.lookup("gemini", "gemini-3.5-flash-lite", dt.date(2026, 10, 7)) is not None
    assert catalog.lookup("bedrock", "amazon.nova-pro-v1:0", dt.date(2026, 8, 31)) is None


@pytest.mark.parametrize(
    ("day", "input_", "output"),
    [
        (dt.date(2026, 9, 19), None, None),  # before the first transcription was read
        (dt.date(2026, 9, 20), 750_000, 3_750_000),
        (DAY, 750_000, 3_750_000),
        (dt.date(2026, 12, 31), 750_000, 3_750_000),  # "$0.75 through December 31, 2026"
        (dt.date(2027, 1, 1), 1_500_000, 7_500_000),  # "$1.50 starting January 1, 2027"
        (dt.date(2027, 6, 30), 1_500_000, 7_500_000),
    ],
)
def test_gemini_3_8_flash_scheduled_price_change_resolves_by_day(
    catalog: Catalog, day: dt.date, input_: int | None, output: int | None
) -> None:
    price = catalog.price("gemini", "gemini-3.8-flash", day)
    if input_ is None:
        assert price is None
    else:
        assert price is not None and (price.input, price.output) == (input_, output)
        assert price.reasoning == output  # thinking tokens are billed as output


def _entry(model: str, effective_from: str, input_: float, **extra: Any) -> dict[str, Any]:
    return {
        "provider": "acme",
        "model": model,
        "currency": "USD",
        "effective_from": effective_from,
        "source": "https://acme.example/pricing",
        "prices": {"input": input_, "output": 2 * input_},
        **extra,
    }


def test_the_newest_entry_in_force_wins() -> None:
    catalog = parse_catalog(
        {
            "version": 1,
            "entries": [
                _entry("m", "2026-03-01", 3.0, aliases=["m-2026-03-01"]),
                _entry("m", "2026-01-01", 1.0),
                _entry("m", "2026-02-01", 2.0),
            ],
        }
    )

    def input_on(day: str, model_id: str = "m") -> int | None:
        p = catalog.price("acme", model_id, dt.date.fromisoformat(day))
        return None if p is None else p.input

    assert input_on("2025-12-31") is None
    assert input_on("2026-01-01") == 1_000_000
    assert input_on("2026-01-31") == 1_000_000
    assert input_on("2026-02-01") == 2_000_000
    assert input_on("2026-12-31") == 3_000_000
    # an alias names the model's whole history, whichever entry lists it
    assert input_on("2026-01-15", "m-2026-03-01") == 1_000_000


def test_lookup_defaults_to_today(catalog: Catalog) -> None:
    today = dt.datetime.now(dt.UTC).date()
    assert catalog.lookup("openai", "gpt-5-mini") == catalog.lookup("openai", "gpt-5-mini", today)


# --- strict validation --------------------------------------------------------------------------


def _valid() -> dict[str, Any]:
    return {"version": 1, "entries": [_entry("m", "2026-01-01", 1.0), _entry("n", "2026-01-01", 1.0)]}


def _set(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


def _drop(data: dict[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return data


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        (_set(_valid(), ("extra",), 1), "extra", "unknown key"),
        (_set(_valid(), ("version",), 2), "version", "must be 1"),
        (_set(_valid(), ("entries",), []), "entries", "non-empty"),
        (_set(_valid(), ("entries", 1, "region"), "us"), "entries[1].region", "unknown key"),
        (_drop(_valid(), ("entries", 0, "source")), "entries[0].source", "missing"),
        (_drop(_valid(), ("entries", 0, "currency")), "entries[0].currency", "missing"),
        (_drop(_valid(), ("entries", 0, "effective_from")), "entries[0].effective_from", "missing"),
        (_drop(_valid(), ("entries", 0, "prices", "output")), "entries[0].prices.output", "missing"),
        (
            _set(_valid(), ("entries", 0, "prices", "cache_read"), 0.1),
            "entries[0].prices.cache_read",
            "unknown",
        ),
        (
            _set(_valid(), ("entries", 0, "prices", "input"), 0.0000001),
            "entries[0].prices.input",
            "6 decimal",
        ),
        (_set(_valid(), ("entries", 0, "prices", "input"), -1), "entries[0].prices.input", "negative"),
        (_set(_valid(), ("entries", 0, "prices", "input"), True), "entries[0].prices.input", "number"),
        (
            _set(_valid(), ("entries", 0, "prices", "input"), "cheap"),
            "entries[0].prices.input",
            "not a number",
        ),
        (_set(_valid(), ("entries", 0, "currency"), "usd"), "entries[0].currency", "matching"),
        (_set(_valid(), ("entries", 0, "effective_from"), "soon"), "entries[0].effective_from", "ISO date"),
        (
            _set(_valid(), ("entries", 0, "effective_from"), dt.datetime(2026, 1, 1, 12, 0)),
            "entries[0].effective_from",
            "not a timestamp",
        ),
        (_set(_valid(), ("entries", 0, "source"), "http://acme.example"), "entries[0].source", "https"),
        (_set(_valid(), ("entries", 0, "provider"), "Acme"), "entries[0].provider", "matching"),
        (_set(_valid(), ("entries", 0, "model"), "a model"), "entries[0].model", "matching"),
        (_set(_valid(), ("entries", 0, "aliases"), "m2"), "entries[0].aliases", "list"),
        (_set(_valid(), ("entries", 0, "aliases"), ["m"]), "entries[0].aliases", "repeats"),
        (_set(_valid(), ("entries", 0, "aliases"), ["x", "x"]), "entries[0].aliases", "duplicates"),
        (_set(_valid(), ("entries", 0, "aliases"), ["n"]), "acme/n", "names both"),
        (_set(_valid(), ("entries", 1, "model"), "m"), "acme/m", "two entries effective from"),
    ],
)
def test_malformed_catalogs_are_rejected_with_a_path(data: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(CatalogError) as info:
        parse_catalog(data)
    assert info.value.path == path
    assert message in str(info.value)


def test_the_same_model_may_be_listed_again_from_another_date() -> None:
    data = _set(_valid(), ("entries", 1), _entry("m", "2026-06-01", 0.5))
    assert len(parse_catalog(data)) == 2


def test_iso_date_strings_are_accepted() -> None:
    catalog = parse_catalog(_valid())  # _entry gives dates as strings, YAML gives date objects
    entry = catalog.lookup("acme", "m", DAY)
    assert entry is not None and entry.effective_from == dt.date(2026, 1, 1)


# --- config override ----------------------------------------------------------------------------


def test_config_price_wins_over_the_catalog(catalog: Catalog) -> None:
    dep = Deployment(name="d", provider="openai", model="gpt-6.2-sol", price=Price(input=1.5, output=6.0))
    assert resolve_price(dep, catalog, DAY) == MicroPrice(
        1_500_000, 6_000_000, 1_500_000, 1_500_000, 6_000_000
    )


def test_a_deployment_without_a_price_uses_the_catalog(catalog: Catalog) -> None:
    dep = Deployment(name="d", provider="anthropic", model="claude-haiku-4-5-20251001")
    assert resolve_price(dep, catalog, DAY) == catalog.price("anthropic", "claude-haiku-4-5", DAY)


def test_a_deployment_priced_nowhere_is_unpriced_not_free(catalog: Catalog) -> None:
    dep = Deployment(name="d", provider="vllm", model="my-finetune")
    assert resolve_price(dep, catalog, DAY) is None


# --- each provider's usage shape, priced by hand ------------------------------------------------
#
# Usage keeps token kinds apart: input excludes cache reads and writes, output excludes reasoning.
# The comments give the wire fields each Usage comes from; expected values are computed by hand
# as tokens x (micro-units per token), then rounded half to even once.


def test_openai_gpt6_usage_with_cache_reads_writes_and_reasoning(catalog: Catalog) -> None:
    # prompt_tokens 13826 = 4321 uncached + 8005 cached_tokens + 1500 cache writes;
    # completion_tokens 1536 of which reasoning_tokens 1024
    usage = Usage(
        input_tokens=4_321,
        cached_input_tokens=8_005,
        cache_write_tokens=1_500,
        output_tokens=512,
        reasoning_tokens=1_024,
    )
    price = catalog.price("openai", "gpt-6.2-sol", DAY)
    assert price is not None
    # 4321x2 + 8005x0.1 + 1500x2.5 + 512x10 + 1024x10 = 8642 + 800.5 + 3750 + 5120 + 10240
    #   = 28552.5 micro-units, a tie: half to even gives 28552
    assert price.cost(usage) == 28_552


def test_openai_classic_usage_cached_and_reasoning(catalog: Catalog) -> None:
    # prompt_tokens 10000 with cached_tokens 6144; completion_tokens 2500 with reasoning_tokens 1920
    usage = Usage(input_tokens=3_856, cached_input_tokens=6_144, output_tokens=580, reasoning_tokens=1_920)
    price = catalog.price("openai", "gpt-5-mini", DAY)
    assert price is not None
    # 3856x0.25 + 6144x0.025 + 580x2 + 1920x2 = 964 + 153.6 + 1160 + 3840 = 6117.6 -> 6118
    assert price.cost(usage) == 6_118


def test_anthropic_usage_with_cache_read_write_and_thinking(catalog: Catalog) -> None:
    # input_tokens 1200, cache_read_input_tokens 50001, cache_creation_input_tokens 10000,
    # output_tokens 700 of which thinking 300
    usage = Usage(
        input_tokens=1_200,
        cached_input_tokens=50_001,
        cache_write_tokens=10_000,
        output_tokens=400,
        reasoning_tokens=300,
    )
    price = catalog.price("anthropic", "claude-sonnet-4-5-20250929", DAY)
    assert price is not None
    # 1200x3 + 50001x0.3 + 10000x3.75 + 400x15 + 300x15 = 3600 + 15000.3 + 37500 + 6000 + 4500
    #   = 66600.3 -> 66600
    assert price.cost(usage) == 66_600


def test_anthropic_opus_5_5_cache_reads_at_a_twentieth(catalog: Catalog) -> None:
    usage = Usage(
        input_tokens=3_333, cached_input_tokens=100_000, cache_write_tokens=20_000, output_tokens=1_000
    )
    price = catalog.price("anthropic", "claude-opus-5-5", DAY)
    assert price is not None
    # 3333x4 + 100000x0.2 + 20000x5 + 1000x20 = 13332 + 20000 + 100000 + 20000
    assert price.cost(usage) == 153_332


def test_deepseek_usage_cache_hits_and_thinking(catalog: Catalog) -> None:
    # prompt_tokens 20000 with prompt_cache_hit_tokens 15083; completion_tokens 3000 with
    # reasoning_tokens 2000; billed at the peak rate
    usage = Usage(input_tokens=4_917, cached_input_tokens=15_083, output_tokens=1_000, reasoning_tokens=2_000)
    price = catalog.price("deepseek", "deepseek-v4-flash", DAY)
    assert price is not None
    # 4917x0.3 + 15083x0.006 + 1000x1.2 + 2000x1.2 = 1475.1 + 90.498 + 1200 + 2400 = 5165.598 -> 5166
    assert price.cost(usage) == 5_166


def test_groq_usage_cached_and_reasoning(catalog: Catalog) -> None:
    # prompt_tokens 3000 with cached_tokens 2048; completion_tokens 800 with reasoning_tokens 600
    usage = Usage(input_tokens=952, cached_input_tokens=2_048, output_tokens=200, reasoning_tokens=600)
    price = catalog.price("groq", "openai/gpt-oss-120b", DAY)
    assert price is not None
    # 952x0.15 + 2048x0.075 + 200x0.6 + 600x0.6 = 142.8 + 153.6 + 120 + 360 = 776.4 -> 776
    assert price.cost(usage) == 776


def test_gemini_catalog_usage_thoughts_as_output_cache_at_input(catalog: Catalog) -> None:
    # promptTokenCount 12000 including cachedContentTokenCount 9000; candidatesTokenCount 700;
    # thoughtsTokenCount 1300
    usage = Usage(input_tokens=3_000, cached_input_tokens=9_000, output_tokens=700, reasoning_tokens=1_300)
    price = catalog.price("gemini", "gemini-3.5-flash", DAY)
    assert price is not None
    # no cached price captured: 12000x1.5 + 700x9 + 1300x9 = 18000 + 6300 + 11700
    assert price.cost(usage) == 36_000
    later = catalog.price("gemini", "gemini-3.8-flash", dt.date(2027, 1, 1))
    assert later is not None
    # 12000x1.5 + 2000x7.5 = 18000 + 15000
    assert later.cost(usage) == 33_000


def test_bedrock_catalog_usage_nova_micro_sub_cent_rates(catalog: Catalog) -> None:
    # inputTokens 12345, cacheReadInputTokens 1000, outputTokens 678
    usage = Usage(input_tokens=12_345, cached_input_tokens=1_000, output_tokens=678)
    price = catalog.price("bedrock", "amazon.nova-micro-v1:0", DAY)
    assert price is not None
    # 13345x0.035 + 678x0.14 = 467.075 + 94.92 = 561.995 -> 562
    assert price.cost(usage) == 562


# Providers and models without catalog entries are priced from config; their usage shapes still
# meter exactly.


def test_gemini_usage_cached_content_and_thoughts() -> None:
    # promptTokenCount 12000 including cachedContentTokenCount 9000; candidatesTokenCount 700;
    # thoughtsTokenCount 1300 (billed as output)
    usage = Usage(input_tokens=3_000, cached_input_tokens=9_000, output_tokens=700, reasoning_tokens=1_300)
    price = micro_price(Price(input=1.25, output=10.0, cached_input=0.125))
    # 3000x1.25 + 9000x0.125 + 700x10 + 1300x10 = 3750 + 1125 + 7000 + 13000
    assert price.cost(usage) == 24_875


def test_bedrock_converse_usage_cache_read_and_write() -> None:
    # inputTokens 800, cacheReadInputTokens 40000, cacheWriteInputTokens 5000, outputTokens 1200
    usage = Usage(input_tokens=800, cached_input_tokens=40_000, cache_write_tokens=5_000, output_tokens=1_200)
    price = micro_price(Price(input=3.0, output=15.0, cached_input=0.3, cache_write=3.75))
    # 800x3 + 40000x0.3 + 5000x3.75 + 1200x15 = 2400 + 12000 + 18750 + 18000
    assert price.cost(usage) == 51_150


def test_mistral_usage_prompt_and_completion() -> None:
    usage = Usage(input_tokens=2_000, output_tokens=500)  # prompt_tokens, completion_tokens
    price = micro_price(Price(input=0.4, output=2.0))
    assert price.cost(usage) == 800 + 1_000


def test_cohere_usage_billed_units() -> None:
    usage = Usage(input_tokens=6_772, output_tokens=248)  # billed_units, not the raw token counts
    price = micro_price(Price(input=2.5, output=10.0))
    assert price.cost(usage) == 16_930 + 2_480
