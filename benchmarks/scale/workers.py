"""Multi-worker cost: what a second worker, Redis-held limits and a second core do to throughput.

    .venv/bin/python benchmarks/scale/workers.py          # ~5 minutes on 2 cores

The upstream is nginx answering a fixed chat completion at once (so everything measured is
gateway work); wrk (closed loop, one thread, 32 connections) drives it with a gateway key and
counts only correct completions. CPU pinning with taskset: the gateway (all its workers) on
--gateway-cpu, wrk + nginx + Redis on --load-cpu. Scenarios, interleaved round after round
(median over rounds):

    1w            1 worker on the gateway core, no limits (as shipped: kernel default scheduling)
    1w-tp         the same with `server.cpu_scheduling: throughput`
    2w            2 workers on the same core (as shipped: `cpu_scheduling: auto` is throughput
                  scheduling with several workers)                (target: >= 90 % of 1w-tp)
    2w-kd         2 workers, `cpu_scheduling: default` (the kernel's default scheduling)
    limits-mem    1 worker, key with rpm + tpm + a budget, counters in process
    limits-redis  the same with the counters in Redis             (target: >= 75 % of limits-mem)
    limits-2w     the same, 2 workers on the gateway core: counters in the SQLite file the
                  workers of one machine share (what `counters: auto` picks for several workers)
    limits-2w-kd  the same with `cpu_scheduling: default`
    1w-free       1 worker, nothing pinned
    2w-free       2 workers, nothing pinned: scale-out as far as 2 cores allow, wrk and nginx
                  sharing them
    bare-1w       the reference: benchmarks/harness/bare40 (a 40-line uvicorn + aiohttp proxy, no
    bare-2w       gateway features) with 1 and 2 uvicorn workers on the gateway core: what two
                  processes time-sharing one core cost on this machine, whatever they run
    bare-1w-tp    the same two, started under modelplex's throughput scheduling
    bare-2w-tp

Every run also records the load average, the CPU other processes used during it, and the
gateway's context switches per request. Ratios are given two ways: of the medians, and the median
of the per-round ratios (each round runs the two scenarios back to back, so a slow minute of this
shared machine weighs on both).
`--no-request-log` runs every gateway with the request log off (what it costs; see RESULTS.md).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    BENCH_KEY,
    PYTHON,
    Proc,
    free_port,
    gateway_config,
    loadavg,
    pinned,
    serve_cmd,
    wait_http,
    write_yaml,
)

HERE = Path(__file__).resolve().parent
HZ = os.sysconf("SC_CLK_TCK")
CHAT = {
    "id": "chatcmpl-mock0001", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18},
}
MOCK_CONF = """\
worker_processes 1;
daemon off;
master_process on;
{user}pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/nginx-tmp;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /v1/chat/completions {{
            default_type application/json;
            return 200 '{body}';
        }}
    }}
}}
"""


@dataclass(frozen=True)
class Scenario:
    name: str
    workers: int
    pinned: bool
    limits: str | None  # None, "memory", "redis", "auto"
    bare: bool = False  # the 40-line reference proxy instead of modelplex
    sched: str | None = None  # server.cpu_scheduling (bare: "throughput" starts it under it)


SCENARIOS = [
    Scenario("1w", 1, True, None),
    Scenario("1w-tp", 1, True, None, sched="throughput"),
    Scenario("2w", 2, True, None),
    Scenario("2w-kd", 2, True, None, sched="default"),
    Scenario("limits-mem", 1, True, "memory"),
    Scenario("limits-redis", 1, True, "redis"),
    Scenario("limits-2w", 2, True, "auto"),
    Scenario("limits-2w-kd", 2, True, "auto", sched="default"),
    Scenario("1w-free", 1, False, None),
    Scenario("2w-free", 2, False, None),
    Scenario("bare-1w", 1, True, None, bare=True),
    Scenario("bare-2w", 2, True, None, bare=True),
    Scenario("bare-1w-tp", 1, True, None, bare=True, sched="throughput"),
    Scenario("bare-2w-tp", 2, True, None, bare=True, sched="throughput"),
]
BARE_DIR = HERE.parent / "harness" / "bare40"
# Starts a command under modelplex's throughput scheduling (for the reference proxy).
THROUGHPUT = [PYTHON, "-c", "import os, sys; from modelplex.server.sched import apply; "
              "print(apply('throughput', 1), flush=True); os.execv(sys.argv[1], sys.argv[1:])"]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=10, help="measured wrk run per scenario and round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--gateway-cpu", default="0")
    p.add_argument("--load-cpu", default="1")
    p.add_argument("--only", default=None, help="comma-separated scenario names")
    p.add_argument("--no-request-log", action="store_true", help="run every gateway with request_log off")
    p.add_argument("--dir", type=Path, default=None, help="keep configs and logs here")
    p.add_argument("--json", type=Path, default=None, help="write every run as JSON here too")
    return p.parse_args()


def cpu_busy_jiffies() -> int:
    """Busy jiffies of the whole machine (all CPUs), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:8]]  # user nice system idle iowait irq softirq
    return sum(fields) - fields[3] - fields[4]


