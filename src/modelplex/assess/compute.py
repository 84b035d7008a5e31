"""The figures of the assessment, as SQL over the table `r` (source.py) plus percentiles in Python.

Definitions (docs/assess.md):
* spend of a request = its answer's cost + its waste; a failed request's spend is all waste.
* average cost per successful response = answer cost of successes / priced successes.
* wasted spend = waste of successful requests (failed attempts, hedge losers); failed spend = the
  spend of failed requests. All-in cost per success = all spend / successes.
* per provider and per model, wasted and failed spend go to the attempt that incurred it when the
  row's attempts carry costs, else to the row's provider and model.
* percentiles are nearest-rank over successful requests.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from modelplex.assess.source import LogDB
from modelplex.config.schema import Config

NONE: Final = "(none)"
SHARE: Final = 0.8
TOP: Final = 15
FAILOVER_TARGET_MS: Final = 2000.0  # DESIGN.md §4: fallback within 2 seconds
MIN_REQUESTS_FOR_BEST: Final = 20
_WITH_CF: Final = "(ok AND cost_micro IS NOT NULL AND counterfactual_micro IS NOT NULL)"


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest rank: the value at 1-based rank ceil(p * n) of the sorted values."""
    if not ordered:
        return None
    return ordered[min(max(math.ceil(p * len(ordered)) - 1, 0), len(ordered) - 1)]


def assess(db: sqlite3.Connection, source: str, config: Config | None = None,
           since: float | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    # Two halves on two connections and threads: SQLite releases the GIL while it sorts.
    reader = db.reader() if isinstance(db, LogDB) else None
    with ThreadPoolExecutor(max_workers=1) as pool:
        half = pool.submit(_second_half, reader) if reader is not None else None
        cube, samples = _cube(db)
        attributed = _attributed_waste(db)
        currency = db.execute("SELECT currency FROM r WHERE currency IS NOT NULL LIMIT 1").fetchone()
        overview = _overview(db, cube)
        fingerprints, series = half.result() if half is not None else _second_half(db)
    if reader is not None:
        reader.close()
    cost = {dim: _cost(cube, attributed, dim) for dim in ("provider", "model", "route")}
    latency, best = _latency_and_best(samples, cube)
    report: dict[str, Any] = {
        "source": source,
        "since": since,
        "generated_at": time.time(),
        "currency": currency[0] if currency else None,
        "overview": overview,
        "cost": cost,
        "pareto": {
            "route": pareto([(r["route"], r["spend_micro"], r["requests"]) for r in cost["route"]]),
            "task": pareto(_rollup(cube, ("task",), ("spend", "n"))),
            "team": pareto(_rollup(cube, ("team", "key_name"), ("spend", "n"), " / ")),
            "fingerprint": pareto(fingerprints),
        },
        "savings": _savings(cube, config),
        "series": series,
        "latency": latency,
        "best": best,
        "readiness": _readiness(db, config, {r["provider"] for r in cost["provider"] if r["requests"]}),
    }
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report


# One GROUP BY over every grouping dimension at once (one sort of the table instead of one per
# figure); each figure then sums the groups it needs.
_CUBE_KEYS: Final = ("provider", "model", "route", "task", "team", "key_name", "qtype")
_CUBE_SUMS: Final = {
    "n": "count(*)",
    "ok": "sum(ok)",
    "priced_ok": "sum(ok AND cost_micro IS NOT NULL)",
    "answer": "coalesce(sum(cost_micro), 0)",
    "wasted": "sum(CASE WHEN ok THEN waste_micro ELSE 0 END)",
    "failed": "sum(CASE WHEN ok THEN 0 ELSE waste_micro END)",
    "wasted_rest": "sum(CASE WHEN ok THEN waste_micro - waste_attr ELSE 0 END)",
    "failed_rest": "sum(CASE WHEN ok THEN 0 ELSE waste_micro - waste_attr END)",
    "spend": "sum(coalesce(cost_micro, 0) + waste_micro)",
    "with_cf": f"sum({_WITH_CF})",
    "cf_cost": f"coalesce(sum(CASE WHEN {_WITH_CF} THEN cost_micro END), 0)",
    "cf": f"coalesce(sum(CASE WHEN {_WITH_CF} THEN counterfactual_micro END), 0)",
    "scores": "count(score)",
    "score_sum": "coalesce(sum(score), 0.0)",
}
Cube = list[dict[str, Any]]
# Sorted latencies per provider and per (query type, model), and TTFTs per provider, of successes.
Samples = tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[float]]]


# The latencies of each cell ride along as text: one sort serves the percentiles too, and Python
# turns text into floats far faster than it takes rows one by one.
_CUBE_LISTS: Final = {
    "latencies": "group_concat(CASE WHEN ok THEN latency_ms END)",
    "ttfts": "group_concat(CASE WHEN ok THEN ttft_ms END)",
}


