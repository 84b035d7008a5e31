"""The benchmark's simulated providers, in a process of their own (no event loop shared with the
gateway or the load generator). Prints one JSON line, {name: {"url", "started"}}, where `started`
is the provider's clock origin (time.monotonic(), the same clock in every process of the machine)
so the simulator log's times line up with the load generator's; then serves until killed.

.venv/bin/python benchmarks/orchestration/sims.py benchmarks/orchestration/sims.yaml
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import uvloop
import yaml

from modelplex.simulator.server import SimProvider, load_specs


async def serve(path: Path) -> None:
    # A stalled or cut stream whose reader (the gateway) has gone is the point of the exercise, not
    # an error worth a traceback.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    specs = load_specs(yaml.safe_load(path.read_text(encoding="utf-8")))
    providers = [await SimProvider(spec).start() for spec in specs]
    ready = {p.spec.name: {"url": p.url, "started": p.state.started} for p in providers}
    print(json.dumps(ready), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        for p in providers:
            await p.stop()


if __name__ == "__main__":
    uvloop.run(serve(Path(sys.argv[1])))
