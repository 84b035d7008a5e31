"""Alert rules evaluated in the gateway, with Prometheus' semantics and hysteresis.

Each rule has a value per label group (alerts_values.py). An alert is *pending* while its value is
above the threshold, *fires* once it has been for `for_s`, and *resolves* once it has been at or
below for `keep_firing_s` (so one bad minute inside a bad quarter-hour does not page twice).
Firing and resolving are notified once each (alerts_notify.py).

Several workers on one machine evaluate once: each tries an advisory lock on a file in the
shared metrics directory every tick, and only the holder evaluates, on the values of all workers.
If it dies the lock passes to another worker, which resumes from the alert states the holder
saved next to the lock. Several replicas each evaluate their own traffic and notify on their own
(de-duplication across replicas, through Redis, is future work; the exported Prometheus rules
see the whole fleet).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import inspect
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from modelplex.config.observability import WINDOWED, AlertRule, Alerts
from modelplex.observability import alerts_values as values
from modelplex.observability import metrics as m
from modelplex.observability.alerts_notify import Notice, Notifier
from modelplex.observability.exposition import Exported, sample_index

log = logging.getLogger("modelplex.alerts")

# Budget name -> (spent, cap) in its current period, integer micro-units. Sync or async.
BudgetUse = Mapping[str, tuple[int, int]]
BudgetSource = Callable[[], BudgetUse | Awaitable[BudgetUse]]
LOCK_FILE = "alerts.lock"
STATE_FILE = "alerts-state.json"


@dataclass
class Instance:
    """One alert: a rule and one value of its group labels."""

    labels: tuple[tuple[str, str], ...]
    active_since: float | None = None  # the value has been above the threshold since
    last_active: float | None = None
    firing_since: float | None = None
    fired_at: float | None = None  # when it last started firing (kept after it resolves)
    value: float | None = None

    def step(self, rule: AlertRule, now: float, value: float | None) -> str | None:
        """Advance by one evaluation; 'firing' or 'resolved' when that changed."""
        if value is not None:
            self.value = value
        if value is not None and value > rule.threshold:
            self.active_since = self.active_since if self.active_since is not None else now
            self.last_active = now
            if self.firing_since is None and now - self.active_since >= rule.for_s:
                self.firing_since = self.fired_at = now
                return "firing"
            return None
        if self.firing_since is None:
            self.active_since = None
            return None
        if self.last_active is None or now - self.last_active >= rule.keep_firing_s:
            self.active_since = self.firing_since = None
            return "resolved"
        return None

    @property
    def idle(self) -> bool:
        return self.active_since is None and self.firing_since is None


class Leader:
    """An advisory file lock: the one worker process that holds it evaluates the alerts."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self._fd: int | None = None

    def acquire(self) -> bool:
        if self.directory is None or self._fd is not None:
            return True
        fd = os.open(os.path.join(self.directory, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        log.info("this worker (pid %d) evaluates the alert rules", os.getpid())
        return True

    @property
    def held(self) -> bool:
        return self.directory is None or self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Evaluator:
    def __init__(
        self,
        settings: Callable[[], Alerts],
        exported: Exported,
        flush: Callable[[], None],
        notifier: Notifier,
        budgets: BudgetSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.exported = exported
        self.flush = flush
        self.notifier = notifier
        self.budgets = budgets
        self.clock = clock
        self.leader = Leader(exported.multiproc)
        self._rules: dict[str, AlertRule] = {}
        self._windows: dict[str, values.Window] = {}
        self._instances: dict[str, dict[tuple[tuple[str, str], ...], Instance]] = {}
        self._loaded = False

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("alert evaluation failed; it goes on")
            await asyncio.sleep(self.settings().evaluate_every_s)

    async def tick(self) -> None:
        if not self.leader.acquire():
            return
        self._reconcile(self.settings().rules)
        if not self._loaded:
            self._load()
        self.flush()
        families = (await asyncio.to_thread(lambda: list(self.exported.families()))
                    if self.exported.multiproc else list(self.exported.families()))
        samples = sample_index(families)
        budgets = await self._budgets()
        now = self.clock()
        changed = False
        for rule in self._rules.values():
            changed |= self._evaluate(rule, samples, budgets, now)
        self._publish(budgets)
        if changed or any(self._instances.values()):
            self._save()

    def _reconcile(self, rules: list[AlertRule]) -> None:
        """Follow config reloads: a rule that changed starts over, a removed one is forgotten."""
        wanted = {r.name: r for r in rules}
        for name, old in list(self._rules.items()):
            if wanted.get(name) != old:
                del self._rules[name]
                self._windows.pop(name, None)
                self._instances.pop(name, None)
        for name, rule in wanted.items():
            if name not in self._rules:
                self._rules[name] = rule
                self._instances[name] = {}
                if rule.kind in WINDOWED:
                    self._windows[name] = values.Window(rule.window_s)

    def _evaluate(self, rule: AlertRule, samples: values.Samples, budgets: BudgetUse, now: float) -> bool:
        current: dict[tuple[tuple[str, str], ...], float | None]
        if rule.kind in WINDOWED:
            delta = self._windows[rule.name].add(now, values.vector(rule, samples))
            current = {g: values.windowed_value(rule, row) for g, row in delta.items()}
        else:
            current = dict(values.instant(rule, samples, budgets))
        instances = self._instances[rule.name]
        changed = False
        for group in sorted(set(current) | set(instances)):
            inst = instances.get(group) or Instance(labels=group)
            transition = inst.step(rule, now, current.get(group))
            if transition is not None:
                changed = True
                self.notifier.send(Notice(rule, transition, group, inst.value, inst.fired_at or now, now))
            if inst.idle:
                changed |= instances.pop(group, None) is not None
            else:
                changed |= group not in instances
                instances[group] = inst
        return changed

    async def _budgets(self) -> Mapping[str, tuple[int, int]]:
        if self.budgets is None or not any(r.kind == "budget_pct" for r in self._rules.values()):
            return {}
        try:
            result = self.budgets()
            if inspect.isawaitable(result):
                result = await result
            return dict(result)
        except Exception:
            log.exception("budget state could not be read for the budget alerts")
            return {}

    def _publish(self, budgets: Mapping[str, tuple[int, int]]) -> None:
        firing = self.exported.gauges[m.ALERTS_FIRING.name]
        for rule in self._rules.values():
            n = sum(1 for i in self._instances[rule.name].values() if i.firing_since is not None)
            firing.labels(rule.name, rule.severity).set(n)
        used = self.exported.gauges[m.BUDGET_USED.name]
        for name, (spent, cap) in sorted(budgets.items())[:100]:
            if cap > 0:
                used.labels(name).set(spent / cap)

    # -- hand-over between worker processes --------------------------------------------------------

    def _state_path(self) -> Path | None:
        return Path(self.leader.directory) / STATE_FILE if self.leader.directory else None

    def _save(self) -> None:
        path = self._state_path()
        if path is None:
            return
        data = {name: [asdict(i) for i in insts.values()] for name, insts in self._instances.items()}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(path)

    def _load(self) -> None:
        self._loaded = True
        path = self._state_path()
        if path is None or not path.exists():
            return
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            log.warning("could not read the saved alert states in %s; starting afresh", path)
            return
        for name, items in data.items():
            if name not in self._instances:
                continue
            for item in items:
                labels = tuple((str(k), str(v)) for k, v in item.pop("labels"))
                self._instances[name][labels] = Instance(labels=labels, **item)
