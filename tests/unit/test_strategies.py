"""Pool strategies: the order each one gives a model's deployments, with Health and the random
generator under the test's control; and how planning applies it to a pool and its fallbacks."""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import pytest

from modelplex.config.schema import Config, Routing
from modelplex.context import AttemptRecord, RequestContext
from modelplex.errors import UpstreamRateLimited, UpstreamServerError
from modelplex.providers.registry import load_registry
from modelplex.routing.execute import Executor, Policy
from modelplex.routing.features import Features
from modelplex.routing.health import HEADROOM_WINDOW_S, Health
from modelplex.routing.plan import plan
from modelplex.routing.strategies import (
    STRATEGIES,
    cheapest,
    headroom,
    latency,
    least_busy,
    ordered,
    weighted,
)
from modelplex.runtime import Endpoint, Runtime, build_runtime
from modelplex.transport import Transport

NOW = 1_000_000.0


def runtime(deployments: list[dict[str, Any]], strategy: str = "ordered", **model: Any) -> Runtime:
    deps = [{"provider": "openai", "model": d["name"], "api_key": "k", **d} for d in deployments]
    config = Config.model_validate({
        "deployments": deps,
        "models": [{"name": "m", "deployments": [d["name"] for d in deps], "strategy": strategy, **model}],
    })
    return build_runtime(config, load_registry())


def pool(*names: str, **per: dict[str, Any]) -> list[Endpoint]:
    rt = runtime([{"name": n, **per.get(n, {})} for n in names])
    return list(rt.models["m"].endpoints)


def feats(stream: bool = False, prompt_tokens: int = 1000, max_tokens: int | None = None) -> Features:
    return Features(prompt_text="", prompt_chars=0, prompt_tokens=prompt_tokens, prompt_words=0,
                    max_tokens=max_tokens, tools=False, json_schema=False, vision=False, stream=stream, task=None,
                    tags=frozenset(), team=None, tier=None, key=None, dialect="openai")


def names(eps: list[Endpoint]) -> list[str]:
    return [e.name for e in eps]


def health() -> Health:
    return Health(Routing(), clock=lambda: NOW)


def test_every_configurable_strategy_is_registered() -> None:
    from modelplex.config.schema import Model

    assert set(STRATEGIES) == set(Model.model_fields["strategy"].annotation.__args__)  # type: ignore[union-attr]


def test_ordered_keeps_config_order() -> None:
    eps = pool("c", "a", "b")
    assert names(ordered(eps, health(), feats(), random.Random(0), NOW)) == ["c", "a", "b"]


def test_weighted_draws_in_proportion_to_weight() -> None:
    eps = pool("heavy", "light", "off", heavy={"weight": 3}, light={"weight": 1}, off={"weight": 0})
    rng = random.Random(42)
    firsts = Counter(weighted(eps, health(), feats(), rng, NOW)[0].name for _ in range(4000))
    assert firsts["off"] == 0
    assert 0.72 < firsts["heavy"] / 4000 < 0.78  # 3 / (3 + 1)
    # A weight-0 deployment is never first, but stays in the order as a last resort.
    assert all(names(weighted(eps, health(), feats(), rng, NOW))[-1] == "off" for _ in range(100))


def test_weighted_is_reproducible_with_the_same_seed() -> None:
    eps = pool("a", "b", "c", "d")
    draws = [names(weighted(eps, health(), feats(), random.Random(7), NOW)) for _ in range(3)]
    assert draws[0] == draws[1] == draws[2]
    assert len({tuple(names(weighted(eps, health(), feats(), random.Random(s), NOW))) for s in range(50)}) > 1


def test_latency_puts_unmeasured_first_then_lowest_ewma() -> None:
    eps = pool("slow", "fast", "new")
    h = health()
    h.success("slow", NOW, ttft=0.9, total=2.0)
    h.success("fast", NOW, ttft=0.1, total=3.0)
    assert names(latency(eps, h, feats(stream=True), random.Random(0), NOW)) == ["new", "fast", "slow"]
    # Without a stream the total time counts, and there `slow` is quicker.
    assert names(latency(eps, h, feats(stream=False), random.Random(0), NOW)) == ["new", "slow", "fast"]


