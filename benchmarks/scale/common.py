"""Shared parts of the scale benchmarks: processes (a simulator, a gateway, a load generator), each
started from its command line and optionally pinned to CPUs, their memory, and small statistics."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BENCH_KEY = "sk-bench-scale-0123456789abcdef"
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def pinned(cmd: Sequence[str], cpus: str | None) -> list[str]:
    if not cpus:
        return list(cmd)
    taskset = shutil.which("taskset")
    if taskset is None:
        raise SystemExit("taskset is not installed (util-linux)")
    return [taskset, "-c", cpus, *cmd]


class Proc:
    """A child process in its own process group, its output in a log file."""

    def __init__(self, name: str, cmd: Sequence[str], log_dir: Path, cpus: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.cmd = pinned(cmd, cpus)
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def wait_http(url: str, proc: Proc, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise SystemExit(f"{proc.name} exited with {proc.proc.returncode}:\n{proc.log()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status < 500:
                    return
        except urllib.error.HTTPError as err:
            if err.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{proc.name} not answering {url} after {timeout}s:\n{proc.log()[-3000:]}")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    return out


def tree_rss_kb(pid: int) -> int:
    """Resident memory of a process and all its descendants (kB), from /proc."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError), open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
        todo += _children(p)
    return total


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def ms(value: float | None) -> str:
    return "–" if value is None else f"{value * 1000:.0f} ms"


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def gateway_config(base_url: str, tmp: Path, *, server: dict[str, Any] | None = None,
                   key: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One OpenAI deployment at `base_url`, one gateway key, files under `tmp`."""
    return {
        "server": {"host": "127.0.0.1", "reload": False, "log_level": "warning", **(server or {})},
        "keys": [{"name": "bench", "key": BENCH_KEY, "team": "bench", **(key or {})}],
        "deployments": [{
            "name": "upstream", "provider": "openai", "model": "gpt-sim", "base_url": base_url,
            "api_key": "sk-upstream-not-a-real-key", "price": {"input": 0.15, "output": 0.60},
            "max_connections": 1000,
        }],
        "models": [{"name": "m", "deployments": ["upstream"]}],
        "storage": {"sqlite_path": str(tmp / "modelplex.db")},
        "request_log": {"sqlite_path": str(tmp / "requests.db"), "spool_dir": str(tmp / "spool"),
                        "dead_letter_path": str(tmp / "dead.jsonl")},
        **(extra or {}),
    }


def serve_cmd(config: Path, port: int, workers: int) -> list[str]:
    return [PYTHON, "-m", "modelplex", "serve", "--config", str(config), "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers)]
