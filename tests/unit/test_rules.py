"""Rule routing: every request feature, every condition, first match wins, and the load-time checks
that reject a route that can never do what it says, naming its config path and line."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from modelplex.config.load import ConfigError, parse_config
from modelplex.config.schema import Condition, Config, Route, When
from modelplex.errors import ModelNotFound
from modelplex.providers.registry import load_registry
from modelplex.routing import rules
from modelplex.routing.features import CHARS_PER_TOKEN, MESSAGE_OVERHEAD_TOKENS, Features, features
from modelplex.routing.plan import resolve
from modelplex.runtime import Caller, build_runtime, config_checks
from modelplex.server import anthropic as anthropic_dialect
from modelplex.server import openai as openai_dialect
from modelplex.types import ChatRequest

CALLER = Caller(key_name="app", digest=b"", team="research", user=None, models=None, tier="gold")
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


def chat(**body: Any) -> ChatRequest:
    body.setdefault("model", "auto")
    body.setdefault("messages", [{"role": "user", "content": "hello there"}])
    return openai_dialect.parse_chat(json.dumps(body).encode())


def feats(caller: Caller | None = CALLER, tags: str | None = None, task: str | None = None,
          dialect: str = "openai", **body: Any) -> Features:
    return features(chat(**body), caller, dialect, tags, task)


# --- features ----------------------------------------------------------------------------------


def test_prompt_size_features() -> None:
    f = feats(messages=[{"role": "system", "content": "be brief"},
                        {"role": "user", "content": "one two  three\nfour"}])
    text = "be brief\none two  three\nfour"
    assert f.prompt_text == text
    assert f.prompt_words == 6
    assert f.prompt_chars == len(text)
    assert f.prompt_tokens == len(text) // CHARS_PER_TOKEN + 2 * MESSAGE_OVERHEAD_TOKENS


def test_tool_definitions_count_towards_prompt_tokens_not_words() -> None:
    plain, with_tools = feats(), feats(tools=[TOOL])
    assert with_tools.tools and not plain.tools
    assert with_tools.prompt_words == plain.prompt_words
    assert with_tools.prompt_tokens > plain.prompt_tokens


def test_boolean_features() -> None:
    assert feats(response_format={"type": "json_object"}).json_schema
    assert feats(response_format={"type": "json_schema",
                                  "json_schema": {"name": "x", "schema": {"type": "object"}}}).json_schema
    assert not feats(response_format={"type": "text"}).json_schema
    image = {"role": "user", "content": [{"type": "text", "text": "what is this"},
                                         {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
    assert feats(messages=[image]).vision and not feats().vision
    assert feats(stream=True).stream and not feats().stream
    assert feats(max_tokens=50).max_tokens == 50 and feats().max_tokens is None


def test_task_from_header_or_metadata_header_first() -> None:
    assert feats(task="summary").task == "summary"
    assert feats(metadata={"task": "analysis"}).task == "analysis"
    assert feats(task="summary", metadata={"task": "analysis"}).task == "summary"
    assert feats().task is None


def test_tags_from_header_and_metadata_merge() -> None:
    assert feats(tags="a, b,,c").tags == {"a", "b", "c"}
    assert feats(metadata={"tags": "x,y"}).tags == {"x", "y"}
    assert feats(tags="a", metadata={"tags": ["b"]}).tags == {"a", "b"}
    assert feats().tags == frozenset()


def test_caller_features() -> None:
    f = feats()
    assert (f.team, f.tier, f.key) == ("research", "gold", "app")
    anon = feats(caller=None)
    assert (anon.team, anon.tier, anon.key) == (None, None, None)


def test_dialect_feature() -> None:
    body = {"model": "auto", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    request = anthropic_dialect.parse_chat(json.dumps(body).encode())
    assert features(request, None, "anthropic", None, None).dialect == "anthropic"


# --- conditions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cond", "value", "expected"),
    [
        ({"lt": 10}, 9, True), ({"lt": 10}, 10, False),
        ({"lte": 10}, 10, True), ({"lte": 10}, 11, False),
        ({"gt": 10}, 11, True), ({"gt": 10}, 10, False),
        ({"gte": 10}, 10, True), ({"gte": 10}, 9, False),
        ({"eq": 10}, 10, True), ({"eq": 10}, 11, False),
        ({"gte": 5, "lt": 10}, 5, True), ({"gte": 5, "lt": 10}, 10, False), ({"gte": 5, "lt": 10}, 4, False),
        ({}, 123, True),
    ],
)
@pytest.mark.parametrize("feature", ["prompt_tokens", "prompt_words", "max_tokens"])
def test_numeric_conditions(feature: str, cond: dict[str, float], value: int, expected: bool) -> None:
    f = _replace(feats(), **{feature: value})
    assert rules.matches(When.model_validate({feature: cond}), f) is expected


def test_a_numeric_condition_on_an_absent_value_does_not_match() -> None:
    assert not rules.matches(When(max_tokens=Condition(gte=0)), feats())  # no max_tokens sent


@pytest.mark.parametrize(
    ("when", "body", "expected"),
    [
        ({"tools": True}, {"tools": [TOOL]}, True),
        ({"tools": True}, {}, False),
        ({"tools": False}, {}, True),
        ({"json_schema": True}, {"response_format": {"type": "json_object"}}, True),
        ({"json_schema": True}, {}, False),
        ({"json_schema": False}, {"response_format": {"type": "json_object"}}, False),
        ({"stream": True}, {"stream": True}, True),
        ({"stream": True}, {}, False),
        ({"stream": False}, {}, True),
        ({"vision": False}, {}, True),
        ({"vision": True}, {}, False),
    ],
)
def test_boolean_conditions(when: dict[str, Any], body: dict[str, Any], expected: bool) -> None:
    assert rules.matches(When(**when), feats(**body)) is expected


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({"task": "summary"}, True),
        ({"task": ["analysis", "summary"]}, True),
        ({"task": "analysis"}, False),
        ({"team": "research"}, True),
        ({"team": ["ops", "research"]}, True),
        ({"team": "ops"}, False),
        ({"tier": "gold"}, True),
        ({"tier": ["silver"]}, False),
        ({"key": "app"}, True),
        ({"key": "other"}, False),
        ({"tags_any": ["b", "zzz"]}, True),
        ({"tags_any": ["zzz"]}, False),
        ({"tags_all": ["a", "b"]}, True),
        ({"tags_all": ["a", "zzz"]}, False),
        ({"dialect": "openai"}, True),
        ({"dialect": "anthropic"}, False),
    ],
)
def test_label_conditions(when: dict[str, Any], expected: bool) -> None:
    f = feats(tags="a,b", task="summary")
    assert rules.matches(When(**when), f) is expected


@pytest.mark.parametrize("when", [{"task": "summary"}, {"team": "research"}, {"tier": "gold"}, {"key": "app"}])
def test_a_label_condition_on_an_absent_label_does_not_match(when: dict[str, Any]) -> None:
    assert not rules.matches(When(**when), feats(caller=None))


def test_every_condition_must_hold() -> None:
    when = When(task="summary", prompt_words=Condition(lt=1000), tier="gold")
    assert rules.matches(when, feats(task="summary"))
    assert not rules.matches(when, feats(task="summary", caller=None))
    assert not rules.matches(when, feats(task="summary", messages=[{"role": "user", "content": "w " * 1000}]))


def test_an_empty_when_matches_everything() -> None:
    assert rules.matches(When(), feats(caller=None))


def test_every_when_field_is_a_feature() -> None:
    """A new condition without a feature to test (or the other way round) fails here."""
    fields = set(When.model_fields) - {"tags_any", "tags_all"}
    assert fields | {"tags"} <= set(Features.__dataclass_fields__)


# --- selection ---------------------------------------------------------------------------------


SEED = Route(
    name="auto",
    rules=[
        {"when": {"task": "summary", "prompt_words": {"lt": 1000}}, "model": "cheap"},  # type: ignore[list-item]
        {"name": "deep-analysis", "when": {"task": "analysis", "prompt_words": {"gt": 5000}},  # type: ignore[list-item]
         "model": "premium"},
    ],
    default="standard",
)


def words(n: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": "word " * n}]


@pytest.mark.parametrize(
    ("task", "n", "expected"),
    [
        ("summary", 999, ("cheap", "rules[0]")),
        ("summary", 1000, None),
        ("analysis", 5001, ("premium", "deep-analysis")),
        ("analysis", 5000, None),
        (None, 10, None),
    ],
)
def test_first_matching_rule_wins_and_is_named(task: str | None, n: int, expected: Any) -> None:
    assert rules.select(SEED, feats(task=task, messages=words(n))) == expected


def test_rule_order_decides_between_overlapping_rules() -> None:
    route = Route(name="r", default="c", rules=[
        {"when": {"tags_any": ["x"]}, "model": "a"},  # type: ignore[list-item]
        {"when": {"tags_any": ["x", "y"]}, "model": "b"},  # type: ignore[list-item]
    ])
    assert rules.select(route, feats(tags="x")) == ("a", "rules[0]")
    assert rules.select(route, feats(tags="y")) == ("b", "rules[1]")


CATALOG = """\
deployments:
  - {name: d-cheap, provider: openai, model: mini, api_key: k}
  - {name: d-standard, provider: openai, model: std, api_key: k}
  - {name: d-premium, provider: openai, model: big, api_key: k}
