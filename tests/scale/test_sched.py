"""`server.cpu_scheduling`: several workers run under throughput scheduling (SCHED_BATCH and, on
Linux 6.12+, a 20 ms slice), set once by the supervisor and inherited by every worker."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import Gateway, Sims, base_config, deployment
from modelplex.server.sched import SLICE_NS, resolve

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux scheduling")

SCHED_BATCH = 3


def sched_of(pid: int) -> tuple[int, int | None]:
    """(policy, slice in ns or None) of a process's main thread, from /proc/<pid>/sched."""
    return sched_of_path(Path(f"/proc/{pid}/sched"))


def sched_of_path(path: Path) -> tuple[int, int | None]:
    fields = {}
    for line in path.read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name.strip()] = value.strip()
    slice_ns = fields.get("se.slice")
    return int(fields["policy"]), int(float(slice_ns)) if slice_ns else None


def custom_slices() -> bool:
    """Whether this kernel honours a per-task slice (EEVDF, Linux 6.12 and later)."""
    major, minor = (int(x) for x in platform.release().split(".")[:2])
    return (major, minor) >= (6, 12)


def workers_of(gw: Gateway) -> list[int]:
    kids = Path(f"/proc/{gw.proc.pid}/task/{gw.proc.pid}/children").read_text().split()
    # uvicorn's workers, not multiprocessing's resource tracker
    return [int(k) for k in kids if "spawn_main" in Path(f"/proc/{k}/cmdline").read_text()]


def test_auto_means_throughput_only_with_several_workers() -> None:
    assert resolve("auto", 2) and not resolve("auto", 1)
    assert resolve("throughput", 1) and resolve("throughput", 4)
    assert not resolve("default", 1) and not resolve("default", 8)


def test_apply_sets_batch_and_the_slice_for_the_process_and_its_children() -> None:
    # In a child interpreter: the test process itself keeps the kernel's default.
    code = ("import os, subprocess; from modelplex.server.sched import apply; print(apply('throughput', 1)); "
            "print(subprocess.run(['cat', '/proc/self/sched'], capture_output=True, text=True).stdout)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0] == "throughput (SCHED_BATCH, 20 ms slice)"
    child = dict((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in out.splitlines()[1:]))
    assert int(child["policy"]) == SCHED_BATCH  # inherited across fork and exec
    if custom_slices():
        assert int(float(child["se.slice"])) == SLICE_NS
    assert sched_of(os.getpid())[0] == 0


def test_helper_threads_go_back_to_the_default_scheduling() -> None:
    # Under throughput scheduling a woken helper thread could not preempt a busy event loop; the
    # request log would then fall behind under load.
    code = ("import os; from concurrent.futures import ThreadPoolExecutor; "
            "from modelplex.server.sched import apply, helper_thread; apply('throughput', 1); "
            "pool = ThreadPoolExecutor(1, initializer=helper_thread); "
            "print(os.sched_getscheduler(0), pool.submit(os.sched_getscheduler, 0).result())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(SCHED_BATCH), "0"]


def thread_policies(pid: int) -> dict[int, int]:
    return {int(t.name): sched_of_path(t / "sched")[0] for t in Path(f"/proc/{pid}/task").iterdir()}


@pytest.mark.parametrize(("workers", "setting", "batch"), [
    (2, None, True),          # auto, several workers
    (1, None, False),         # auto, one worker: the kernel's default
    (2, "default", False),
    (1, "throughput", True),
])
def test_served_workers_get_the_configured_scheduling(
        sims: Sims, tmp_path: Path, workers: int, setting: str | None, batch: bool) -> None:
    cfg = base_config([deployment("d", "openai", sims["openai"], "gpt-sim")], [{"name": "m", "deployments": ["d"]}])
    if setting:
        cfg["server"]["cpu_scheduling"] = setting
    gw = Gateway(cfg, tmp_path, workers=workers)
    try:
        pids = workers_of(gw) if workers > 1 else [gw.proc.pid]
        assert len(pids) == workers
        for pid in pids:
            policy, slice_ns = sched_of(pid)
            assert policy == (SCHED_BATCH if batch else 0)
            if batch and custom_slices():
                assert slice_ns == SLICE_NS
            if batch:  # the request-log writer and SQLite threads: the kernel's default
                deadline = time.monotonic() + 20  # a worker starts them as it starts up
                while 0 not in thread_policies(pid).values():
                    assert time.monotonic() < deadline, thread_policies(pid)
                    time.sleep(0.1)
        assert ("CPU scheduling: throughput" in gw.log()) == batch
    finally:
        gw.stop()
