"""Generate a synthetic modelplex request log (SQLite, the gateway's own schema) for benchmarks and
tests: several providers and models, routes, task labels, teams and keys, a Zipf-shaped population
of prompt templates, errors, failovers with attempts and waste, counterfactual costs, and feedback
scores on a tenth of the requests.

    python benchmarks/assess/generate.py /tmp/log.db --rows 1000000
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import math
import random
import sqlite3
import time
from pathlib import Path

import msgspec

from modelplex.observability.requestlog_row import COLUMNS
from modelplex.observability.requestlog_store import create_table

# model -> (provider, deployment, input price, output price per 1M tokens in EUR, latency p50 ms)
MODELS = {
    "gpt-4o-mini": ("openai", "oai-mini", 0.15, 0.60, 600),
    "gpt-4o": ("openai", "oai-4o", 2.50, 10.0, 1400),
    "claude-haiku": ("anthropic", "ant-haiku", 0.80, 4.0, 700),
    "claude-sonnet": ("anthropic", "ant-sonnet", 3.0, 15.0, 1800),
    "llama-70b": ("groq", "groq-70b", 0.59, 0.79, 300),
}
FALLBACK = {
    "gpt-4o-mini": "claude-haiku",
    "gpt-4o": "claude-sonnet",
    "claude-haiku": "gpt-4o-mini",
    "claude-sonnet": "gpt-4o",
    "llama-70b": "gpt-4o-mini",
}
ROUTES = [("auto", 0.45), ("support", 0.25), ("batch", 0.2), (None, 0.1)]
ROUTE_MODELS = {
    "auto": ["gpt-4o-mini", "claude-haiku", "gpt-4o", "llama-70b"],
    "support": ["claude-haiku", "claude-sonnet"],
    "batch": ["llama-70b", "gpt-4o-mini"],
    None: list(MODELS),
}
BASELINE = {"auto": "gpt-4o", "support": "claude-sonnet", "batch": "gpt-4o"}
TASKS = [("summary", 0.35), ("analysis", 0.15), ("extraction", 0.2), ("chat", 0.2), (None, 0.1)]
ERRORS = ["upstream_timeout", "upstream_server_error", "rate_limit_exceeded", "invalid_request_error"]
_encode = msgspec.json.Encoder().encode


def _picker(items: list[tuple[object, float]], rng: random.Random):  # type: ignore[no-untyped-def]
    values = [v for v, _ in items]
    cum = list(itertools.accumulate(w for _, w in items))
    return lambda: values[bisect.bisect(cum, rng.random() * cum[-1])]


def _cost(model: str, inp: int, out: int) -> int:
    _, _, pin, pout, _ = MODELS[model]
    return round(inp * pin + out * pout)  # micro-units: tokens * price per 1M tokens


def generate(
    path: Path, rows: int, seed: int = 7, start: float = 1_760_000_000.0, days: float = 30.0
) -> None:
    rng = random.Random(seed)
    route_of = _picker(ROUTES, rng)  # type: ignore[arg-type]
    task_of = _picker(TASKS, rng)  # type: ignore[arg-type]
    templates = 50_000
    zipf = list(itertools.accumulate(1 / (k + 1) ** 1.1 for k in range(templates)))
    path.unlink(missing_ok=True)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    for statement in create_table(0):
        db.execute(statement)
    insert = f"INSERT INTO request_log ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
    batch: list[tuple[object, ...]] = []
    feedback: list[tuple[object, ...]] = []
    span = days * 86400
    for i in range(rows):
        ts = start + span * i / rows + rng.random()
        route = route_of()
        task = task_of()
        model = rng.choice(ROUTE_MODELS[route])  # type: ignore[index]
        if task == "analysis" and route == "auto" and rng.random() < 0.6:
            model = "gpt-4o"
        provider, deployment, _, _, p50 = MODELS[model]
        team_n = min(int(rng.paretovariate(1.2)), 20)
        team, key = f"team-{team_n:02d}", f"key-{team_n:02d}-{rng.randrange(5)}"
        tpl = bisect.bisect(zipf, rng.random() * zipf[-1])
        fingerprint = f"{tpl * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF:016x}"
        inp = int(rng.lognormvariate(math.log(800 + 40 * (tpl % 50)), 0.6))
        out = int(rng.lognormvariate(math.log(250), 0.7))
        latency = rng.lognormvariate(math.log(p50), 0.5)
        ttft = latency * rng.uniform(0.1, 0.4)
        status, error, attempts, waste, failover_ms, failover_from, stream = (
            200,
            None,
            [],
            0,
            None,
            None,
            rng.random() < 0.4,
        )
        roll = rng.random()
        cost: int | None = _cost(model, inp, out)
        answer = {
            "deployment": deployment,
            "provider": provider,
            "model": model,
            "outcome": "ok",
            "start_ms": 0.0,
            "elapsed_ms": round(latency, 3),
            "answer": True,
            "input_tokens": inp,
            "output_tokens": out,
            "cost_micro": cost,
        }
        if roll < 0.03:  # failover: the first provider failed, the fallback answered
            first = {
                **answer,
                "outcome": rng.choice(ERRORS[:2]),
                "answer": False,
                "cost_micro": None,
                "input_tokens": 0,
                "output_tokens": 0,
            }
            if rng.random() < 0.3:  # the failed attempt was charged (a cut stream)
                first["cost_micro"] = _cost(model, inp, out // 3)
                waste = first["cost_micro"]
            failover_ms = rng.lognormvariate(math.log(350 if provider != "groq" else 900), 0.6)
            failover_from = provider
            model = FALLBACK[model]
            provider, deployment, _, _, p50 = MODELS[model]
            cost = _cost(model, inp, out)
            second = {
                **answer,
                "deployment": deployment,
                "provider": provider,
                "model": model,
                "start_ms": round(latency, 3),
                "cost_micro": cost,
            }
            attempts = [first, second]
            latency += failover_ms
        elif roll < 0.05:  # failed request
            error = rng.choice(ERRORS)
            status = {
                "upstream_timeout": 504,
                "upstream_server_error": 502,
                "rate_limit_exceeded": 429,
                "invalid_request_error": 400,
            }[error]
            attempts = [{**answer, "outcome": error, "answer": False, "cost_micro": None}]
            failover_from = provider if error != "invalid_request_error" else None
            if rng.random() < 0.2:
                attempts[0]["cost_micro"] = waste = _cost(model, inp, out // 4)
            cost, out = None, 0
        elif roll < 0.06:  # hedged: the loser's tokens are waste
            loser = {
                **answer,
                "outcome": "hedge_lost",
                "answer": False,
                "hedge": True,
                "cost_micro": _cost(model, inp, out // 5),
            }
            waste = loser["cost_micro"]
            attempts = [loser, answer]
        else:
            attempts = [answer]
        base = BASELINE.get(route)  # type: ignore[arg-type]
        counterfactual = _cost(base, inp, out) if cost is not None and base else cost
        rid = f"{seed:02d}{i:010d}{rng.getrandbits(32):08x}"
        batch.append(
            (
                rid,
                ts,
                "openai",
                "chat",
                key,
                None,
                team,
                None,
                route or model,
                route,
                "rule" if route else None,
                task,
                model,
                deployment,
                provider,
                status,
                error,
                None if error is None else "failed",
                int(stream),
                0,
                round(latency, 3),
                round(ttft, 3) if error is None else None,
                round(latency * 0.97, 3),
                round(latency * 0.03, 3),
                len(attempts),
                int(len(attempts) == 2 and failover_ms is None),
                round(failover_ms, 3) if failover_ms is not None else None,
                failover_from,
                inp,
                out,
                0,
                0,
                0,
                0,
                cost,
                "EUR",
                cost,
                "EUR" if cost is not None else None,
                waste,
                counterfactual,
                0,
                fingerprint,
                _encode([task] if task else []).decode(),
                _encode(attempts).decode(),
                None,
                None,
            )
        )
        if rng.random() < 0.1 and error is None:
            quality = {
                "gpt-4o": 0.9,
                "claude-sonnet": 0.88,
                "claude-haiku": 0.8,
                "gpt-4o-mini": 0.78,
                "llama-70b": 0.72,
            }[model]
            feedback.append((rid, min(max(rng.gauss(quality, 0.1), 0.0), 1.0), ts + 5, key))
        if len(batch) >= 50_000:
            db.executemany(insert, batch)
            batch.clear()
    db.executemany(insert, batch)
    db.executemany("INSERT INTO request_feedback VALUES (?, ?, ?, ?)", feedback)
    db.commit()
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", type=Path)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    started = time.perf_counter()
    generate(args.path, args.rows, args.seed)
    size = args.path.stat().st_size / 1e6
    print(f"wrote {args.rows:,} rows to {args.path} ({size:.0f} MB) in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
