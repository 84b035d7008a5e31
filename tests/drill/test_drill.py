"""`modelplex drill`: the user's config rewritten for simulators, and whole drills, end to end, in
which a provider goes down and comes back while traffic flows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from modelplex.cli import main
from modelplex.config.load import parse_config
from modelplex.config.schema import Config, Deployment
from modelplex.drill import (
    DRILL_KEY,
    SIM_KEY,
    DrillError,
    Options,
    Placeholders,
    drill_config,
    prepare,
    validate,
)
from modelplex.providers.base import Target
from modelplex.providers.registry import Registry, load_registry
from modelplex.runtime import config_checks

CONFIG: dict[str, Any] = {
    "server": {"port": 8080, "admin_key": "${ADMIN_KEY}", "default_deadline_ms": 20000},
    "keys": [{"name": "app", "key": "${MODELPLEX_KEY}", "team": "apps"}],
    "storage": {"redis_url": "redis://prod-redis:6379/0"},
    "deployments": [
        {"name": "openai-mini", "provider": "openai", "model": "gpt-4o-mini", "api_key": "${OPENAI_API_KEY}",
         "timeouts": {"connect": 1, "first_token": 3, "idle": 3, "total": 10}},
        {"name": "groq-llama", "provider": "groq", "model": "llama-3.3", "api_key": "${GROQ_API_KEY}"},
        {"name": "claude-haiku", "provider": "anthropic", "model": "claude-haiku", "api_key": "${ANTHROPIC_API_KEY}"},
        {"name": "gemini-flash", "provider": "gemini", "model": "gemini-flash", "api_key": "k"},
    ],
    "models": [
        {"name": "fast", "deployments": ["openai-mini"], "fallbacks": ["backup"]},
        {"name": "backup", "deployments": ["claude-haiku"], "fallbacks": ["flash"]},
        {"name": "llama", "deployments": ["groq-llama"], "fallbacks": ["backup"]},
        {"name": "flash", "deployments": ["gemini-flash"]},
    ],
    "limits": [{"name": "per-team", "scope": "team", "rpm": 1}],
    "routing": {"retry": {"max_attempts_per_deployment": 2, "backoff_base_ms": 20},
                "breaker": {"consecutive_failures": 3, "open_s": 0.5, "max_open_s": 1.0}},
}


def load(data: dict[str, Any], registry: Registry | None = None) -> Config:
    registry = registry or load_registry()
    return parse_config(yaml.safe_dump(data), "drill.yaml", Placeholders({}), config_checks(registry))


# --- rewriting the config ----------------------------------------------------------------------


def test_missing_environment_variables_get_a_stand_in() -> None:
    env = Placeholders({"OPENAI_API_KEY": "sk-real"})
    assert "ANYTHING" in env and env["ANYTHING"] == "drill-placeholder"
    assert env["OPENAI_API_KEY"] == "sk-real"
    config = load(CONFIG)
    assert config.keys[0].key.get_secret_value() == "drill-placeholder"


def test_simulated_config_keeps_routing_and_reaches_nothing_outside() -> None:
    config = load(CONFIG)
    setup = prepare(config, load_registry(), Options(provider="openai"))
    urls = {"openai": "http://127.0.0.1:1", "anthropic": "http://127.0.0.1:2", "gemini": "http://127.0.0.1:3"}
    data = drill_config(config, setup, urls, 9999)
    simulated = validate(data, load_registry())
    by_name = {d.name: d for d in simulated.deployments}
    assert by_name["openai-mini"].base_url == "http://127.0.0.1:1/v1"
    assert by_name["groq-llama"].base_url == "http://127.0.0.1:1/v1"  # OpenAI-compatible: same simulator
    assert by_name["claude-haiku"].base_url == "http://127.0.0.1:2"
    assert by_name["gemini-flash"].base_url == "http://127.0.0.1:3/v1beta"
    assert {d.api_key.get_secret_value() for d in simulated.deployments if d.api_key} == {SIM_KEY}
    # Routing as configured...
    assert simulated.models == config.models and simulated.routing == config.routing
    assert by_name["openai-mini"].timeouts == config.deployments[0].timeouts
    # ...and nothing that reaches outside or limits the drill's own traffic.
    assert simulated.storage.redis_url is None and simulated.storage.backend == "memory"
    assert [k.key.get_secret_value() for k in simulated.keys] == [DRILL_KEY]
    assert simulated.limits == [] and simulated.server.admin_key is None
    assert not simulated.request_log.enabled and not simulated.alerts.enabled
    assert (simulated.server.host, simulated.server.port, simulated.server.reload) == ("127.0.0.1", 9999, False)
    assert simulated.server.default_deadline_ms == 20000


def test_targets_are_the_models_with_a_deployment_of_the_provider() -> None:
    config = load(CONFIG)
    assert prepare(config, load_registry(), Options(provider="openai")).targets == ["fast"]
    assert prepare(config, load_registry(), Options(provider="anthropic")).targets == ["backup"]
    assert prepare(config, load_registry(), Options(provider="groq", models=("llama", "fast"))).targets == [
        "llama", "fast"]
    with pytest.raises(DrillError, match="unknown model or route: nope"):
        prepare(config, load_registry(), Options(provider="openai", models=("nope",)))


@dataclass(frozen=True)
class Unsimulated:
    """A third-party provider no simulator speaks."""

    name: str = "custom"
    framing: str = "sse"
    default_base_url: str | None = "https://custom.example"

    def check(self, deployment: Deployment) -> list[tuple[str, str]]:
        return []

    def prepare(self, deployment: Deployment) -> Target:
        raise NotImplementedError


def test_deployments_without_a_simulator_are_left_out_with_what_depends_on_them() -> None:
    registry = Registry([*load_registry().values(), Unsimulated()])  # type: ignore[list-item]
    data = json.loads(json.dumps(CONFIG))
    data["deployments"].append({"name": "own", "provider": "custom", "model": "x"})
    data["models"] += [{"name": "own-model", "deployments": ["own"]},
                       {"name": "mixed", "deployments": ["own", "openai-mini"], "fallbacks": ["own-model"]}]
    data["routes"] = [{"name": "auto", "default": "fast", "rules": [{"when": {"tools": True}, "model": "own-model"}]},
                      {"name": "mine", "default": "own-model"}]
    config = load(data, registry)
    setup = prepare(config, registry, Options(provider="openai"))
    assert setup.targets == ["fast", "mixed"]
    simulated = validate(drill_config(config, setup, {"openai": "http://a", "anthropic": "http://b",
                                                      "gemini": "http://c"}, 1), registry)
    assert "own" not in {d.name for d in simulated.deployments}
    mixed = next(m for m in simulated.models if m.name == "mixed")
    assert mixed.deployments == ["openai-mini"] and mixed.fallbacks == []
    assert [r.name for r in simulated.routes] == ["auto"] and simulated.routes[0].rules == []
    assert setup.left_out == ["deployment own (no simulator speaks the format of custom)",
                              "model own-model (no simulated deployment)",
                              "route mine (its default model has no simulated deployment)"]
    with pytest.raises(DrillError, match="no simulator speaks"):
        prepare(config, registry, Options(provider="custom"))


def test_a_provider_the_config_does_not_use_is_an_error() -> None:
    with pytest.raises(DrillError, match=r"no deployment uses provider 'mistral' \(in use: anthropic, gemini"):
        prepare(load(CONFIG), load_registry(), Options(provider="mistral"))


# --- whole drills ------------------------------------------------------------------------------


def run_drill(tmp_path: Path, *args: str) -> dict[str, Any]:
    path = tmp_path / "modelplex.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    result = CliRunner().invoke(main, ["drill", "--config", str(path), "--json", "--warmup", "1.5",
                                       "--duration", "3", "--rps", "20", *args])
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_drill_a_provider_sharing_its_simulator(tmp_path: Path) -> None:
    # openai and groq share the OpenAI-format simulator: only openai's model is scripted to fail.
    r = run_drill(tmp_path, "--provider", "openai", "--model", "fast", "--model", "llama")
    before, outage, after = r["phases"]["before"], r["phases"]["outage"], r["phases"]["after"]
    assert before["by_provider"] > 0 and before["lost"] == 0
    assert outage["by_provider"] == 0 and outage["requests"] >= 50
    assert r["requests_lost"] == 0 and r["phases"]["after"]["lost"] == 0
    assert r["time_to_first_fallback_s"] is not None and r["time_to_first_fallback_s"] < 2
    assert r["failover_ms"]["count"] >= 1 and r["failover_ms"]["p99"] < 2000
    # groq kept answering its half of the traffic through the outage.
    assert outage["answered_by"]["groq-llama"] >= outage["requests"] // 2 - 1
    assert set(outage["answered_by"]) == {"groq-llama", "claude-haiku"}
    # The breaker opened, and then the provider saw only the occasional half-open probe.
    assert r["breaker_opened_after_s"]["openai-mini"] < 1.5
    assert r["upstream_attempts"]["per_request_breakers_open"] < 0.2
    # Back: the breaker (open at most max_open_s = 1 s) probes, closes, and traffic returns.
    assert r["back_after_s"] == {"openai-mini": r["time_back_s"]}
    assert r["time_back_s"] is not None and r["time_back_s"] < 2.5
    assert after["by_provider"] > 0


def test_drill_a_whole_simulator_with_connection_resets(tmp_path: Path) -> None:
    r = run_drill(tmp_path, "--provider", "anthropic", "--fault", "reset")
    assert r["targets"] == ["backup"] and r["deployments_down"] == ["claude-haiku"]
    assert r["requests_lost"] == 0  # its fallback, gemini, answers
    assert r["phases"]["outage"]["by_provider"] == 0
    assert r["time_back_s"] is not None


def test_rich_report(tmp_path: Path) -> None:
    path = tmp_path / "modelplex.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    result = CliRunner().invoke(main, ["drill", "--config", str(path), "--provider", "groq", "--warmup", "1",
                                       "--duration", "1", "--recovery-timeout", "3"])
    assert result.exit_code == 0, result.output
    for text in ("modelplex drill", "client requests", "time to first answer via a fallback",
                 "requests lost during the outage", "back on groq after its return"):
        assert text in result.output


def test_cli_reports_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "modelplex.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    result = CliRunner().invoke(main, ["drill", "--config", str(path), "--provider", "nobody"])
    assert result.exit_code == 2 and "no deployment uses provider 'nobody'" in result.output