def test_latency_follows_the_moving_average() -> None:
    eps = pool("a", "b")
    h = health()
    h.success("a", NOW, ttft=0.1, total=None)
    h.success("b", NOW, ttft=0.2, total=None)
    assert names(latency(eps, h, feats(stream=True), random.Random(0), NOW)) == ["a", "b"]
    for _ in range(10):  # `a` slows down: its EWMA passes b's
        h.success("a", NOW, ttft=1.0, total=None)
    assert names(latency(eps, h, feats(stream=True), random.Random(0), NOW)) == ["b", "a"]


def test_least_busy_orders_by_in_flight() -> None:
    eps = pool("a", "b", "c")
    h = health()
    for name, n in (("a", 3), ("b", 0), ("c", 1)):
        for _ in range(n):
            h.started(name, NOW, retry=False)
    assert names(least_busy(eps, h, feats(), random.Random(0), NOW)) == ["b", "c", "a"]
    h.finished("a")
    h.finished("a")
    h.finished("a")
    assert names(least_busy(eps, h, feats(), random.Random(0), NOW))[0] in ("a", "b")


def test_cheapest_weighs_input_and_output_for_this_request() -> None:
    eps = pool(
        "cheap-in", "cheap-out", "unpriced",
        **{"cheap-in": {"price": {"input": 0.1, "output": 10.0}},
           "cheap-out": {"price": {"input": 2.0, "output": 1.0}}},
    )
    h, rng = health(), random.Random(0)
    # A long prompt with a short answer: input price dominates.
    assert names(cheapest(eps, h, feats(prompt_tokens=10_000, max_tokens=10), rng, NOW)) == [
        "cheap-in", "cheap-out", "unpriced"]
    # A short prompt with a long answer: output price dominates.
    assert names(cheapest(eps, h, feats(prompt_tokens=10, max_tokens=4000), rng, NOW)) == [
        "cheap-out", "cheap-in", "unpriced"]


def test_cheapest_assumes_a_default_answer_length() -> None:
    from modelplex.routing.strategies import DEFAULT_OUTPUT_TOKENS

    eps = pool("a", "b", a={"price": {"input": 1.0, "output": 2.0}}, b={"price": {"input": 2.0, "output": 1.0}})
    # 100 in + 256 out: a = 100 + 512, b = 200 + 256, so b; with max_tokens=10 a wins.
    assert DEFAULT_OUTPUT_TOKENS == 256
    assert names(cheapest(eps, health(), feats(prompt_tokens=100), random.Random(0), NOW))[0] == "b"
    assert names(cheapest(eps, health(), feats(prompt_tokens=100, max_tokens=10), random.Random(0), NOW))[0] == "a"


def test_headroom_orders_by_share_of_rpm_tpm_left() -> None:
    eps = pool("a", "b", "c", "free", a={"rpm": 10}, b={"rpm": 100}, c={"tpm": 1000})
    h = health()
    for _ in range(5):
        h.success("a", NOW - 1, ttft=None, total=0.1, tokens=10)  # 50 % of rpm used
        h.success("b", NOW - 1, ttft=None, total=0.1, tokens=10)  # 5 % of rpm
    h.success("c", NOW - 1, ttft=None, total=0.1, tokens=800)  # 80 % of tpm
    assert names(headroom(eps, h, feats(), random.Random(0), NOW)) == ["free", "b", "a", "c"]


def test_headroom_forgets_use_older_than_its_window() -> None:
    eps = pool("a", "b", a={"rpm": 10}, b={"rpm": 10})
    h = health()
    for _ in range(9):
        h.success("a", NOW - HEADROOM_WINDOW_S - 1, ttft=None, total=0.1)
    h.success("b", NOW - 1, ttft=None, total=0.1)
    assert names(headroom(eps, h, feats(), random.Random(0), NOW)) == ["a", "b"]


@pytest.mark.parametrize("strategy", ["latency", "least_busy", "cheapest", "headroom"])
def test_ties_are_broken_at_random(strategy: str) -> None:
    eps = pool("a", "b", "c", "d")
    orders = {tuple(names(STRATEGIES[strategy](eps, health(), feats(), random.Random(s), NOW))) for s in range(40)}
    assert len(orders) > 1


# --- planning applies the strategy per pool ------------------------------------------------------