def tree_jiffies(pid: int) -> int:
    """CPU time (utime + stime + children's) of a process and its live descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return total


def tree_switches(pid: int) -> tuple[int, int]:
    """Voluntary and involuntary context switches of every thread of a process and its descendants."""
    counts = [0, 0]
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches:"):
                        counts[0] += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches:"):
                        counts[1] += int(line.split()[1])
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return counts[0], counts[1]


def log_backlog(url: str) -> int | None:
    """modelplex_requestlog_backlog_rows from /metrics (summed over the workers)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    values = [float(line.split()[-1]) for line in text.splitlines()
              if line.startswith("modelplex_requestlog_backlog_rows")]
    return int(sum(values)) if values else None


def bare_cmd(port: int, workers: int) -> list[str]:
    return [PYTHON, "-m", "uvicorn", "bare:app", "--app-dir", str(BARE_DIR), "--host", "127.0.0.1",
            "--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning", "--workers", str(workers)]


def wait_port(port: int, proc: Proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise SystemExit(f"{proc.name} exited:\n{proc.log()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            time.sleep(1.0)  # every worker up, not only the first
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{proc.name} not listening on {port} after {timeout}s:\n{proc.log()[-3000:]}")


class Fixtures:
    """The processes every scenario shares: the nginx mock and a Redis of our own."""

    def __init__(self, tmp: Path, load_cpu: str | None) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        redis = shutil.which("redis-server")
        if not Path(nginx).exists() or redis is None:
            raise SystemExit("needs nginx and redis-server (Debian: apt-get install nginx redis-server)")
        self.mock_port, self.redis_port = free_port(), free_port()
        user = f"user {getpass.getuser()};\n" if os.geteuid() == 0 else ""
        body = json.dumps(CHAT, separators=(",", ":"))
        conf = tmp / "mock.conf"
        conf.write_text(MOCK_CONF.format(dir=tmp, port=self.mock_port, user=user, body=body))
        self.mock = Proc("mock", [nginx, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "nginx-error.log")],
                         tmp, cpus=load_cpu)
        self.redis = Proc("redis", [redis, "--port", str(self.redis_port), "--bind", "127.0.0.1",
                                    "--save", "", "--appendonly", "no"], tmp, cpus=load_cpu)
        time.sleep(0.5)
        for proc in (self.mock, self.redis):
            if not proc.alive():
                raise SystemExit(f"{proc.name} failed:\n{proc.log()}")
        self.pids = [self.mock.pid, self.redis.pid]

    @property
    def mock_base(self) -> str:
        return f"http://127.0.0.1:{self.mock_port}/v1"

    def stop(self) -> None:
        self.mock.stop()
        self.redis.stop()


def config_for(s: Scenario, fx: Fixtures, tmp: Path, run: str, request_log: bool = True) -> dict[str, Any]:
    key: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    if s.limits:
        # Large enough never to refuse: every request still takes a rate window, a token window and
        # a budget reservation, and settles them.
        key = {"rpm": 100_000_000, "tpm": 10_000_000_000}
        extra["budgets"] = [{"scope": "key", "name": "bench", "period": "month", "amount": 1_000_000_000}]
    cfg = gateway_config(fx.mock_base, tmp, key=key, extra=extra)
    cfg["storage"]["sqlite_path"] = str(tmp / f"{run}.db")
    cfg["request_log"]["sqlite_path"] = str(tmp / f"{run}-requests.db")
    cfg["request_log"]["spool_dir"] = str(tmp / f"{run}-spool")
    cfg["request_log"]["enabled"] = request_log
    if s.sched:
        cfg["server"]["cpu_scheduling"] = s.sched
    if s.limits == "memory":
        cfg["storage"]["counters"] = "memory"
    if s.limits == "redis":
        cfg["storage"]["redis_url"] = f"redis://127.0.0.1:{fx.redis_port}/0"
        cfg["storage"]["redis_prefix"] = f"mpx-bench-{run}:"
    return cfg


def wrk(url: str, seconds: int, connections: int, cpus: str | None) -> tuple[dict[str, Any], float]:
    """wrk's result line, and the CPU seconds wrk used."""
    cmd = pinned(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
                  str(HERE / "chat.lua"), f"{url}/v1/chat/completions"], cpus)
    env = {"BENCH_KEY": BENCH_KEY, "BENCH_MODEL": "m", "PATH": "/usr/bin:/bin"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60,
                         check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    match = re.search(r"^BENCHJSON (.*)$", out, re.M)
    if match is None:
        raise SystemExit(f"wrk printed no result:\n{out}")
    result: dict[str, Any] = json.loads(match.group(1))
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result, used


def run_one(s: Scenario, fx: Fixtures, args: argparse.Namespace, tmp: Path, run: str) -> dict[str, Any]:
    port = free_port()
    load_cpu = args.load_cpu if s.pinned else None
    url = f"http://127.0.0.1:{port}"
    if s.bare:
        prefix = THROUGHPUT if s.sched == "throughput" else []
        gateway = Proc(run, prefix + bare_cmd(port, s.workers), tmp,
                       cpus=args.gateway_cpu if s.pinned else None,
                       env={"MOCK_BASE": fx.mock_base, "MOCK_STREAM_BASE": fx.mock_base})
    else:
        cfg = write_yaml(tmp / f"{run}.yaml", config_for(s, fx, tmp, run, not args.no_request_log))
        gateway = Proc(run, serve_cmd(cfg, port, s.workers), tmp,
                       cpus=args.gateway_cpu if s.pinned else None)
    try:
        if s.bare:
            wait_port(port, gateway, timeout=60)
        else:
            wait_http(f"{url}/readyz", gateway, timeout=60)
        wrk(url, args.warmup, args.connections, load_cpu)
        load = loadavg()
        gw_before = tree_jiffies(gateway.pid)
        sw_before = tree_switches(gateway.pid)
        fx_before = sum(tree_jiffies(p) for p in fx.pids)
        busy_before = cpu_busy_jiffies()
        started = time.monotonic()
        result, wrk_cpu = wrk(url, args.seconds, args.connections, load_cpu)
        elapsed = time.monotonic() - started
        busy = cpu_busy_jiffies() - busy_before
        gw_cpu = (tree_jiffies(gateway.pid) - gw_before) / HZ
        sw_after = tree_switches(gateway.pid)
        backlog = None if s.bare or args.no_request_log else log_backlog(url)
        fx_cpu = (sum(tree_jiffies(p) for p in fx.pids) - fx_before) / HZ
        if not gateway.alive():
            raise SystemExit(f"{run}: gateway died:\n{gateway.log()[-3000:]}")
    finally:
        gateway.stop()
    other = max(busy / HZ - gw_cpu - fx_cpu - wrk_cpu, 0.0)
    return {
        "scenario": s.name, "run": run, "rps": round(result["ok"] / (result["duration_us"] / 1e6), 1),
        "ok": result["ok"], "bad": result["bad"], "socket_errors": result["socket_errors"],
        "p50_ms": result["p50_us"] / 1000, "p99_ms": result["p99_us"] / 1000, "loadavg": load,
        # CPU used during the measured run, in cores (1.0 = one core busy the whole time).
        "gateway_cores": round(gw_cpu / elapsed, 2),
        # Requests per CPU-second the gateway used: its cost per request, whatever share of a core
        # a busy machine left it.
        "per_cpu_s": round(result["ok"] / max(gw_cpu, 1e-9), 1),
        "load_side_cores": round((fx_cpu + wrk_cpu) / elapsed, 2),
        "other_cores": round(other / elapsed, 2),
        # The gateway threads' context switches per request: voluntary (out of work) and
        # involuntary (preempted with work to do).
        "switches_per_req": [round((after - before) / max(result["ok"], 1), 3)
                             for before, after in zip(sw_before, sw_after, strict=True)],
        "round": int(run.rsplit("-r", 1)[1]),
        # Request-log rows spooled but not yet stored when the run ended: a gateway that put its
        # logging off would look faster than one that kept up.
        "log_backlog_rows": backlog,
        "sample": result.get("sample", ""),
    }


def backlog_text(runs: list[dict[str, Any]]) -> str:
    values = [r["log_backlog_rows"] for r in runs if r.get("log_backlog_rows") is not None]
    return str(max(values)) if values else "–"


def runs_text(runs: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['rps']:.0f}" for r in runs)


def ratio(medians: dict[str, float], a: str, b: str) -> str:
    if a not in medians or b not in medians or not medians[b]:
        return "–"
    return f"{100 * medians[a] / medians[b]:.0f} %"


def paired(runs: list[dict[str, Any]], a: str, b: str) -> str:
    """Median and range of the per-round ratios a / b (the two ran back to back in each round)."""
    by_round: dict[int, dict[str, float]] = {}
    for r in runs:
        by_round.setdefault(r["round"], {})[r["scenario"]] = r["rps"]
    ratios = sorted(100 * x[a] / x[b] for x in by_round.values() if a in x and b in x and x[b])
    if not ratios:
        return "–"
    return f"{statistics.median(ratios):.0f} % ({ratios[0]:.0f}–{ratios[-1]:.0f})"


def report(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    names = [s.name for s in SCENARIOS if any(r["scenario"] == s.name for r in runs)]
    medians = {n: statistics.median(r["rps"] for r in runs if r["scenario"] == n) for n in names}
    per_cpu = {n: statistics.median(r["per_cpu_s"] for r in runs if r["scenario"] == n) for n in names}
    lines = [
        f"wrk -t1 -c{args.connections} -d{args.seconds}s per run, {args.rounds} interleaved rounds; pinned "
        f"scenarios: gateway on CPU {args.gateway_cpu}, wrk + nginx mock + Redis on CPU {args.load_cpu}; "
        f"request log {'off' if args.no_request_log else 'on'}",
        "",
        "| scenario | median req/s | runs (req/s) | req per gateway CPU-second (median) "
        "| p50 / p99 latency (median run) | gateway cores | load-side cores | other processes' cores "
        "| context switches per request (voluntary / involuntary) | request-log backlog at the end (rows, "
        "max over runs) | load average (1/5/15 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in names:
        mine = sorted((r for r in runs if r["scenario"] == n), key=lambda r: r["rps"])
        mid = mine[len(mine) // 2]
        errors = sum(r["bad"] + r["socket_errors"] for r in mine)
        lines.append(
            f"| {n} | {medians[n]:.0f} | {runs_text(mine)} | {per_cpu[n]:.0f} "
            f"| {mid['p50_ms']:.1f} / {mid['p99_ms']:.1f} ms | {mid['gateway_cores']} "
            f"| {mid['load_side_cores']} "
            f"| {mid['other_cores']} | {mid['switches_per_req'][0]} / {mid['switches_per_req'][1]} "
            f"| {backlog_text(mine)} | {mid['loadavg']} |" + (f" errors: {errors}" if errors else ""))
    pairs = [
        ("2 workers on one core vs 1 worker, both with throughput scheduling (target >= 90 %)", "2w",
         "1w-tp"),
        ("2 workers vs 1 worker, each as shipped (cpu_scheduling: auto)", "2w", "1w"),
        ("2 workers vs 1 worker, both with the kernel's default scheduling", "2w-kd", "1w"),
        ("1 worker: throughput vs kernel default scheduling", "1w-tp", "1w"),
        ("limits + budget in Redis vs in process (target >= 75 %)", "limits-redis", "limits-mem"),
        ("limits + budget in process vs no limits", "limits-mem", "1w"),
        ("limits + budget in SQLite, 2 workers on one core vs in process, 1 worker", "limits-2w",
         "limits-mem"),
        ("limits in SQLite, 2 workers: throughput vs kernel default scheduling", "limits-2w", "limits-2w-kd"),
        ("2 workers vs 1 worker, 2 cores shared with wrk + nginx", "2w-free", "1w-free"),
        ("2 workers, 2 shared cores vs 1 worker pinned to one core", "2w-free", "1w"),
        ("reference proxy: 2 workers on one core vs 1 worker, kernel default scheduling", "bare-2w",
         "bare-1w"),
        ("reference proxy: the same under throughput scheduling", "bare-2w-tp", "bare-1w-tp"),
    ]
    lines += ["", "| comparison | req/s (of the medians) | req/s (median of the per-round ratios, range) "
              "| req per gateway CPU-second |", "|---|---|---|---|"]
    lines += [f"| {label} | {ratio(medians, a, b)} | {paired(runs, a, b)} | {ratio(per_cpu, a, b)} |"
              for label, a, b in pairs if a in medians and b in medians]
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    tmp = args.dir or Path(tempfile.mkdtemp(prefix="mpx-workers-"))
    tmp.mkdir(parents=True, exist_ok=True)
    chosen = [s for s in SCENARIOS if args.only is None or s.name in args.only.split(",")]
    fx = Fixtures(tmp, args.load_cpu)
    runs: list[dict[str, Any]] = []
    try:
        for r in range(args.rounds):
            for s in chosen:
                result = run_one(s, fx, args, tmp, f"{s.name}-r{r}")
                runs.append(result)
                print(f"round {r + 1} {s.name}: {result['rps']:.0f} req/s, context switches per request "
                      f"{result['switches_per_req']} (load average {result['loadavg']})", flush=True)
    finally:
        fx.stop()
    print()
    print(report(runs, args))
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))
    bad = sum(r["bad"] + r["socket_errors"] for r in runs)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
