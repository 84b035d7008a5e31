"""Config errors name their path and line; env references; secrets redacted; init's starter works."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from modelplex.cli import main
from modelplex.config.load import ConfigError, parse_config
from modelplex.providers.registry import load_registry
from modelplex.runtime import config_checks

GOOD = """\
server:
  port: 8080
keys:
  - name: app
    key: ${APP_KEY}
deployments:
  - name: oa
    provider: openai
    model: gpt-4o-mini
    api_key: ${OPENAI_API_KEY}
  - name: an
    provider: anthropic
    model: claude-haiku
    api_key: ${ANTHROPIC_API_KEY}
models:
  - name: fast
    deployments: [oa]
    fallbacks: [backup]
  - name: backup
    deployments: [an]
"""
ENV = {"APP_KEY": "sk-app-123456", "OPENAI_API_KEY": "sk-openai-secret", "ANTHROPIC_API_KEY": "sk-ant-secret"}


def parse(text: str, env: dict[str, str] | None = None) -> object:
    return parse_config(text, "test.yaml", ENV if env is None else env, config_checks(load_registry()))


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse(text, env)
    return [str(p) for p in exc.value.problems]


def test_good_config_parses() -> None:
    config = parse(GOOD)
    assert config.models[0].fallbacks == ["backup"]  # type: ignore[attr-defined]
    assert config.deployments[0].api_key.get_secret_value() == "sk-openai-secret"  # type: ignore[attr-defined]


def test_unknown_key_names_path_and_line() -> None:
    text = GOOD.replace("    fallbacks: [backup]\n", "    fallbacks: [backup]\n    fallback_mode: fast\n")
    assert problems(text) == ["models[0].fallback_mode (line 19): unknown key 'fallback_mode'"]


def test_wrong_type_names_path_and_line() -> None:
    text = GOOD.replace("  port: 8080", "  port: eighty")
    [p] = problems(text)
    assert p.startswith("server.port (line 2): ")


def test_wrong_type_in_list_item() -> None:
    text = GOOD.replace("    fallbacks: [backup]", "    fallbacks: [backup, 7]")
    [p] = problems(text)
    assert p.startswith("models[0].fallbacks[1] (line 18): ")


def test_unknown_fallback_reference() -> None:
    text = GOOD.replace("fallbacks: [backup]", "fallbacks: [nope]")
    assert problems(text) == ["models[0].fallbacks[0] (line 18): unknown model 'nope'"]


def test_unknown_deployment_and_provider() -> None:
    text = GOOD.replace("deployments: [an]", "deployments: [missing]").replace("provider: anthropic", "provider: acme")
    found = problems(text)
    assert "models[1].deployments[0] (line 20): unknown deployment 'missing'" in found
    assert any(p.startswith("deployments[1].provider (line 12): unknown provider 'acme'") for p in found)


def test_missing_env_var_names_path() -> None:
    env = {k: v for k, v in ENV.items() if k != "OPENAI_API_KEY"}
    assert problems(GOOD, env) == ["deployments[0].api_key (line 10): environment variable OPENAI_API_KEY is not set"]


def test_env_default_syntax() -> None:
    text = GOOD.replace("${OPENAI_API_KEY}", "${OPENAI_API_KEY:-sk-fallback}")
    env = {k: v for k, v in ENV.items() if k != "OPENAI_API_KEY"}
    config = parse(text, env)
    assert config.deployments[0].api_key.get_secret_value() == "sk-fallback"  # type: ignore[attr-defined]


def test_duplicate_names_and_self_fallback() -> None:
    text = GOOD.replace("  - name: an\n", "  - name: oa\n").replace("deployments: [an]", "deployments: [oa]")
    text = text.replace("fallbacks: [backup]", "fallbacks: [fast]")
    found = problems(text)
    assert "deployments[1].name (line 11): duplicate deployment name 'oa'" in found
    assert "models[0].fallbacks[0] (line 18): a model cannot fall back to itself" in found


def test_not_yaml_and_not_mapping() -> None:
    assert problems("a: [1, 2")[0].startswith("(top level) (line ")
    assert problems("- just\n- a list\n") == ["(top level) (line 1): the config must be a YAML mapping"]


def test_missing_required_section() -> None:
    text = GOOD[: GOOD.index("models:")]
    assert any(p.startswith("models (line 1): Field required") for p in problems(text))


def test_check_config_redacts_secrets(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(GOOD)
    result = CliRunner(env=ENV).invoke(main, ["check-config", str(path)])
    assert result.exit_code == 0, result.output
    for secret in ENV.values():
        assert secret not in result.output
    resolved = yaml.safe_load(result.stdout)
    assert resolved["deployments"][0]["api_key"] == "**********"
    assert resolved["deployments"][0]["timeouts"]["first_token"] == 30.0


def test_check_config_reports_errors(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(GOOD.replace("  port: 8080", "  prot: 8080"))
    result = CliRunner(env=ENV).invoke(main, ["check-config", str(path)])
    assert result.exit_code == 2
    assert "server.prot (line 2): unknown key 'prot'" in result.output


def test_check_config_lists_unpriced(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(GOOD)
    result = CliRunner(env=ENV).invoke(main, ["check-config", str(path)])
    assert "unpriced deployments" in result.output and "oa" in result.output


def test_init_writes_a_starter_that_validates(tmp_path: Path) -> None:
    path = tmp_path / "modelplex.yaml"
    env = {"OPENAI_API_KEY": "sk-a", "ANTHROPIC_API_KEY": "sk-b", "MODELPLEX_KEY": "sk-modelplex-1234"}
    runner = CliRunner(env=env)
    result = runner.invoke(main, ["init", "--path", str(path)])
    assert result.exit_code == 0, result.output
    text = path.read_text()
    assert "# " in text  # commented
    config = parse_config(text, str(path), env, config_checks(load_registry()))
    providers = {d.provider for d in config.deployments}
    assert providers == {"openai", "anthropic"}
    assert any(m.fallbacks for m in config.models)
    again = runner.invoke(main, ["init", "--path", str(path)])
    assert again.exit_code == 1 and "exists" in again.output


def test_starter_without_keys_names_the_missing_variables(tmp_path: Path) -> None:
    path = tmp_path / "modelplex.yaml"
    CliRunner().invoke(main, ["init", "--path", str(path)])
    with pytest.raises(ConfigError) as exc:
        parse_config(path.read_text(), str(path), {}, [])
    text = str(exc.value)
    for var in ("MODELPLEX_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        assert var in text


def test_short_gateway_key_rejected() -> None:
    text = textwrap.dedent(GOOD)
    assert problems(text, {**ENV, "APP_KEY": "short"}) == [
        "keys[0].key (line 5): a gateway key must be at least 8 characters"]
