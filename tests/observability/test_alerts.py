"""Alert rules evaluated in the gateway: fire and resolve once each, to a webhook and the log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from obs_helpers import Receiver, config, eventually, failed, ok, services
from pydantic import ValidationError

from modelplex.config.observability import AlertRule, Alerts
from modelplex.errors import UpstreamServerError
from modelplex.observability import alerts_notify
from modelplex.observability.alerts import Evaluator, Instance
from modelplex.observability.alerts_notify import Notifier
from modelplex.observability.exposition import Exported
from modelplex.observability.install import Observability, install
from modelplex.services import Services


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def alerting(receiver: Receiver, *rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return config(alerts={"evaluate_every_s": 1, "webhooks": [{"name": "hook", "url": f"{receiver.url}/hook"}],
                          "rules": list(rules)}, **extra)


def started(data: dict[str, Any], **kwargs: Any) -> tuple[Services, Observability, Clock]:
    svc = services(data)
    obs = install(svc, **kwargs)
    assert obs.evaluator is not None
    clock = Clock()
    obs.evaluator.clock = clock
    return svc, obs, clock


async def tick(obs: Observability, svc: Services) -> None:
    obs.tick(svc)  # what the once-a-second refresher does
    assert obs.evaluator is not None
    await obs.evaluator.tick()


def statuses(receiver: Receiver) -> list[str]:
    return [p["status"] for p in receiver.json()]


async def test_error_burst_fires_once_and_resolves(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    rule = {"name": "errors", "kind": "error_rate", "threshold": 0.2, "window_s": 60, "for_s": 10,
            "keep_firing_s": 60, "min_requests": 5, "severity": "critical", "summary": "Too many errors."}
    svc, obs, clock = started(alerting(receiver, rule))
    caplog.set_level(logging.WARNING, "modelplex.alerts")
    await tick(obs, svc)  # the baseline
    for _ in range(10):
        failed(svc)
        ok(svc)
    clock.t += 5
    await tick(obs, svc)  # pending: above the threshold, not yet for 10 s
    clock.t += 11
    await tick(obs, svc)
    await eventually(lambda: statuses(receiver) == ["firing"])
    fired = receiver.json()[0]
    assert fired["alert"] == "errors" and fired["severity"] == "critical" and fired["value"] == pytest.approx(0.5)
    assert fired["text"].startswith("[FIRING] errors (critical): Too many errors.") and "50.00%" in fired["text"]
    # A second bad spell while it fires pages nobody again.
    for _ in range(10):
        failed(svc)
        ok(svc)
    clock.t += 30
    await tick(obs, svc)
    # Recovery: a window of successes, then keep_firing_s since the last bad evaluation.
    clock.t += 74
    for _ in range(30):
        ok(svc)
    await tick(obs, svc)
    await eventually(lambda: statuses(receiver) == ["firing", "resolved"])
    assert "[RESOLVED] errors" in receiver.json()[1]["text"]
    assert any("[FIRING] errors" in r.getMessage() for r in caplog.records)
    assert any("[RESOLVED] errors" in r.getMessage() for r in caplog.records)
    text = obs.exported.render().decode()
    assert 'modelplex_alert_notifications_total{outcome="ok",sink="hook",status="firing"} 1.0' in text
    assert 'modelplex_alerts_firing{rule="errors",severity="critical"} 0.0' in text


async def test_budget_threshold_fires_and_resolves(receiver: Receiver) -> None:
    use = {"team:research": (50, 100), "key:k1": (10, 1000)}

    async def budgets() -> dict[str, tuple[int, int]]:
        return dict(use)

    rule = {"name": "budget", "kind": "budget_pct", "threshold": 80, "keep_firing_s": 0}
    svc, obs, clock = started(alerting(receiver, rule), budgets=budgets)
    await tick(obs, svc)
    use["team:research"] = (85, 100)
    clock.t += 1
    await tick(obs, svc)
    await eventually(lambda: statuses(receiver) == ["firing"])
    assert receiver.json()[0]["labels"] == {"budget": "team:research"}
    assert 'modelplex_budget_used_ratio{budget="team:research"} 0.85' in obs.exported.render().decode()
    use["team:research"] = (0, 100)  # a new period
    clock.t += 1
    await tick(obs, svc)
    await eventually(lambda: statuses(receiver) == ["firing", "resolved"])


async def test_breaker_open_fires_and_resolves(receiver: Receiver) -> None:
    rule = {"name": "breaker", "kind": "breaker_open", "threshold": 0, "keep_firing_s": 0}
    svc, obs, clock = started(alerting(receiver, rule, routing={"breaker": {"consecutive_failures": 2,
                                                                              "open_s": 0.3}}))
    await tick(obs, svc)
    for _ in range(2):
        svc.health.failure("oa", UpstreamServerError("boom"), svc.health.clock())
    clock.t += 1
    await tick(obs, svc)
    await eventually(lambda: statuses(receiver) == ["firing"])
    assert receiver.json()[0]["labels"] == {"deployment": "oa"}
    await eventually(lambda: svc.health.clock() >= svc.health.of("oa").breaker.open_until)  # ready for a probe
    clock.t += 1
    await tick(obs, svc)
    await eventually(lambda: statuses(receiver) == ["firing", "resolved"])


async def test_filters_and_groups(receiver: Receiver) -> None:
    rule = {"name": "premium-errors", "kind": "error_rate", "threshold": 0.5, "window_s": 60, "keep_firing_s": 0,
            "min_requests": 2, "filters": {"model": ["premium"]}, "by": ["model"]}
    svc, obs, clock = started(alerting(receiver, rule))
    await tick(obs, svc)
    for _ in range(5):
        failed(svc, model="fast")  # another model: filtered out
        ok(svc, model="premium", deployment="an")
    clock.t += 1
    await tick(obs, svc)
    for _ in range(5):
        failed(svc, model="premium", deployment="an")
        failed(svc, model="premium", deployment="an")
    clock.t += 1
    await tick(obs, svc)
    await eventually(lambda: statuses(receiver) == ["firing"])
    assert receiver.json()[0]["labels"] == {"model": "premium"}


def test_hysteresis_follows_prometheus_for_and_keep_firing_for() -> None:
    rule = AlertRule(name="r", kind="spend_rate", threshold=1.0, for_s=10, keep_firing_s=30)
    i = Instance(labels=())
    assert i.step(rule, 0, 2.0) is None  # pending
    assert i.step(rule, 5, 0.5) is None  # dropped before `for`: back to inactive
    assert i.step(rule, 6, 2.0) is None
    assert i.step(rule, 16, 2.0) == "firing"
    assert i.step(rule, 20, 0.0) is None
    assert i.step(rule, 40, 5.0) is None  # bad again inside keep_firing: still the same alert
    assert i.step(rule, 69, 0.0) is None
    assert i.step(rule, 70, 0.0) == "resolved"
    assert i.idle


async def test_one_worker_evaluates_and_a_successor_resumes(receiver: Receiver, tmp_path: Path) -> None:
    rule = AlertRule(name="budget", kind="budget_pct", threshold=80, keep_firing_s=0)
    settings = Alerts(webhooks=[{"name": "hook", "url": f"{receiver.url}/hook"}], rules=[rule])  # type: ignore[list-item]
    use = {"b": (90, 100)}

    def evaluator() -> Evaluator:
        exported = Exported(str(tmp_path))
        return Evaluator(lambda: settings, exported, lambda: None, Notifier(lambda: settings, lambda *_: None),
                         lambda: use)

    first, second = evaluator(), evaluator()
    await first.tick()
    await second.tick()  # the lock is taken: it does nothing
    assert first.leader.held and not second.leader.held
    await eventually(lambda: statuses(receiver) == ["firing"])
    first.leader.release()  # the evaluating worker exits
    await second.tick()
    assert second.leader.held
    use["b"] = (10, 100)
    await second.tick()
    await eventually(lambda: statuses(receiver) == ["firing", "resolved"])  # no second "firing"
    second.leader.release()


async def test_a_failing_webhook_is_retried_then_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alerts_notify, "RETRY_DELAYS_S", (0.01,))
    broken = Receiver(status=500)
    try:
        svc, obs, clock = started(alerting(broken, {"name": "budget", "kind": "budget_pct", "threshold": 1}),
                                  budgets=lambda: {"b": (5, 10)})
        await tick(obs, svc)
        await eventually(lambda: len(broken.posts) == 2)
        assert obs.notifier is not None
        await obs.notifier.drain()
        text = obs.exported.render().decode()
        assert 'modelplex_alert_notifications_total{outcome="failed",sink="hook",status="firing"} 1.0' in text
    finally:
        broken.stop()


@pytest.mark.parametrize(("rule", "message"), [
    ({"kind": "error_rate", "threshold": 0.1, "percentile": 0.9}, "percentile applies to latency_p"),
    ({"kind": "breaker_open", "threshold": 0, "window_s": 60}, "window_s does not apply"),
    ({"kind": "latency_p", "threshold": 1, "latency": "overhead", "by": ["model"]}, "cannot filter or group by"),
    ({"kind": "spend_rate", "threshold": 1, "notify": ["pager"]}, "unknown webhook"),
    ({"kind": "error_rate", "threshold": 5}, "fraction"),
    ({"kind": "unpriced_model", "threshold": 0, "filters": {"route": ["auto"]}}, "cannot filter or group by"),
])
def test_rules_are_checked_strictly(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Alerts.model_validate({"rules": [{"name": "r", **rule}]})
    with pytest.raises(ValidationError, match="unique"):
        Alerts.model_validate({"rules": [{"name": "r", "kind": "spool_backlog", "threshold": 1}] * 2})


def test_the_default_rules_are_valid_and_evaluated_without_config() -> None:
    assert len(Alerts().rules) >= 7
    assert {r.kind for r in Alerts().rules} == {"error_rate", "latency_p", "spend_rate", "budget_pct",
                                               "breaker_open", "unpriced_model", "spool_backlog"}


async def test_latency_spend_and_unpriced_rules_fire(receiver: Receiver) -> None:
    svc, obs, clock = started(alerting(
        receiver,
        {"name": "slow", "kind": "latency_p", "threshold": 0.1, "percentile": 0.9, "window_s": 60,
         "min_requests": 5, "filters": {"route": ["auto"]}},
        {"name": "spend", "kind": "spend_rate", "threshold": 0, "window_s": 60},
        {"name": "unpriced", "kind": "unpriced_model", "threshold": 0, "window_s": 60},
    ))
    await tick(obs, svc)
    for _ in range(6):
        ok(svc, route="auto", duration=0.2)
    ok(svc, model="homegrown", deployment="local")
    clock.t += 1
    await tick(obs, svc)
    await eventually(lambda: len(receiver.posts) == 3)
    by_alert = {p["alert"]: p for p in receiver.json()}
    assert set(by_alert) == {"slow", "spend", "unpriced"}
    assert 0.1 < by_alert["slow"]["value"] <= 0.25  # inside the 0.1-0.25 bucket, as histogram_quantile
    assert by_alert["unpriced"]["labels"] == {"model": "homegrown", "deployment": "local"}


def test_quantiles_interpolate_like_histogram_quantile() -> None:
    from modelplex.observability.alerts_values import quantile

    inf = float("inf")
    assert quantile(0.95, [0, 0, 10, 10], [5, 10, 20, inf]) == pytest.approx(19.5)  # as promtool's test
    assert quantile(0.5, [4, 8, 8], [1, 2, inf]) == pytest.approx(1.0)
    assert quantile(0.99, [0, 1, 10], [1, 2, inf]) == 2  # in +Inf: the highest finite bound
    assert quantile(0.5, [0, 0, 0], [1, 2, inf]) is None
