"""Time `modelplex assess` on a generated request log of N requests (default 1,000,000):

    .venv/bin/python benchmarks/assess/bench.py [--rows 1000000] [--db /tmp/modelplex-assess-1m.db]

Generates the log once (kept and reused when it already has N rows), then runs the real command
`python -m modelplex assess --log <db> --format json --out <file>` in a fresh process and reports
its wall time and CPU time, and the time of each format. The target (the issue): under 30 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from generate import generate


def rows_in(db: Path) -> int:
    if not db.exists():
        return -1
    try:
        conn = sqlite3.connect(db)
        n: int = conn.execute("SELECT count(*) FROM request_log").fetchone()[0]
        conn.close()
        return n
    except sqlite3.Error:
        return -1


def run(cmd: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, default=Path("/tmp/modelplex-assess-1m.db"))
    args = parser.parse_args()
    if rows_in(args.db) != args.rows:
        started = time.perf_counter()
        generate(args.db, args.rows)
        print(f"generated {args.rows:,} rows in {time.perf_counter() - started:.1f} s")
    print(f"log: {args.db} ({args.db.stat().st_size / 1e6:.0f} MB, {args.rows:,} rows)")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    python = f"{platform.python_implementation()} {platform.python_version()}"
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {python}, SQLite {sqlite3.sqlite_version}, "
          f"load average {load}")
    for fmt in ("json", "table", "html"):
        out = args.db.with_suffix(f".{fmt}")
        cmd = [
            sys.executable,
            "-m",
            "modelplex",
            "assess",
            "--log",
            str(args.db),
            "--format",
            fmt,
            "--out",
            str(out),
        ]
        wall, cpu = run(cmd)
        verdict = "ok" if wall < 30 else "OVER 30 s"
        print(f"assess --format {fmt:5s}: {wall:6.2f} s wall, {cpu:6.2f} s CPU  [{verdict}]")


if __name__ == "__main__":
    main()
