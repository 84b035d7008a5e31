"""Routing end to end: a real gateway where `model: auto` routes on request features (the response
names the rule), each pool strategy as seen through x-modelplex-deployment, and the seed example
of docs/routing.md run exactly as written there."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import yaml

from helpers import GATEWAY_KEY, ROOT, Gateway, Sims, base_config, deployment

RESEARCH_KEY = "sk-test-research-key-0001"
GOLD_KEY = "sk-test-gold-tier-key-0001"
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"q": {"type": "string"}}}}}
SCHEMA = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {
    "type": "object", "properties": {"answer": {"type": "string"}}}}}

# model -> its deployments (upstream model name on the simulator, extra settings)
POOLS: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "m-default": [("rt-default", "rt-default", {})],
    "m-words": [("rt-words", "rt-words", {})],
    "m-task": [("rt-task", "rt-task", {})],
    "m-tags": [("rt-tags", "rt-tags", {})],
    "m-team": [("rt-team", "rt-team", {})],
    "m-tier": [("rt-tier", "rt-tier", {})],
    "m-tools": [("rt-tools", "rt-tools", {})],
    "m-schema": [("rt-schema", "rt-schema", {})],
    "m-anthropic": [("rt-dialect", "rt-dialect", {})],
    "s-ordered": [("ord-1", "ord-1", {}), ("ord-2", "ord-2", {})],
    "s-weighted": [("w-heavy", "w-heavy", {"weight": 3}), ("w-light", "w-light", {"weight": 1}),
                   ("w-off", "w-off", {"weight": 0})],
    "s-latency": [("lat-slow", "lat-slow+ttft_ms=250", {}), ("lat-fast", "lat-fast+ttft_ms=5", {})],
    "s-least_busy": [("busy-a", "busy+tokens_per_s=10+output_tokens=20", {}),
                     ("busy-b", "busy+tokens_per_s=10+output_tokens=20", {})],
    "s-cheapest": [("cost-high", "cost-high", {"price": {"input": 3.0, "output": 15.0}}),
                   ("cost-low", "cost-low", {"price": {"input": 0.15, "output": 0.6}}),
                   ("cost-none", "cost-none", {})],
    "s-headroom": [("room-small", "room-small", {"rpm": 4}), ("room-big", "room-big", {"rpm": 1000})],
}
RULES = [
    {"name": "tools", "when": {"tools": True}, "model": "m-tools"},
    {"name": "schema", "when": {"json_schema": True}, "model": "m-schema"},
    {"name": "urgent", "when": {"tags_any": ["urgent", "pager"]}, "model": "m-tags"},
    {"name": "research-team", "when": {"team": "research"}, "model": "m-team"},
    {"name": "gold-tier", "when": {"tier": ["gold", "platinum"]}, "model": "m-tier"},
    {"name": "summaries", "when": {"task": "summary"}, "model": "m-task"},
    {"when": {"dialect": "anthropic"}, "model": "m-anthropic"},  # unnamed: labelled rules[6]
    {"name": "long", "when": {"prompt_words": {"gt": 50}}, "model": "m-words"},
]


def routing_config(sims: Sims) -> dict[str, Any]:
    sim = sims["openai"]
    deps, models = [], []
    for model, pool in POOLS.items():
        for name, upstream, extra in pool:
            deps.append(deployment(name, "openai", sim, upstream, **extra))
        strategy = model.split("-", 1)[1] if model.startswith("s-") else "ordered"
        models.append({"name": model, "deployments": [n for n, _, _ in pool], "strategy": strategy})
    cfg = base_config(deps, models, routes=[{"name": "auto", "rules": RULES, "default": "m-default"}])
    cfg["keys"] += [{"name": "research", "key": RESEARCH_KEY, "team": "research"},
                    {"name": "gold", "key": GOLD_KEY, "team": "sales", "tier": "gold"}]
    return cfg


@pytest.fixture(scope="module")
def gw(sims: Sims, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    g = Gateway(routing_config(sims), tmp_path_factory.mktemp("routing"))
    yield g
    g.stop()


def call(gw: Gateway, model: str = "auto", key: str = GATEWAY_KEY, headers: dict[str, str] | None = None,
         text: str = "hello there", **kw: Any) -> Any:
    c = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0, timeout=20)
    raw = c.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], extra_headers=headers or {}, **kw)
    return raw.headers


@pytest.mark.parametrize(
    ("kwargs", "deployment", "reason"),
    [
        ({}, "rt-default", "default"),
        ({"text": "word " * 51}, "rt-words", "long"),
        ({"text": "word " * 50}, "rt-default", "default"),
        ({"headers": {"x-modelplex-task": "summary"}}, "rt-task", "summaries"),
        ({"metadata": {"task": "summary"}}, "rt-task", "summaries"),
        ({"headers": {"x-modelplex-tags": "batch, pager"}}, "rt-tags", "urgent"),
        ({"metadata": {"tags": "urgent"}}, "rt-tags", "urgent"),
        ({"key": RESEARCH_KEY}, "rt-team", "research-team"),
        ({"key": GOLD_KEY}, "rt-tier", "gold-tier"),
        ({"tools": [TOOL]}, "rt-tools", "tools"),
        ({"response_format": SCHEMA}, "rt-schema", "schema"),
        # Rule order: tools come before the team rule, the team rule before the task rule.
        ({"key": RESEARCH_KEY, "tools": [TOOL]}, "rt-tools", "tools"),
        ({"key": RESEARCH_KEY, "headers": {"x-modelplex-task": "summary"}}, "rt-team", "research-team"),
    ],
)
def test_auto_routes_on_request_features(gw: Gateway, kwargs: dict[str, Any], deployment: str,
                                         reason: str) -> None:
    headers = call(gw, **kwargs)
    assert headers["x-modelplex-route"] == f"auto; {reason}"
    assert headers["x-modelplex-deployment"] == deployment


def test_unnamed_rule_is_labelled_by_position_and_dialect_counts(gw: Gateway) -> None:
    c = anthropic.Anthropic(base_url=gw.url, api_key=GATEWAY_KEY, max_retries=0, timeout=20)
    raw = c.messages.with_raw_response.create(
        model="auto", max_tokens=100, messages=[{"role": "user", "content": "hello there"}])
    assert raw.headers["x-modelplex-route"] == "auto; rules[6]"
    assert raw.headers["x-modelplex-deployment"] == "rt-dialect"


def test_naming_a_model_skips_the_route(gw: Gateway) -> None:
    headers = call(gw, model="m-words", tools=[TOOL])
    assert "x-modelplex-route" not in headers
    assert headers["x-modelplex-deployment"] == "rt-words"


# --- strategies --------------------------------------------------------------------------------


def picks(gw: Gateway, model: str, n: int, **kw: Any) -> list[str]:
    return [call(gw, model=model, **kw)["x-modelplex-deployment"] for _ in range(n)]


def test_ordered_always_takes_the_first(gw: Gateway) -> None:
    assert set(picks(gw, "s-ordered", 10)) == {"ord-1"}


def test_weighted_follows_the_weights(gw: Gateway) -> None:
    seen = Counter(picks(gw, "s-weighted", 60))
    assert seen["w-off"] == 0
    assert seen["w-heavy"] > seen["w-light"] > 0  # 3 : 1


def test_latency_moves_to_the_faster_deployment(gw: Gateway) -> None:
    seen = picks(gw, "s-latency", 8)
    assert set(seen[:2]) == {"lat-slow", "lat-fast"}  # each measured once first
    assert seen[2:] == ["lat-fast"] * 6


def test_least_busy_avoids_the_deployment_with_a_request_in_flight(gw: Gateway) -> None:
    long: dict[str, str] = {}
    # A 2-second answer (20 tokens at 10/s) holds one deployment; short answers (max_tokens=1)
    # meanwhile go to the other.
    worker = threading.Thread(target=lambda: long.update(call(gw, model="s-least_busy")))
    worker.start()
    time.sleep(0.4)
    short = picks(gw, "s-least_busy", 5, max_tokens=1)
    worker.join(10)
    busy = long["x-modelplex-deployment"]
    assert busy in ("busy-a", "busy-b")
    assert set(short) == {"busy-a", "busy-b"} - {busy}


def test_cheapest_takes_the_lowest_price(gw: Gateway) -> None:
    assert set(picks(gw, "s-cheapest", 8)) == {"cost-low"}


def test_headroom_moves_away_from_the_deployment_near_its_rpm(gw: Gateway) -> None:
    seen = picks(gw, "s-headroom", 8)
    # Whichever goes first, one request uses 25 % of room-small's 4 rpm: from then on room-big.
    assert seen.count("room-small") <= 1
    assert seen[2:] == ["room-big"] * 6


# --- the seed example of docs/routing.md ---------------------------------------------------------


def seed_example() -> str:
    doc = (ROOT / "docs" / "routing.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- seed-example -->\n```yaml\n(.*?)```", doc, re.S)
    assert match, "docs/routing.md has lost its seed example block"
    return match.group(1)


@pytest.fixture(scope="module")
def seed_gw(sims: Sims, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = yaml.safe_load(seed_example())
    env = {"MODELPLEX_KEY": GATEWAY_KEY, "OPENAI_API_KEY": "sim-key", "ANTHROPIC_API_KEY": "sim-key",
           "OPENAI_BASE_URL": f"{sims['openai'].url}/v1", "ANTHROPIC_BASE_URL": sims["anthropic"].url}
    g = Gateway(config, tmp_path_factory.mktemp("seed"), env=env, name="seed")
    yield g
    g.stop()


def test_seed_example_is_written_to_disk_unchanged(seed_gw: Gateway) -> None:
    assert yaml.safe_load(Path(seed_gw.config_path).read_text())["routes"] == yaml.safe_load(seed_example())["routes"]


@pytest.mark.parametrize(
    ("task", "words", "deployment", "reason"),
    [
        ("summary", 999, "gpt-4o-mini", "short-summary"),
        ("summary", 1000, "gpt-4o", "default"),
        ("analysis", 5001, "claude-sonnet", "long-analysis"),
        ("analysis", 5000, "gpt-4o", "default"),
        (None, 10, "gpt-4o", "default"),
    ],
)
def test_seed_example_routes_each_branch(seed_gw: Gateway, sims: Sims, task: str | None, words: int,
                                         deployment: str, reason: str) -> None:
    headers = call(seed_gw, text="word " * words, metadata={"task": task} if task else None)
    assert headers["x-modelplex-route"] == f"auto; {reason}"
    assert headers["x-modelplex-deployment"] == deployment
    upstream = {"gpt-4o-mini": "openai", "gpt-4o": "openai", "claude-sonnet": "anthropic"}[deployment]
    assert len(sims[upstream].state.log) == 1  # one attempt, on the provider the rule chose
