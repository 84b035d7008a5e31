"""Spike benchmark: steady load, then 10x for 60 s, then steady again, against simulated providers
with realistic latency. Three processes: `modelplex simulate`, `modelplex serve` (shedding tuned
so the spike overflows it), and the open-loop load generator (loadgen.py); the gateway's memory
is sampled throughout.

    .venv/bin/python benchmarks/scale/spike.py            # ~2.5 minutes

Checks and reports: no crash; no answer other than 200 or a 503 carrying Retry-After; memory
bounded; per phase throughput, status counts, p50/p99 of admitted requests; the time after the
spike until latency is back to normal (every later 1 s window: no 503, and the median of the next
5 s within 25 % of the steady median). Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    BENCH_KEY,
    PYTHON,
    REPO,
    Proc,
    free_port,
    gateway_config,
    loadavg,
    ms,
    percentile,
    serve_cmd,
    tree_rss_kb,
    wait_http,
    write_yaml,
)

RECOVERY_LIMIT_S = 10.0
NORMAL_MEDIAN_FACTOR = 1.25
SMOOTHING_S = 5.0


@dataclass
class Sampler:
    """Samples the resident memory of a process tree every `interval` seconds, on a thread."""

    pid: int
    interval: float = 0.5
    samples: list[tuple[float, int]] = field(default_factory=list)  # (epoch, kB)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), tree_rss_kb(self.pid)))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steady-rps", type=float, default=10.0)
    p.add_argument("--factor", type=float, default=10.0, help="spike rate = factor x steady rate")
    p.add_argument("--warmup-s", type=float, default=5.0)
    p.add_argument("--steady-s", type=float, default=30.0)
    p.add_argument("--spike-s", type=float, default=60.0)
    p.add_argument("--after-s", type=float, default=30.0)
    p.add_argument("--stream-share", type=float, default=0.3)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--max-in-flight", type=int, default=32)
    p.add_argument("--max-queue", type=int, default=32)
    p.add_argument("--queue-timeout-ms", type=int, default=1000)
    p.add_argument("--ttft-p50-ms", type=float, default=200.0)
    p.add_argument("--ttft-p95-ms", type=float, default=800.0)
    p.add_argument("--tokens-per-s", type=float, default=50.0)
    p.add_argument("--output-tokens", type=int, default=20)
    p.add_argument("--dir", type=Path, default=None, help="keep configs, logs and raw results here")
    p.add_argument("--json", type=Path, default=None, help="write the summary as JSON here too")
    return p.parse_args()


def start_processes(args: argparse.Namespace, tmp: Path) -> tuple[Proc, Proc, str]:
    sim_port, gw_port = free_port(), free_port()
    sim_cfg = write_yaml(tmp / "sim.yaml", {"providers": [{
        "name": "openai", "kind": "openai", "port": sim_port,
        "default": {"ttft_ms": {"p50": args.ttft_p50_ms, "p95": args.ttft_p95_ms},
                    "tokens_per_s": args.tokens_per_s, "output_tokens": args.output_tokens},
    }]})
    sim = Proc("simulator", [PYTHON, "-m", "modelplex", "simulate", "--config", str(sim_cfg)], tmp)
    wait_http(f"http://127.0.0.1:{sim_port}/_sim/requests", sim)
    server = {"max_in_flight": args.max_in_flight, "max_queue": args.max_queue,
              "queue_timeout_ms": args.queue_timeout_ms}
    gw_cfg = write_yaml(tmp / "gateway.yaml",
                        gateway_config(f"http://127.0.0.1:{sim_port}/v1", tmp, server=server))
    gateway = Proc("gateway", serve_cmd(gw_cfg, gw_port, args.workers), tmp)
    url = f"http://127.0.0.1:{gw_port}"
    wait_http(f"{url}/readyz", gateway)
    return sim, gateway, url


Record = dict[str, Any]


def windows(results: list[Record], start: float, end: float) -> list[tuple[float, list[Record]]]:
    """1-second windows of requests by intended send time, [start, end)."""
    out = []
    t = start
    while t < end - 1e-9:
        out.append((t, [r for r in results if t <= r["at"] < t + 1]))
        t += 1
    return out


def recovery_s(results: list[Record], spike_end: float, end: float, normal_median: float) -> float | None:
    """Seconds from the end of the spike to the first 1 s window from which every window is
    normal: no 503 or error among its requests, and the median latency of the requests sent in the
    SMOOTHING_S from its start within NORMAL_MEDIAN_FACTOR of the steady median (one second holds
    too few requests for a stable median)."""
    verdicts = []
    for t, rs in windows(results, spike_end, end):
        later = [r["latency"] for r in results if t <= r["at"] < t + SMOOTHING_S and r["status"] == 200]
        median = percentile(later, 50) or 0.0
        calm = bool(rs) and all(r["status"] == 200 for r in rs)
        normal = calm and median <= normal_median * NORMAL_MEDIAN_FACTOR
        verdicts.append((t, normal))
    for i, (t, _) in enumerate(verdicts):
        if all(v for _, v in verdicts[i:]):
            return t - spike_end
    return None


def summarize(args: argparse.Namespace, results: list[dict[str, Any]], epoch: float,
              rss: list[tuple[float, int]], phases: list[tuple[str, float, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"phases": {}}
    bounds, t = {}, 0.0
    for name, _, seconds in phases:
        bounds[name] = (t, t + seconds)
        t += seconds
    for name, rate, seconds in phases:
        if name == "warmup":
            continue
        rs = [r for r in results if r["phase"] == name]
        ok = [r["latency"] for r in rs if r["status"] == 200]
        lo, hi = bounds[name]
        phase_rss = [kb for at, kb in rss if lo <= at - epoch < hi]
        statuses = Counter(str(r["status"]) if r["status"] else f"error:{r['error']}" for r in rs)
        out["phases"][name] = {
            "offered_rps": rate, "seconds": seconds, "sent": len(rs),
            "admitted_rps": round(len(ok) / seconds, 1),
            "statuses": dict(sorted(statuses.items())),
            "p50_s": percentile(ok, 50), "p99_s": percentile(ok, 99),
            "max_rss_mb": round(max(phase_rss) / 1024, 1) if phase_rss else None,
            "max_send_lag_ms": round(max((r["lag"] for r in rs), default=0) * 1000, 1),
        }
    bad = [r for r in results if r["status"] not in (200, 503)]
    no_retry_after = [r for r in results if r["status"] == 503 and not r["retry_after"]]
    steady = [r["latency"] for r in results if r["phase"] == "steady" and r["status"] == 200]
    spike_end, end = bounds["spike"][1], bounds["after"][1]
    out["recovery_s"] = recovery_s(results, spike_end, end, percentile(steady, 50) or 0)
    out["uncontrolled"] = len(bad)
    out["uncontrolled_examples"] = [{k: r[k] for k in ("phase", "status", "error")} for r in bad[:5]]
    out["shed_without_retry_after"] = len(no_retry_after)
    out["max_rss_mb"] = round(max(kb for _, kb in rss) / 1024, 1) if rss else None
    # Bounded memory: the second half of the spike needs no more than the first.
    lo, hi = bounds["spike"]
    halves = ([kb for at, kb in rss if lo <= at - epoch < (lo + hi) / 2],
              [kb for at, kb in rss if (lo + hi) / 2 <= at - epoch < hi])
    out["spike_rss_halves_mb"] = [round(max(h) / 1024, 1) if h else None for h in halves]
    return out


def report(args: argparse.Namespace, s: dict[str, Any], load_before: str, load_after: str) -> str:
    lines = [
        f"spike: {args.steady_rps:g} req/s steady, {args.steady_rps * args.factor:g} req/s for "
        f"{args.spike_s:g} s; {args.stream_share:.0%} streaming; gateway: {args.workers} worker(s), "
        f"max_in_flight {args.max_in_flight}, max_queue {args.max_queue}, queue_timeout_ms "
        f"{args.queue_timeout_ms}; upstream: TTFT p50 {args.ttft_p50_ms:g} ms / p95 {args.ttft_p95_ms:g} ms, "
        f"{args.tokens_per_s:g} tokens/s, {args.output_tokens} tokens",
        f"load average before: {load_before}; after: {load_after}",
        "",
        "| phase | offered req/s | sent | admitted req/s | statuses | p50 admitted | p99 admitted | max RSS "
        "| max send lag |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, p in s["phases"].items():
        statuses = ", ".join(f"{k}: {v}" for k, v in p["statuses"].items())
        lines.append(f"| {name} | {p['offered_rps']:g} | {p['sent']} | {p['admitted_rps']} | {statuses} | "
                     f"{ms(p['p50_s'])} | {ms(p['p99_s'])} | {p['max_rss_mb']} MB "
                     f"| {p['max_send_lag_ms']} ms |")
    rec = s["recovery_s"]
    lines += [
        "",
        f"gateway alive at the end: {s['alive']}; answers other than 200 / 503: {s['uncontrolled']}"
        f"{' ' + str(s['uncontrolled_examples']) if s['uncontrolled'] else ''}; "
        f"503 without Retry-After: {s['shed_without_retry_after']}",
        f"max gateway RSS over the run: {s['max_rss_mb']} MB; over the first / second half of the spike: "
        f"{s['spike_rss_halves_mb'][0]} / {s['spike_rss_halves_mb'][1]} MB",
        f"recovery to normal latency after the spike: "
        f"{'not within the after phase' if rec is None else f'{rec:.0f} s'} (limit {RECOVERY_LIMIT_S:g} s)",
    ]
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    tmp = args.dir or Path(tempfile.mkdtemp(prefix="mpx-spike-"))
    tmp.mkdir(parents=True, exist_ok=True)
    rate = args.steady_rps
    phases = [("warmup", rate, args.warmup_s), ("steady", rate, args.steady_s),
              ("spike", rate * args.factor, args.spike_s), ("after", rate, args.after_s)]
    load_before = loadavg()
    sim, gateway, url = start_processes(args, tmp)
    sampler = Sampler(gateway.pid)
    try:
        sampler.start()
        out = tmp / "requests.jsonl"
        cmd = [PYTHON, str(REPO / "benchmarks/scale/loadgen.py"), "--url", url, "--key", BENCH_KEY,
               "--stream-share", str(args.stream_share), "--out", str(out)]
        for name, r, seconds in phases:
            cmd += ["--phase", f"{name}:{r:g}:{seconds:g}"]
        gen = Proc("loadgen", cmd, tmp)
        if gen.proc.wait() != 0:
            raise SystemExit(f"load generator failed:\n{gen.log()}")
        gen.stop()
        alive = gateway.alive()
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as resp:
            alive = alive and resp.status == 200
    finally:
        sampler.stop()
        gateway.stop()
        sim.stop()
    lines = out.read_text().splitlines()
    epoch = json.loads(lines[0])["started_epoch"]
    results = [json.loads(line) for line in lines[1:]]
    summary = summarize(args, results, epoch, sampler.samples, phases)
    summary["alive"] = alive
    load_after = loadavg()
    summary["loadavg"] = {"before": load_before, "after": load_after}
    print(report(args, summary, load_before, load_after))
    print(f"\n(configs, logs and raw results in {tmp})")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    rec = summary["recovery_s"]
    passed = (alive and not summary["uncontrolled"] and not summary["shed_without_retry_after"]
              and rec is not None and rec <= RECOVERY_LIMIT_S)
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