def test_plan_orders_the_pool_then_appends_fallback_pools() -> None:
    deps = [{"name": n, "provider": "openai", "model": n, "api_key": "k"} for n in ("p1", "p2", "f1", "f2")]
    config = Config.model_validate({
        "deployments": deps,
        "models": [
            {"name": "m", "deployments": ["p1", "p2"], "strategy": "least_busy", "fallbacks": ["fb"]},
            {"name": "fb", "deployments": ["f1", "f2"]},
        ],
    })
    rt = build_runtime(config, load_registry())
    h = health()
    h.started("p1", NOW, retry=False)
    h.started("f1", NOW, retry=False)  # the fallback pool is `ordered`: load does not matter there
    p = plan(rt, h, "m", None, feats(), random.Random(0), NOW)
    assert [(c.model, c.endpoint.name) for c in p.candidates] == [
        ("m", "p2"), ("m", "p1"), ("fb", "f1"), ("fb", "f2")]
    assert p.reason == "model"


def test_plan_leaves_out_deployments_that_cannot_serve_the_request() -> None:
    rt = runtime([{"name": "small", "capabilities": {"context_window": 500}},
                  {"name": "notools", "capabilities": {"tools": False}},
                  {"name": "big", "capabilities": {"context_window": 100_000}}])
    p = plan(rt, health(), "m", None, feats(prompt_tokens=1000), random.Random(0), NOW)
    assert [c.endpoint.name for c in p.candidates] == ["notools", "big"]
    assert p.skipped == ["small: context window"]


# --- the health that strategies and execution read ----------------------------------------------
# Regression tests for faults the orchestration benchmark found (benchmarks/orchestration/).


def state(h: Health, name: str) -> str:
    return h.of(name).breaker.state


def test_a_success_begun_before_the_breaker_opened_does_not_close_it() -> None:
    h = health()
    for _ in range(5):
        h.failure("a", UpstreamServerError("down"), NOW)
    assert state(h, "a") == "open"
    h.success("a", NOW + 0.1, ttft=0.1, total=None)  # an attempt that was in flight all along
    assert state(h, "a") == "open" and not h.available("a", NOW + 0.1)
    assert h.acquire("a", NOW + 5.0)  # the half-open probe...
    h.success("a", NOW + 5.1, ttft=0.1, total=None)  # ...closes it
    assert state(h, "a") == "closed"


def test_a_429_on_the_half_open_probe_releases_it() -> None:
    h = health()
    for _ in range(5):
        h.failure("a", UpstreamServerError("down"), NOW)
    assert h.acquire("a", NOW + 5.0)
    h.failure("a", UpstreamRateLimited("slow down", retry_after=0.5), NOW + 5.0)
    assert not h.available("a", NOW + 5.2)  # cooling down for Retry-After...
    assert h.acquire("a", NOW + 5.6)  # ...then a new probe, not a deployment lost for good


async def test_a_retry_does_not_go_to_a_deployment_whose_breaker_just_opened() -> None:
    config = Config.model_validate({
        "deployments": [{"name": n, "provider": "openai", "model": n, "api_key": "k"} for n in ("p", "f")],
        "models": [{"name": "m", "deployments": ["p"], "fallbacks": ["fb"]}, {"name": "fb", "deployments": ["f"]}],
        "routing": {"breaker": {"consecutive_failures": 1}, "retry": {"backoff_base_ms": 1}},
    })
    rt = build_runtime(config, load_registry())
    h = Health(config.routing)
    ctx = RequestContext(dialect="openai", operation="chat")
    ctx.deadline = time.monotonic() + 10
    p = plan(rt, h, "m", None, feats(), random.Random(0), time.time())
    policy = Policy(retry=config.routing.retry, hedge=config.routing.hedge, continuation=False, key="m")
    ex = Executor(rt, Transport(), h, ctx, p, policy, random.Random(0))
    first = await ex._next(wait=True)
    assert first is not None and first[0].endpoint.name == "p"
    ex.tries["p"] = 1
    record = AttemptRecord(deployment="p", provider="openai", model="m", started=time.monotonic())
    ex._failed(first[0], record, UpstreamServerError("500"))  # opens p's breaker (1 failure)
    step = await ex._next(wait=True)
    assert step is not None and (step[0].endpoint.name, step[1]) == ("f", False)