def _cube(db: sqlite3.Connection) -> tuple[Cube, Samples]:
    # One text key (the values joined by a unit separator) sorts about twice as fast as seven keys.
    key = " || char(31) || ".join(_CUBE_KEYS)
    sums = ", ".join([*_CUBE_SUMS.values(), *_CUBE_LISTS.values()])
    out = []
    lat: dict[str, list[float]] = defaultdict(list)
    ttft: dict[str, list[float]] = defaultdict(list)
    typed: dict[str, list[float]] = defaultdict(list)
    for k, *values in db.execute(f"SELECT {key} AS k, {sums} FROM r GROUP BY k"):  # noqa: S608
        *numbers, latencies, ttfts = values
        cell = dict(zip(_CUBE_KEYS, k.split("\x1f"), strict=True))
        cell |= dict(zip(_CUBE_SUMS, numbers, strict=True))
        out.append(cell)
        if latencies:
            floats = list(map(float, latencies.split(",")))
            lat[cell["provider"]] += floats
            typed[f"{cell['qtype']}\x1f{cell['model']}"] += floats
        if ttfts:
            ttft[cell["provider"]] += map(float, ttfts.split(","))
    for values in (*lat.values(), *ttft.values(), *typed.values()):
        values.sort()
    return out, (lat, ttft, typed)


def _rollup(cube: Cube, keys: tuple[str, ...], sums: tuple[str, ...], sep: str = "") -> list[tuple[Any, ...]]:
    """(key, *sums) per distinct value of `keys` (joined with `sep`)."""
    out: dict[str, list[Any]] = {}
    for g in cube:
        k = sep.join(g[key] for key in keys)
        acc = out.setdefault(k, [0] * len(sums))
        for i, name in enumerate(sums):
            acc[i] += g[name]
    return [(k, *v) for k, v in out.items()]


def _attributed_waste(db: sqlite3.Connection) -> dict[str, dict[tuple[str, int], int]]:
    """Waste that a row's attempts attribute to their own provider and model: dim -> (value, ok) -> spend."""
    out: dict[str, dict[tuple[str, int], int]] = {"provider": {}, "model": {}}
    for provider, model, ok, spent in db.execute(f"""
            SELECT coalesce(json_extract(a.value, '$.provider'), '{NONE}'),
                   coalesce(json_extract(a.value, '$.model'), '{NONE}'), r.ok,
                   sum(json_extract(a.value, '$.cost_micro'))
            FROM r, json_each(r.attempts) a
            WHERE r.waste_attr > 0 AND coalesce(json_extract(a.value, '$.answer'), 0) = 0
                  AND json_extract(a.value, '$.cost_micro') IS NOT NULL
            GROUP BY 1, 2, 3"""):  # noqa: S608
        for dim, value in (("provider", provider), ("model", model)):
            out[dim][(value, ok)] = out[dim].get((value, ok), 0) + spent
    return out


def _overview(db: sqlite3.Connection, cube: Cube) -> dict[str, Any]:
    t = {name: sum(g[name] for g in cube) for name in _CUBE_SUMS}
    first, last = db.execute("SELECT min(ts), max(ts) FROM r").fetchone()
    n, ok = t["n"], t["ok"]
    spend = t["answer"] + t["wasted"] + t["failed"]
    return {
        "requests": n, "ok": ok, "failed": n - ok, "error_rate": (n - ok) / n if n else None,
        "first_ts": first, "last_ts": last,
        "answer_micro": t["answer"], "wasted_micro": t["wasted"], "failed_micro": t["failed"],
        "spend_micro": spend,
        "avg_cost_per_success_micro": t["answer"] / t["priced_ok"] if t["priced_ok"] else None,
        "all_in_per_success_micro": spend / ok if ok else None,
        "unpriced_successes": ok - t["priced_ok"],
    }


