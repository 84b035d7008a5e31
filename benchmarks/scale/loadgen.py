"""Open-loop load generator: chat completions sent at fixed arrival rates, phase after phase,
whatever the answers do (a closed loop such as wrk's slows down with the server and hides
overload). One JSON line per request goes to --out.

    python benchmarks/scale/loadgen.py --url http://127.0.0.1:8080 --key sk-... \
        --phase steady:10:30 --phase spike:100:60 --phase after:10:30 --out requests.jsonl

A phase is NAME:RATE:SECONDS; request i of a phase is sent at phase start + i/RATE.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp


@dataclass
class Result:
    phase: str
    at: float  # intended send time, seconds from the start of the run
    lag: float  # how late it was actually sent (the generator's own fidelity)
    stream: bool
    status: int  # 0: no HTTP answer (see error)
    latency: float  # to the last byte
    ttfb: float | None  # to the first body byte
    retry_after: str | None
    error: str | None


async def one(session: aiohttp.ClientSession, url: str, headers: dict[str, str], model: str,
              stream: bool, phase: str, at: float, lag: float) -> Result:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "Say hello."}]}
    t0 = time.monotonic()
    ttfb: float | None = None
    try:
        async with session.post(url, json=body, headers=headers) as resp:
            async for _ in resp.content.iter_any():
                if ttfb is None:
                    ttfb = time.monotonic() - t0
            return Result(phase, at, lag, stream, resp.status, time.monotonic() - t0, ttfb,
                          resp.headers.get("retry-after"), None)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return Result(phase, at, lag, stream, 0, time.monotonic() - t0, ttfb, None,
                      f"{type(exc).__name__}: {exc}")


async def run(args: argparse.Namespace) -> tuple[float, list[Result]]:
    """(wall-clock time of the run's start, one result per request)."""
    phases = []
    for spec in args.phase:
        name, rate, seconds = spec.split(":")
        phases.append((name, float(rate), float(seconds)))
    rng = random.Random(args.seed)
    url = f"{args.url}/v1/chat/completions"
    headers = {"authorization": f"Bearer {args.key}"}
    # Idle connections are dropped before the server's keep-alive timeout (uvicorn: 5 s) can close
    # them under a request about to be sent on them (the usual keep-alive race, not an overload).
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=args.keepalive_s)
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    tasks: list[asyncio.Task[Result]] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start, epoch = time.monotonic(), time.time()
        phase_start = 0.0
        for name, rate, seconds in phases:
            for i in range(int(rate * seconds)):
                at = phase_start + i / rate
                delay = start + at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                lag = time.monotonic() - start - at
                stream = rng.random() < args.stream_share
                tasks.append(asyncio.create_task(
                    one(session, url, headers, args.model, stream, name, at, lag)))
            phase_start += seconds
        return epoch, list(await asyncio.gather(*tasks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--model", default="m")
    parser.add_argument("--phase", action="append", required=True, help="NAME:RATE:SECONDS (repeat)")
    parser.add_argument("--stream-share", type=float, default=0.3, help="share of streaming requests")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keepalive-s", type=float, default=3.0, help="client idle keep-alive timeout")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    wall, results = asyncio.run(run(args))
    with args.out.open("w") as f:
        f.write(json.dumps({"started_epoch": wall}) + "\n")
        for r in results:
            f.write(json.dumps(asdict(r)) + "\n")
    print(f"loadgen: {len(results)} requests written to {args.out}")


if __name__ == "__main__":
    main()
