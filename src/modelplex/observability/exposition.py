"""The exported Prometheus values, `GET /metrics`, and the multiprocess directory of several workers.

With one worker the values live in this process. With several (`serve --workers N`) each worker
writes its values to files in a directory shared by the workers (prometheus_client's
multiprocess mode), and whichever worker answers a scrape sums them all: counters and histograms
add up over every worker that ever ran, gauges combine per their mode (`livesum`: live workers
only). The supervisor empties the directory before the workers start (`prepare_multiprocess`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import values as prometheus_values
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric as Family
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from modelplex.observability import metrics as m

log = logging.getLogger("modelplex.metrics")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DEFAULT_DIR = "/tmp/modelplex-metrics"  # noqa: S108  (the image's writable /tmp; docs/deploy.md)
_LIVE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def multiprocess_dir(env: Mapping[str, str]) -> str | None:
    """The directory this process writes its values to, if it runs in multiprocess mode."""
    path = env.get(MULTIPROC_ENV)
    if not path:
        return None
    if not getattr(prometheus_values.ValueClass, "_multiprocess", False):
        log.warning("%s is set but prometheus_client was imported before it: metrics of this process "
                    "stay in the process", MULTIPROC_ENV)
        return None
    return path


def prepare_multiprocess(configured: str | None, env: Mapping[str, str], port: int) -> dict[str, str]:
    """Supervisor side, before the workers start: create and empty the directory the workers share,
    and return the environment variables that point them at it."""
    path = Path(env.get(MULTIPROC_ENV) or configured or f"{DEFAULT_DIR}/{port or os.getpid()}")
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.iterdir():
        if stale.suffix in (".db", ".json", ".lock") and stale.is_file():
            stale.unlink()
    return {MULTIPROC_ENV: str(path)}


class Exported:
    """The prometheus_client objects of every metric in the table, in a registry of their own."""

    def __init__(self, multiproc: str | None) -> None:
        self.multiproc = multiproc
        self.registry = CollectorRegistry(auto_describe=False)
        self.counters: dict[str, Counter] = {}
        self.gauges: dict[str, Gauge] = {}
        self.histograms: dict[str, Histogram] = {}
        for x in m.METRICS:
            if x.kind == "counter":
                self.counters[x.name] = Counter(x.name, x.help, x.labels, registry=self.registry)
            elif x.kind == "gauge":
                self.gauges[x.name] = Gauge(x.name, x.help, x.labels, registry=self.registry,
                                            multiprocess_mode=x.mode or "livesum")  # type: ignore[arg-type]
            else:
                self.histograms[x.name] = Histogram(x.name, x.help, x.labels, registry=self.registry,
                                                    buckets=x.buckets)

    @staticmethod
    def add_histogram(child: Histogram, row: list[float]) -> None:
        """Add pre-bucketed observations. prometheus_client has no public call for this; its
        `_buckets` (one non-cumulative value per bucket, +Inf last) and `_sum` have been stable
        for years and the tests read the result back through a real scrape."""
        buckets = child._buckets
        for i, n in enumerate(row[:-1]):
            if n:
                buckets[i].inc(n)
        child._sum.inc(row[-1])

    def families(self) -> Iterable[Family]:
        """Every value, summed over the workers in multiprocess mode."""
        if self.multiproc is None:
            return _without_created(self.registry.collect())
        families: list[Family] = _collector(None, self.multiproc).collect()  # type: ignore[no-untyped-call]
        return families

    def render(self) -> bytes:
        if self.multiproc is None:
            return generate_latest(_Collected(_without_created(self.registry.collect())))
        registry = CollectorRegistry(auto_describe=False)
        _collector(registry, self.multiproc)
        return generate_latest(registry)

    async def render_async(self) -> bytes:
        # Reading every worker's files is file I/O: off the event loop.
        if self.multiproc is None:
            return self.render()
        return await asyncio.to_thread(self.render)

    def forget_dead_workers(self) -> None:
        """Drop the live gauges of worker processes that are gone (crashed or restarted), so
        `livesum` gauges count live workers only. Counters and histograms keep their history."""
        if self.multiproc is None:
            return
        with contextlib.suppress(OSError):
            for name in os.listdir(self.multiproc):
                match = _LIVE_FILE.match(name)
                if match is None:
                    continue
                pid = int(match.group(1))
                if pid != os.getpid() and not _alive(pid):
                    with contextlib.suppress(OSError):
                        mark_process_dead(pid, self.multiproc)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        if self.multiproc is not None:
            with contextlib.suppress(OSError):
                mark_process_dead(os.getpid(), self.multiproc)  # type: ignore[no-untyped-call]


class _Collected:
    """Families already collected, as a collector `generate_latest` can render."""

    def __init__(self, families: Iterable[Family]) -> None:
        self._families = families

    def collect(self) -> Iterable[Family]:
        return self._families


def _without_created(families: Iterable[Family]) -> Iterator[Family]:
    """Drop the `_created` series a single process adds: the output then has the same series
    whether one worker or several serve (multiprocess mode has none)."""
    for family in families:
        family.samples = [s for s in family.samples if not s.name.endswith("_created")]
        yield family


def _collector(registry: CollectorRegistry | None, path: str) -> MultiProcessCollector:
    return MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()


def sample_index(families: Iterable[Family]) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Samples by sample name (`modelplex_requests_total`, `..._bucket`), for the alert evaluator."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in families:
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out
