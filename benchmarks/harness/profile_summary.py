"""Where a gateway worker's CPU goes, from a py-spy `--format raw` profile (collapsed stacks).

    py-spy record -p PID -d 20 -r 250 --format raw -o ns.raw --nonblocking
    python benchmarks/harness/profile_summary.py ns.raw

Each sample is charged to the innermost frame's file (self time), grouped into the parts of the
request path named below; the request log's writer thread is a part of its own. Percentages are
of all samples on all threads (py-spy leaves idle samples out).
"""

from __future__ import annotations

import collections
import re
import sys

# First match wins: (part, pattern over "package/module.py" of the innermost frame)
PARTS: list[tuple[str, str]] = [
    ("request log (row, spool, shipper, SQLite writer)", r"modelplex/observability/requestlog"),
    ("metrics and alerts", r"modelplex/observability/|prometheus_client/"),
    ("inbound HTTP (uvicorn, httptools, server/http.py)", r"^uvicorn/|^httptools/|modelplex/server/http\.py"),
    ("dialect parse and render (server/*)", r"modelplex/server/"),
    ("upstream HTTP client (aiohttp, transport.py)", r"^aiohttp/|^yarl/|^multidict/|modelplex/transport\.py"),
    ("provider translation (providers/*)", r"modelplex/providers/"),
    ("routing and execution (routing/*)", r"modelplex/routing/"),
    ("keys, limits, budgets, metering", r"modelplex/(limits|metering|keys)"),
    ("pipeline, app, context", r"modelplex/"),
    ("event loop (asyncio, uvloop)", r"^asyncio/|^uvloop/"),
    ("JSON (msgspec, orjson)", r"^msgspec/|^orjson/"),
]


def module_of(frame: str) -> str:
    m = re.search(r"\(([^):]*)", frame)
    path = m.group(1) if m else ""
    return path.split("site-packages/")[-1].split("python3.11/")[-1]


def main(path: str) -> None:
    total = 0
    parts: collections.Counter[str] = collections.Counter()
    modules: collections.Counter[str] = collections.Counter()
    with open(path, encoding="utf-8") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            mod = module_of(stack.split(";")[-1])
            modules[mod] += n
            part = next((name for name, pattern in PARTS if re.search(pattern, mod)), "other (stdlib, C)")
            parts[part] += n
    print(f"{total} samples")
    print("\n| part of the request path | share of CPU samples |\n|---|---:|")
    for name, n in parts.most_common():
        print(f"| {name} | {100 * n / total:.1f} % |")
    print("\n| module (self time) | share |\n|---|---:|")
    for name, n in modules.most_common(15):
        print(f"| {name or '(unknown)'} | {100 * n / total:.1f} % |")


if __name__ == "__main__":
    main(sys.argv[1])
