"""Pool strategies: the order in which a model's deployments are tried."""

from __future__ import annotations

import random
from collections.abc import Callable

from modelplex.routing.features import Features
from modelplex.routing.health import Health
from modelplex.runtime import Endpoint

DEFAULT_OUTPUT_TOKENS = 256  # for the cheapest strategy when the caller sets no max_tokens

Strategy = Callable[[list[Endpoint], Health, Features, random.Random, float], list[Endpoint]]


def ordered(
    eps: list[Endpoint], health: Health, f: Features, rng: random.Random, now: float
) -> list[Endpoint]:
    return eps


def weighted(
    eps: list[Endpoint], health: Health, f: Features, rng: random.Random, now: float
) -> list[Endpoint]:
    # Efraimidis-Spirakis: sorting by u^(1/w) draws without replacement in proportion to weight.
    keyed = [
        (rng.random() ** (1.0 / e.deployment.weight) if e.deployment.weight > 0 else -1.0, e) for e in eps
    ]
    keyed.sort(key=lambda pair: pair[0], reverse=True)
    return [e for _, e in keyed]


def latency(
    eps: list[Endpoint], health: Health, f: Features, rng: random.Random, now: float
) -> list[Endpoint]:
    """Lowest EWMA first: time to first token for streams, total time otherwise. A deployment with
    no measurements yet goes first, so every one gets measured."""

    def key(e: Endpoint) -> tuple[float, float]:
        h = health.of(e.name)
        value = h.ewma_ttft if f.stream else h.ewma_total
        return (value if value is not None else -1.0, rng.random())

    return sorted(eps, key=key)


def least_busy(
    eps: list[Endpoint], health: Health, f: Features, rng: random.Random, now: float
) -> list[Endpoint]:
    return sorted(eps, key=lambda e: (health.of(e.name).inflight, rng.random()))


def cheapest(
    eps: list[Endpoint], health: Health, f: Features, rng: random.Random, now: float
) -> list[Endpoint]:
    """Lowest expected cost for this request's size; unpriced deployments last."""
    out_tokens = f.max_tokens or DEFAULT_OUTPUT_TOKENS

    def key(e: Endpoint) -> tuple[int, int, float]:
        if e.price is None:
            return (1, 0, rng.random())
        return (0, f.prompt_tokens * e.price.input + out_tokens * e.price.output, rng.random())

    return sorted(eps, key=key)


def headroom(
    eps: list[Endpoint], health: Health, f: Features, rng: random.Random, now: float
) -> list[Endpoint]:
    """Most RPM/TPM headroom left in the last minute first."""
    return sorted(
        eps, key=lambda e: (-health.headroom(e.name, e.deployment.rpm, e.deployment.tpm, now), rng.random())
    )


STRATEGIES: dict[str, Strategy] = {
    "ordered": ordered,
    "weighted": weighted,
    "latency": latency,
    "least_busy": least_busy,
    "cheapest": cheapest,
    "headroom": headroom,
}