models:
  - {name: cheap, deployments: [d-cheap]}
  - {name: standard, deployments: [d-standard]}
  - {name: premium, deployments: [d-premium]}
"""


def load(extra: str) -> Config:
    return parse_config(CATALOG + textwrap.dedent(extra), "test.yaml", {}, config_checks(load_registry()))


def test_resolve_runs_rules_then_default_and_passes_models_through() -> None:
    config = load("""\
        routes:
          - name: auto
            rules:
              - when: {task: summary, prompt_words: {lt: 1000}}
                model: cheap
            default: standard
        """)
    rt = build_runtime(config, load_registry())
    assert resolve(rt, "auto", feats(task="summary")) == ("cheap", rt.routes["auto"], "rules[0]")
    assert resolve(rt, "auto", feats()) == ("standard", rt.routes["auto"], "default")
    assert resolve(rt, "premium", feats(task="summary")) == ("premium", None, "model")
    with pytest.raises(ModelNotFound):
        resolve(rt, "nope", feats())


# --- load-time checks --------------------------------------------------------------------------


def problems(extra: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load(extra)
    return [str(p) for p in exc.value.problems]


@pytest.mark.parametrize(
    ("cond", "why"),
    [
        ("{lt: 10, gt: 20}", "empty interval"),
        ("{lt: 10, gte: 10}", "touching, one side open"),
        ("{lte: 10, gt: 10}", "touching, other side open"),
        ("{gt: 10, lt: 10}", "same bound, both open"),
        ("{eq: 5, gt: 5}", "eq outside an open bound"),
        ("{eq: 5, lt: 3}", "eq outside the interval"),
    ],
)
@pytest.mark.parametrize("feature", ["prompt_tokens", "prompt_words", "max_tokens"])
def test_impossible_numeric_condition_is_rejected_with_its_path(feature: str, cond: str, why: str) -> None:
    found = problems(f"""\
        routes:
          - name: auto
            rules:
              - when: {{tools: true}}
                model: premium
              - when: {{{feature}: {cond}}}
                model: cheap
            default: standard
        """)
    assert found == [f"routes[0].rules[1].when.{feature} (line 14): no value can satisfy this condition"], why


@pytest.mark.parametrize("cond", ["{lte: 10, gte: 10}", "{eq: 10, lte: 10}", "{gt: 1, lt: 2}", "{eq: 0}"])
def test_narrow_but_possible_conditions_load(cond: str) -> None:
    load(f"""\
        routes:
          - name: auto
            rules:
              - when: {{prompt_words: {cond}}}
                model: cheap
            default: standard
        """)


def test_empty_tag_list_is_rejected() -> None:
    assert problems("""\
        routes:
          - name: auto
            rules:
              - when: {tags_any: []}
                model: cheap
            default: standard
        """) == ["routes[0].rules[0].when.tags_any (line 12): an empty list can never match"]


def test_unknown_models_in_routes_are_rejected_with_paths() -> None:
    assert problems("""\
        routes:
          - name: auto
            rules:
              - when: {task: x}
                model: nope
            default: missing
            baseline: gone
        """) == [
        "routes[0].default (line 14): unknown model 'missing'",
        "routes[0].baseline (line 15): unknown model 'gone'",
        "routes[0].rules[0].model (line 13): unknown model 'nope'",
    ]


def test_route_names_must_be_unique_and_not_a_model() -> None:
    assert problems("""\
        routes:
          - {name: cheap, default: standard}
          - {name: auto, default: standard}
          - {name: auto, default: cheap}
        """) == [
        "routes[0].name (line 10): route 'cheap' has the name of a model",
        "routes[2].name (line 12): duplicate route name 'auto'",
    ]


def test_unknown_fallback_models_are_rejected() -> None:
    text = CATALOG.replace("{name: cheap, deployments: [d-cheap]}",
                           "{name: cheap, deployments: [d-cheap], context_window_fallbacks: [huge], "
                           "content_policy_fallbacks: [lenient]}")
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "test.yaml", {}, config_checks(load_registry()))
    assert [str(p) for p in exc.value.problems] == [
        "models[0].context_window_fallbacks[0] (line 6): unknown model 'huge'",
        "models[0].content_policy_fallbacks[0] (line 6): unknown model 'lenient'",
    ]


def test_complexity_step_needs_known_models_and_one_calibration() -> None:
    assert problems("""\
        routes:
          - name: auto
            complexity: {cheap: cheap, premium: nope, premium_share: 0.3, threshold: 0.5}
            default: standard
        """) == [
        "routes[0].complexity.premium (line 11): unknown model 'nope'",
        "routes[0].complexity (line 11): set exactly one of premium_share, quality_floor, threshold",
    ]


def test_key_model_lists_may_name_routes_not_unknowns() -> None:
    assert problems("""\
        routes:
          - {name: auto, default: standard}
        keys:
          - {name: app, key: sk-app-12345678, models: [auto, cheap, nope]}
        """) == ["keys[0].models[2] (line 12): unknown model or route 'nope'"]


def _replace(f: Features, **changes: Any) -> Features:
    from dataclasses import replace

    return replace(f, **changes)
