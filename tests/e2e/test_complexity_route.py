"""A route's learned complexity step, end to end: the classifier sends hard prompts to premium."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from helpers import GATEWAY_KEY, Gateway, Sims, base_config, deployment

DATA = Path("/work/shared/data/routing/b1_dev.jsonl")


@pytest.fixture(scope="module")
def gw(sims: Sims, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    cfg = base_config([deployment("cheap-dep", "openai", sims["openai"], "cheap-sim"),
                       deployment("premium-dep", "openai", sims["openai"], "premium-sim")],
                      [{"name": "cheap", "deployments": ["cheap-dep"]},
                       {"name": "premium", "deployments": ["premium-dep"]}])
    cfg["routes"] = [{"name": "auto", "default": "cheap", "baseline": "premium",
                      "rules": [{"name": "tools-to-premium", "when": {"tools": True}, "model": "premium"}],
                      "complexity": {"cheap": "cheap", "premium": "premium", "premium_share": 0.3}}]
    g = Gateway(cfg, tmp_path_factory.mktemp("complexity"))
    yield g
    g.stop()


def route(gw: Gateway, prompt: str) -> str:
    raw = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": prompt}])
    assert raw.headers["x-modelplex-route"].startswith("auto; ")
    return raw.headers["x-modelplex-route"].split("; ", 1)[1]


def test_complexity_step_splits_traffic_near_its_calibrated_share(gw: Gateway) -> None:
    if not DATA.exists():
        pytest.skip("the routing data set is not on this machine")
    prompts = [json.loads(line)["prompt"] for line in DATA.read_text().splitlines()[:60]]
    reasons = [route(gw, p) for p in prompts]
    premium = reasons.count("complexity:premium")
    assert premium + reasons.count("complexity:cheap") == len(prompts)
    assert 0.1 * len(prompts) <= premium <= 0.55 * len(prompts)  # calibrated to 30 % on the reference sample


def test_rules_come_before_the_classifier(gw: Gateway) -> None:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "weather?"}],
        tools=[{"type": "function", "function": {"name": "w", "parameters": {"type": "object", "properties": {}}}}])
    assert raw.headers["x-modelplex-route"] == "auto; tools-to-premium"
    assert raw.headers["x-modelplex-deployment"] == "premium-dep"
