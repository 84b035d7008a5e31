"""Cold and warm invocations of the AWS Lambda entry point, in a fresh process as a Lambda
runtime would run it, against `modelplex simulate` (an instant upstream answer, so what is
measured is the gateway's own start and per-invocation cost).

    .venv/bin/python benchmarks/scale/lambda_coldstart.py        # ~15 s

Prints: the import time of `modelplex.serverless`, the first invocation (gateway built, stores
opened, one chat completion, its rows flushed), and the median of the warm invocations. Runs
--runs fresh processes and reports each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from common import BENCH_KEY, PYTHON, Proc, free_port, gateway_config, loadavg, wait_http, write_yaml


def event(body: dict[str, Any]) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event."""
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": "/v1/chat/completions", "rawQueryString": "",
        "headers": {"authorization": f"Bearer {BENCH_KEY}", "content-type": "application/json",
                    "host": "example.execute-api.eu-west-1.amazonaws.com", "x-forwarded-proto": "https"},
        "requestContext": {"http": {"method": "POST", "path": "/v1/chat/completions", "protocol": "HTTP/1.1",
                                    "sourceIp": "203.0.113.7", "userAgent": "bench"},
                           "requestId": "bench", "routeKey": "$default", "stage": "$default"},
        "body": json.dumps(body), "isBase64Encoded": False,
    }


def invoke_here(n: int) -> None:
    """The Lambda process: import, then n invocations; prints one JSON line."""
    started = time.monotonic()
    from modelplex.serverless import handler

    imported = time.monotonic() - started
    times, statuses = [], []
    for i in range(n):
        t = time.monotonic()
        ctx = types.SimpleNamespace(aws_request_id=f"bench-{i}", function_name="modelplex")
        response = handler(event({"model": "m", "messages": [{"role": "user", "content": "hi"}]}), ctx)
        times.append(time.monotonic() - t)
        statuses.append(response["statusCode"])
    handler.close()
    print(json.dumps({"import_s": imported, "invocations_s": times, "statuses": statuses}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="fresh processes (cold starts)")
    p.add_argument("--invocations", type=int, default=20, help="per process")
    p.add_argument("--invoke-here", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.invoke_here is not None:
        invoke_here(args.invoke_here)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="mpx-lambda-"))
    sim_port = free_port()
    sim_cfg = write_yaml(tmp / "sim.yaml",
                         {"providers": [{"name": "openai", "kind": "openai", "port": sim_port}]})
    sim = Proc("simulator", [PYTHON, "-m", "modelplex", "simulate", "--config", str(sim_cfg)], tmp)
    try:
        wait_http(f"http://127.0.0.1:{sim_port}/_sim/requests", sim)
        print(f"load average: {loadavg()}")
        for run in range(args.runs):
            run_dir = tmp / f"run{run}"  # a fresh /tmp, as a new instance has
            run_dir.mkdir()
            cfg = gateway_config(f"http://127.0.0.1:{sim_port}/v1", run_dir)
            cfg["request_log"]["ship_interval_ms"] = 10
            path = write_yaml(run_dir / "lambda.yaml", cfg)
            done = subprocess.run(
                [PYTHON, __file__, "--invoke-here", str(args.invocations)], capture_output=True, text=True,
                env={"MODELPLEX_CONFIG": str(path), "PATH": "/usr/bin:/bin"}, timeout=120, check=False)
            if done.returncode != 0:
                raise SystemExit(done.stderr[-3000:])
            row = json.loads(done.stdout.splitlines()[-1])
            if set(row["statuses"]) != {200}:
                raise SystemExit(f"not every invocation answered 200: {row['statuses']}")
            warm = statistics.median(row["invocations_s"][1:])
            print(f"run {run + 1}: import {row['import_s'] * 1000:.0f} ms, first invocation "
                  f"{row['invocations_s'][0] * 1000:.0f} ms, warm invocations median {warm * 1000:.1f} ms "
                  f"(max {max(row['invocations_s'][1:]) * 1000:.1f} ms)")
        print(f"load average: {loadavg()}")
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