def _cost(cube: Cube, attributed: dict[str, dict[tuple[str, int], int]], dim: str) -> list[dict[str, Any]]:
    """Requests, answers and their cost, wasted and failed spend, per provider | model | route."""
    by_attempt = dim in attributed
    wasted, failed = ("wasted_rest", "failed_rest") if by_attempt else ("wasted", "failed")
    rows = {k: {dim: k, "requests": n, "ok": ok, "priced_ok": priced, "answer_micro": answer,
                "wasted_micro": w, "failed_micro": f}
            for k, n, ok, priced, answer, w, f in _rollup(
                cube, (dim,), ("n", "ok", "priced_ok", "answer", wasted, failed))}
    for (value, ok), spent in attributed.get(dim, {}).items():
        entry = rows.setdefault(value, {dim: value, "requests": 0, "ok": 0, "priced_ok": 0, "answer_micro": 0,
                                        "wasted_micro": 0, "failed_micro": 0})
        entry["wasted_micro" if ok else "failed_micro"] += spent
    out = []
    for entry in rows.values():
        total = entry["answer_micro"] + entry["wasted_micro"] + entry["failed_micro"]
        n = entry["requests"]
        entry["spend_micro"] = total
        entry["error_rate"] = (n - entry["ok"]) / n if n else None
        entry["avg_cost_per_success_micro"] = (entry["answer_micro"] / entry["priced_ok"]
                                               if entry["priced_ok"] else None)
        entry["all_in_per_success_micro"] = total / entry["ok"] if entry["ok"] else None
        out.append(entry)
    return sorted(out, key=lambda e: (-e["spend_micro"], e[dim]))


def pareto(groups: list[tuple[Any, ...]]) -> dict[str, Any]:
    """The smallest set of groups (group, spend, requests), largest spend first, that makes 80 % of
    all spend."""
    groups = sorted(groups, key=lambda g: (-g[1], g[0]))
    total = sum(g[1] for g in groups)
    requests = sum(g[2] for g in groups)
    cum = set_size = set_requests = 0
    top: list[dict[str, Any]] = []
    for g, s, n in groups:
        if total and cum < SHARE * total:
            set_size += 1
            set_requests += n
        cum += s
        if len(top) < TOP:
            top.append({"group": g, "spend_micro": s, "requests": n,
                        "spend_share": s / total if total else 0.0,
                        "request_share": n / requests if requests else 0.0,
                        "cum_share": cum / total if total else 0.0})
    return {
        "groups": len(groups), "set_size": set_size,
        "set_group_share": set_size / len(groups) if groups else 0.0,
        "set_request_share": set_requests / requests if requests else 0.0,
        "spend_micro": total, "top": top,
    }


def _savings(cube: Cube, config: Config | None) -> dict[str, Any]:
    """Savings = counterfactual cost on the route's baseline - actual cost, over priced successes
    that have a counterfactual."""
    baselines = {r.name: r.baseline for r in config.routes} if config is not None else {}
    by_route = []
    for route, n, cost, cf in _rollup(cube, ("route",), ("with_cf", "cf_cost", "cf")):
        if n:
            by_route.append({"route": route, "baseline": baselines.get(route), "requests": n,
                             "cost_micro": cost, "counterfactual_micro": cf, "savings_micro": cf - cost,
                             "savings_share": (cf - cost) / cf if cf else None})
    by_route.sort(key=lambda e: (-e["savings_micro"], e["route"]))
    n = sum(r["requests"] for r in by_route)
    cost = sum(r["cost_micro"] for r in by_route)
    cf = sum(r["counterfactual_micro"] for r in by_route)
    return {
        "total": {"requests": n, "cost_micro": cost, "counterfactual_micro": cf, "savings_micro": cf - cost,
                  "savings_share": (cf - cost) / cf if cf else None},
        "by_route": by_route,
    }


def _series(db: sqlite3.Connection, points: int = 48) -> dict[str, Any]:
    first, last = db.execute("SELECT min(ts), max(ts) FROM r").fetchone()
    if first is None:
        return {"bucket_s": 0, "t": [], "requests": [], "errors": [], "spend_micro": []}
    span = max(last - first, 1.0)
    bucket = next((b for b in (60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400) if span / b <= points),
                  30 * 86400)
    start = first - first % bucket
    data = {b: (n, e, s) for b, n, e, s in db.execute(
        "SELECT CAST((ts - ?) / ? AS INTEGER), count(*), count(*) - sum(ok), "
        "sum(coalesce(cost_micro, 0) + waste_micro) FROM r GROUP BY 1", (start, bucket))}
    count = int((last - start) // bucket) + 1
    return {
        "bucket_s": bucket,
        "t": [start + i * bucket for i in range(count)],
        "requests": [data.get(i, (0, 0, 0))[0] for i in range(count)],
        "errors": [data.get(i, (0, 0, 0))[1] for i in range(count)],
        "spend_micro": [data.get(i, (0, 0, 0))[2] for i in range(count)],
    }


def _second_half(db: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], dict[str, Any]]:
    fingerprints = db.execute(
        "SELECT fingerprint, sum(coalesce(cost_micro, 0) + waste_micro), count(*) FROM r GROUP BY fingerprint"
    ).fetchall()
    return fingerprints, _series(db)


