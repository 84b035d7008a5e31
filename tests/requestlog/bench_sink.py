"""Per-request cost of the request-log sink on the request path (a script, not a test):

    .venv/bin/python tests/requestlog/bench_sink.py [--n 20000] [--prompt-chars 2000]

Builds a realistic finished RequestContext (one priced attempt, usage, a prompt, tags), then calls
the sink N times as `pipeline.finish` would (row + fingerprint + encode + one spool write, plus the
dashboard's live aggregate), and prints the median and p99 in microseconds, and each part alone.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import msgspec

from modelplex.config.requestlog import RequestLog as Settings
from modelplex.config.schema import Config
from modelplex.context import AttemptRecord, RequestContext
from modelplex.dashboard.live import Live
from modelplex.metering.catalog import load_catalog
from modelplex.observability.requestlog import RequestLog
from modelplex.observability.requestlog_row import fingerprint
from modelplex.providers.registry import load_registry
from modelplex.routing.features import Features
from modelplex.runtime import RuntimeHolder, build_runtime
from modelplex.serve import Services
from modelplex.types import Usage


def context(svc: Services, prompt: str) -> RequestContext:
    rt = svc.runtime()
    ctx = RequestContext(dialect="openai", operation="chat")
    ctx.caller = next(iter(rt.keys.values()))
    ctx.model, ctx.route, ctx.route_reason, ctx.tags = "auto", "auto", "rule:short", ("batch", "nightly")
    ctx.features = Features(prompt_text=prompt, prompt_chars=len(prompt), prompt_tokens=len(prompt) // 4,
                            prompt_words=len(prompt.split()), max_tokens=256, tools=False, json_schema=False,
                            vision=False, stream=False, task="summary", tags=frozenset(ctx.tags), team="t",
                            tier=None, key="k", dialect="openai")
    endpoint = rt.endpoints["d1"]
    a = AttemptRecord(deployment="d1", provider="openai", model="m", started=ctx.started, ended=ctx.started + 0.4,
                      outcome="ok", upstream_status=200, ttft_s=0.12,
                      usage=Usage(input_tokens=500, output_tokens=120))
    ctx.attempts.append(a)
    ctx.answered_by, ctx.answered_model, ctx.usage = endpoint, "m", a.usage
    ctx.upstream_s = 0.4
    svc.meter.settle(rt, ctx)
    return ctx


def timed(fn, n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(n):
        t = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t) / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--prompt-chars", type=int, default=2000)
    args = parser.parse_args()
    config = Config.model_validate({
        "deployments": [{"name": "d1", "provider": "openai", "model": "gpt-4o-mini",
                         "price": {"input": 0.15, "output": 0.6}}],
        "models": [{"name": "m", "deployments": ["d1"]}],
        "keys": [{"name": "k", "key": "sk-bench-000000000000", "team": "t"}],
    })
    catalog = load_catalog()
    svc = Services(holder=RuntimeHolder(build_runtime(config, load_registry(), catalog=catalog), None, {}, catalog))
    words = "Summarise the quarterly report for account 12345 and list the three biggest risks. "
    prompt = (words * (args.prompt_chars // len(words) + 1))[: args.prompt_chars]
    ctx = context(svc, prompt)
    with tempfile.TemporaryDirectory() as tmp:
        sink = RequestLog(svc, Settings(spool_dir=str(Path(tmp) / "spool")), Path(tmp))
        live = Live()
        sink.observers.append(live.observe)
        end = time.monotonic()
        sink(ctx, end)  # opens the spool
        row = sink.builder.build(svc.runtime(), ctx, end)
        encode = msgspec.json.Encoder().encode
        line = encode(row) + b"\n"
        assert sink.spool is not None
        spool = sink.spool
        parts = {
            "whole sink (row + spool write + live aggregate)": lambda: sink(ctx, end),
            "  build the row (incl. fingerprint)": lambda: sink.builder.build(svc.runtime(), ctx, end),
            "  fingerprint alone": lambda: fingerprint(prompt),
            "  encode the row": lambda: encode(row),
            "  spool write (os.write, page cache)": lambda: spool.append(line),
            "  live aggregate (dashboard)": lambda: live.observe(row),
        }
        print(f"n={args.n}, prompt {args.prompt_chars} chars, row {len(line)} bytes")
        for name, fn in parts.items():
            mean, p99 = timed(fn, args.n)
            print(f"{name:52s} median {mean:7.1f} µs   p99 {p99:7.1f} µs")


if __name__ == "__main__":
    main()
