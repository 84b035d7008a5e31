"""Where alerts go: the log and webhooks (a JSON POST with a Slack-compatible `text`).

Webhooks are posted in the background, with a short retry, so a slow receiver never delays the
evaluation of the next rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from modelplex.config.observability import AlertRule, Alerts, Webhook

log = logging.getLogger("modelplex.alerts")
RETRY_DELAYS_S = (0.5, 2.0)
LATENCY_NAMES = {"total": "request latency", "ttft": "time to first token", "overhead": "gateway overhead"}


@dataclass(frozen=True)
class Notice:
    rule: AlertRule
    status: str  # firing | resolved
    labels: tuple[tuple[str, str], ...]
    value: float | None
    since: float  # epoch seconds the alert started firing
    at: float  # epoch seconds of this notice

    def text(self) -> str:
        where = ", ".join(f"{k}={v}" for k, v in self.labels)
        head = f"[{self.status.upper()}] {self.rule.name} ({self.rule.severity})"
        summary = self.rule.summary or describe(self.rule)
        rule = self.rule
        value = f"value {format_value(rule, self.value)}, threshold {format_value(rule, rule.threshold)}"
        if self.status == "resolved":
            value = f"resolved after {self.at - self.since:.0f}s; last {value}"
        return f"{head}{' ' + where if where else ''}: {summary} ({value})"

    def payload(self, instance: str) -> dict[str, Any]:
        return {
            "text": self.text(),
            "status": self.status,
            "alert": self.rule.name,
            "kind": self.rule.kind,
            "severity": self.rule.severity,
            "labels": dict(self.labels),
            "value": self.value,
            "threshold": self.rule.threshold,
            "window_s": self.rule.window_s,
            "started_at": _iso(self.since),
            "at": _iso(self.at),
            "instance": instance,
        }


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def duration(seconds: float) -> str:
    """A Prometheus duration: 5m, 90s, 1500ms."""
    ms = round(seconds * 1000)
    if ms % 1000:
        return f"{ms}ms"
    s = ms // 1000
    if s and s % 3600 == 0:
        return f"{s // 3600}h"
    if s and s % 60 == 0:
        return f"{s // 60}m"
    return f"{s}s"


def describe(rule: AlertRule) -> str:
    w = duration(rule.window_s)
    what = {
        "error_rate": f"error rate over {w}",
        "latency_p": f"p{rule.percentile * 100:g} {LATENCY_NAMES[rule.latency]} over {w}",
        "spend_rate": f"spend over {w}",
        "budget_pct": "budget used",
        "breaker_open": "worker processes seeing a circuit breaker open",
        "unpriced_model": f"unpriced requests over {w}",
        "spool_backlog": "request-log rows waiting in the spool",
    }[rule.kind]
    return f"{what} above {format_value(rule, rule.threshold)}"


def format_value(rule: AlertRule, value: float | None) -> str:
    if value is None:
        return "n/a"
    if rule.kind == "error_rate":
        return f"{value * 100:.2f}%"
    if rule.kind == "latency_p":
        return f"{value * 1000:.1f}ms" if value < 1 else f"{value:.2f}s"
    if rule.kind == "budget_pct":
        return f"{value:.4g}%"
    return f"{value:g}"


class Notifier:
    def __init__(self, settings: Callable[[], Alerts], counted: Callable[[str, str, str], None],
                 instance: str | None = None) -> None:
        self.settings = settings
        self.counted = counted  # (sink, status, outcome) -> None: the notifications metric
        self.instance = instance or socket.gethostname()
        self._session: aiohttp.ClientSession | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def send(self, notice: Notice) -> None:
        cfg = self.settings()
        if cfg.log:
            loud = notice.rule.severity == "critical" and notice.status == "firing"
            emit = log.error if loud else log.warning
            emit("alert %s", notice.text())
            self.counted("log", notice.status, "ok")
        hooks = [w for w in cfg.webhooks if notice.rule.notify is None or w.name in notice.rule.notify]
        for hook in hooks:
            task = asyncio.get_running_loop().create_task(self._post(hook, notice))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _post(self, hook: Webhook, notice: Notice) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        headers = {k: v.get_secret_value() for k, v in hook.headers.items()}
        body = notice.payload(self.instance)
        for delay in (*RETRY_DELAYS_S, None):
            try:
                async with self._session.post(hook.url, json=body, headers=headers,
                                              timeout=aiohttp.ClientTimeout(total=hook.timeout_s)) as resp:
                    if resp.status < 300:
                        self.counted(hook.name, notice.status, "ok")
                        return
                    problem = f"HTTP {resp.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if delay is None:
                break
            await asyncio.sleep(delay)
        log.warning("alert webhook %s failed for %s (%s): %s",
                    hook.name, notice.rule.name, notice.status, problem)
        self.counted(hook.name, notice.status, "failed")

    async def drain(self, wait_s: float = 5.0) -> None:
        """Let notifications in flight finish (bounded), then close the HTTP session."""
        if self._sending:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._sending, return_exceptions=True), wait_s)
        if self._session is not None:
            await self._session.close()
            self._session = None