def _latency_and_best(samples: Samples, cube: Cube) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    lat, ttft, typed = samples
    latency_rows = []
    for provider, values in sorted(lat.items()):
        firsts = ttft.get(provider, [])
        latency_rows.append({
            "provider": provider, "n": len(values),
            **{f"p{round(p * 100)}_ms": percentile(values, p) for p in (0.5, 0.9, 0.95, 0.99)},
            "ttft_p50_ms": percentile(firsts, 0.5), "ttft_p99_ms": percentile(firsts, 0.99),
        })
    by_type = {tuple(k.split("\x1f")): {p: percentile(v, p) for p in (0.5, 0.95)} for k, v in typed.items()}
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (qtype, model), (n, good, scores, score_sum) in _rollup_pairs(cube).items():
        p = by_type.get((qtype, model), {})
        groups[qtype].append({"model": model, "requests": n, "error_rate": (n - good) / n,
                              "p50_ms": p.get(0.5), "p95_ms": p.get(0.95),
                              "quality": score_sum / scores if scores else None, "scores": scores})
    best = []
    for qtype, models in sorted(groups.items()):
        models.sort(key=lambda m: (-m["requests"], m["model"]))
        eligible = [m for m in models if m["requests"] >= MIN_REQUESTS_FOR_BEST]
        scored = [m for m in eligible if m["scores"] >= MIN_REQUESTS_FOR_BEST // 2]
        winner, by = None, None
        if scored:
            winner = max(scored, key=lambda m: (m["quality"], -m["error_rate"], -(m["p50_ms"] or math.inf)))
            by = "quality"
        elif eligible:
            winner = min(eligible, key=lambda m: (round(m["error_rate"], 3), m["p50_ms"] or math.inf))
            by = "error rate, then latency"
        best.append({"query_type": qtype, "requests": sum(m["requests"] for m in models), "models": models,
                     "best": winner["model"] if winner else None, "by": by})
    best.sort(key=lambda b: (-b["requests"], b["query_type"]))
    return latency_rows, best


def _rollup_pairs(cube: Cube) -> dict[tuple[str, str], list[Any]]:
    out: dict[tuple[str, str], list[Any]] = {}
    for g in cube:
        acc = out.setdefault((g["qtype"], g["model"]), [0, 0, 0, 0.0])
        acc[0] += g["n"]
        acc[1] += g["ok"]
        acc[2] += g["scores"]
        acc[3] += g["score_sum"]
    return out


def _readiness(db: sqlite3.Connection, config: Config | None, served: set[str]) -> dict[str, Any]:
    times: dict[str, list[float]] = defaultdict(list)
    for provider, ms in db.execute("SELECT failover_from, failover_ms FROM r WHERE failover_ms IS NOT NULL"):
        times[provider or NONE].append(ms)
    outcomes = {p or NONE: (n, ok) for p, n, ok in db.execute(
        "SELECT failover_from, count(*), sum(ok) FROM r WHERE failover_from IS NOT NULL GROUP BY 1")}
    coverage = fallback_coverage(config) if config is not None else {}
    providers = sorted(set(times) | set(outcomes) | served | set(coverage))
    out = []
    for p in providers:
        values = sorted(times.get(p, []))
        failed_over, recovered = outcomes.get(p, (0, 0))
        cover = coverage.get(p)
        p99 = percentile(values, 0.99)
        uncovered = sorted(m for m, ok in cover.items() if not ok) if cover is not None else None
        ready = None if cover is None else (not uncovered and (p99 is None or p99 <= FAILOVER_TARGET_MS))
        out.append({
            "provider": p, "failovers": len(values), "first_failures": failed_over,
            "unrecovered": failed_over - recovered,
            "p50_ms": percentile(values, 0.5), "p99_ms": p99, "max_ms": values[-1] if values else None,
            "models": sorted(cover) if cover is not None else None,
            "models_without_fallback": uncovered, "ready": ready,
        })
    return {"config": config is not None, "target_ms": FAILOVER_TARGET_MS, "providers": out}


def fallback_coverage(config: Config) -> dict[str, dict[str, bool]]:
    """provider -> {model with a deployment on it: can its requests reach another provider?}
    Another provider is reached through the model's own pool or any model in its fallback chain."""
    provider_of = {d.name: d.provider for d in config.deployments}
    models = {m.name: m for m in config.models}

    def reachable(name: str) -> set[str]:
        seen, stack, providers = set(), [name], set()
        while stack:
            m = models.get(stack.pop())
            if m is None or m.name in seen:
                continue
            seen.add(m.name)
            providers |= {provider_of[d] for d in m.deployments if d in provider_of}
            stack.extend(m.fallbacks)
        return providers

    out: dict[str, dict[str, bool]] = defaultdict(dict)
    for m in config.models:
        everything = reachable(m.name)
        for p in {provider_of[d] for d in m.deployments if d in provider_of}:
            out[p][m.name] = bool(everything - {p})
    return dict(out)
