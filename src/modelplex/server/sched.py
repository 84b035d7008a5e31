"""How the kernel schedules the workers: the `server.cpu_scheduling` setting.

Several workers that share cores lose a large share of their throughput to the way Linux shares a
core between busy processes, not to their own work: the scheduler hands the core over every
couple of milliseconds, and a worker woken by a single ready socket preempts the one that has a
queue of them, so each worker runs in short slices that start with caches full of the other's
data. On the 2-core machine of `benchmarks/scale/workers.py`, two workers of even a 40-line proxy
on one core did about 85 % of one worker's work that way (medians of two runs; single rounds as
low as 63 %), and two modelplex workers 83 %; with throughput scheduling, 102 % and 99 %.

"throughput" asks for what a batch server wants: SCHED_BATCH (a waking worker no longer preempts a
busy one; see sched(7)) and, on Linux 6.12 and later, a 20 ms slice (`sched_attr.sched_runtime`)
instead of the default of about 3 ms. Latency-sensitive processes that share the machine keep
preempting the workers as before; a worker waits at most one slice for a core its sibling holds,
which only happens when workers outnumber idle cores. Both are allowed without privileges; where
the call is refused or missing (other systems, seccomp), nothing changes and the reason is logged.
Child processes inherit the policy, so the supervisor sets it once for every worker. A worker's
helper threads (the request-log writer, SQLite, `asyncio.to_thread`) go back to the kernel's
default (`helper_thread`): they must still preempt a busy event loop when woken, or each hand-over
to them would wait for a whole slice and the request log would fall behind under load.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import platform
import sys
from typing import Literal

log = logging.getLogger("modelplex.sched")

Mode = Literal["auto", "throughput", "default"]
SLICE_NS = 20_000_000  # 20 ms: a few hundred requests of a worker's own work between hand-overs
_SCHED_OTHER, _SCHED_BATCH = 0, 3
_SYS_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274, "arm64": 274}


class _SchedAttr(ctypes.Structure):  # struct sched_attr, SCHED_ATTR_SIZE_VER0 (48 bytes)
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("sched_policy", ctypes.c_uint32),
        ("sched_flags", ctypes.c_uint64),
        ("sched_nice", ctypes.c_int32),
        ("sched_priority", ctypes.c_uint32),
        ("sched_runtime", ctypes.c_uint64),
        ("sched_deadline", ctypes.c_uint64),
        ("sched_period", ctypes.c_uint64),
    ]


def resolve(mode: Mode, workers: int) -> bool:
    """Whether `mode` asks for throughput scheduling when serving with `workers` processes."""
    return mode == "throughput" or (mode == "auto" and workers > 1)


def _setattr(policy: int, slice_ns: int) -> int:
    """sched_setattr on the calling thread; 0 or an errno."""
    number = _SYS_SCHED_SETATTR.get(platform.machine())
    if not sys.platform.startswith("linux") or number is None:
        return errno.ENOSYS
    attr = _SchedAttr(size=ctypes.sizeof(_SchedAttr), sched_policy=policy,
                      sched_nice=os.getpriority(os.PRIO_PROCESS, 0), sched_runtime=slice_ns)
    libc = ctypes.CDLL(None, use_errno=True)
    return 0 if libc.syscall(number, 0, ctypes.byref(attr), 0) == 0 else ctypes.get_errno()


def helper_thread() -> None:
    """Initializer of helper threads: the kernel's default scheduling if the process runs under
    throughput scheduling (else nothing)."""
    if sys.platform.startswith("linux") and os.sched_getscheduler(0) == _SCHED_BATCH:
        _setattr(_SCHED_OTHER, 0)


def apply(mode: Mode, workers: int) -> str:
    """Set this process's scheduling for `mode` (inherited by the workers it starts); what was done."""
    if not resolve(mode, workers):
        return "kernel default"
    failed = _setattr(_SCHED_BATCH, SLICE_NS)
    if failed == errno.ENOSYS:
        return f"kernel default (needs Linux on x86_64 or arm64, not {sys.platform} {platform.machine()})"
    if failed:
        return f"kernel default (sched_setattr refused: {os.strerror(failed)})"
    return "throughput (SCHED_BATCH, 20 ms slice)"
