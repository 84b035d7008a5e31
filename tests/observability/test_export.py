"""The shipped Prometheus rules and Grafana dashboard: generated from the rule definitions, no drift,
valid for promtool, and every series they name is one modelplex exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from helpers import in_ci
from modelplex.cli import main
from modelplex.config.observability import AlertFilters, AlertRule, Alerts, Webhook
from modelplex.observability import metrics as m
from modelplex.observability.alerts_export import DASHBOARD_FILE, RULES_FILE, export

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCS = ROOT / "docs" / "alerts.md"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if in_ci():
            pytest.fail("promtool is required in CI (Debian package prometheus)")
        pytest.skip("promtool not installed")
    return path


def test_shipped_files_are_what_the_definitions_generate(tmp_path: Path) -> None:
    export(tmp_path, Alerts())
    for rel in (RULES_FILE, DASHBOARD_FILE):
        assert (tmp_path / rel).read_text() == (DEPLOY / rel).read_text(), (
            f"deploy/{rel} is stale: run `modelplex export-monitoring --out deploy`")


def test_promtool_checks_and_unit_tests_pass() -> None:
    tool = promtool()
    check = subprocess.run([tool, "check", "rules", str(DEPLOY / RULES_FILE)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run([tool, "test", "rules", "modelplex-rules.test.yml"], cwd=DEPLOY / "prometheus",
                          capture_output=True, text=True)
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout


def _names(text: str) -> set[str]:
    found = set(re.findall(r"\b(modelplex_[a-z_]+)", text))
    return {re.sub(r"_(bucket|count|sum)$", "", n) for n in found}


def test_rules_and_dashboard_name_only_exported_series() -> None:
    exported = {x.name for x in m.METRICS}
    rules = yaml.safe_load((DEPLOY / RULES_FILE).read_text())
    dashboard = json.loads((DEPLOY / DASHBOARD_FILE).read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    exprs += [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    names = set().union(*(_names(e) for e in exprs))
    assert names <= exported, f"not exported: {sorted(names - exported)}"
    alert_names = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert alert_names == {r.name for r in Alerts().rules}
    panel_titles = {p["title"] for p in dashboard["panels"]}
    assert alert_names <= panel_titles, "every alert rule has its panel"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24


def test_every_default_rule_is_documented() -> None:
    text = DOCS.read_text()
    for rule in Alerts().rules:
        assert f"`{rule.name}`" in text, f"docs/alerts.md does not describe {rule.name}"
    for kind in ("error_rate", "latency_p", "spend_rate", "budget_pct", "breaker_open", "unpriced_model",
                 "spool_backlog"):
        assert f"`{kind}`" in text
    for model in (Alerts, AlertRule, AlertFilters, Webhook):
        for field in model.model_fields:
            assert f"`{field}`" in text, f"docs/alerts.md does not explain {model.__name__}.{field}"


def test_the_cli_exports_a_configs_own_rules(tmp_path: Path) -> None:
    config = tmp_path / "modelplex.yaml"
    config.write_text(yaml.safe_dump({
        "deployments": [{"name": "d", "provider": "openai", "model": "m", "api_key": "x"}],
        "models": [{"name": "chat.v2", "deployments": ["d"]}],
        "alerts": {"rules": [{"name": "chat-errors", "kind": "error_rate", "threshold": 0.1, "window_s": 90,
                              "filters": {"model": ["chat.v2"]}, "by": ["deployment"]}]},
    }))
    result = CliRunner().invoke(main, ["export-monitoring", "--out", str(tmp_path / "out"), "--config", str(config)])
    assert result.exit_code == 0, result.output
    rules = (tmp_path / "out" / RULES_FILE).read_text()
    assert 'model=~"chat\\\\.v2"' in rules and "[90s]" in rules and "sum by (deployment)" in rules
    check = subprocess.run([promtool(), "check", "rules", str(tmp_path / "out" / RULES_FILE)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
