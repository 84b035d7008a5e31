"""Routing-quality metrics of /work/shared/data/routing/README.md: APGR, CPT, prem@95, cost saving.

A router scores prompts (higher = premium); sending the top-k to premium gives the quality curve
Q(k). Ties are broken in expectation (a group of equal scores contributes its mean gain), so the
curve is piecewise linear between group boundaries and every metric is read off it exactly.
Confidence intervals come from row bootstraps shared by all routers, so differences are paired.
Pure Python, so the tests need no numerical libraries.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from itertools import accumulate
from operator import mul
from pathlib import Path

from modelplex.routing.complexity_data import Row, read_rows

DEFAULT_PRICE_RATIO = 0.05
DEFAULT_RESAMPLES = 200
DEFAULT_SEED = 0
TOLERANCE = 1e-9


@dataclass(frozen=True, slots=True)
class Metrics:
    apgr: float
    cpt50: float
    cpt80: float
    prem95: float  # premium share needed for 95 % of always-premium quality
    saving: float  # cost saving at prem95 versus always-premium


@dataclass(frozen=True, slots=True)
class Curve:
    """Cumulative premium share and quality gain at each tie-group boundary, starting at (0, 0)."""

    shares: list[float]
    gains: list[float]  # Q(f) - Q_c
    q_cheap: float
    q_premium: float


@dataclass(frozen=True, slots=True)
class Ordering:
    """A router's row indices in descending score order, cut into groups of equal scores."""

    order: list[int]
    ends: list[int]  # each group's end position in `order` (exclusive)


def ordering(scores: Sequence[float]) -> Ordering:
    order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
    ends = [k for k in range(1, len(order)) if scores[order[k]] != scores[order[k - 1]]]
    return Ordering(order, [*ends, len(order)])


def _curve(
    o: Ordering, weight: Sequence[int], weighted_delta: Sequence[float]
) -> tuple[list[float], list[float]]:
    n = sum(weight)
    taken = list(accumulate([weight[i] for i in o.order]))
    gained = list(accumulate([weighted_delta[i] for i in o.order]))
    return [0.0, *(taken[e - 1] / n for e in o.ends)], [0.0, *(gained[e - 1] / n for e in o.ends)]


def build_curve(o: Ordering, rows: Sequence[Row], counts: Sequence[int] | None = None) -> Curve:
    """The Q(f) curve; `counts` (bootstrap multiplicities) weight the rows, default one each."""
    weight = counts if counts is not None else [1] * len(rows)
    n = sum(weight)
    shares, gains = _curve(o, weight, [w * r.delta for w, r in zip(weight, rows, strict=True)])
    q_cheap = sum(w * row.q_cheap for w, row in zip(weight, rows, strict=True)) / n
    q_premium = sum(w * row.q_premium for w, row in zip(weight, rows, strict=True)) / n
    return Curve(shares, gains, q_cheap, q_premium)


def first_share(shares: Sequence[float], values: Sequence[float], target: float) -> float:
    """Smallest share at which the piecewise-linear curve reaches `target` (1.0 if it never does).

    A point that equals the target in exact arithmetic can land a rounding error below it (a PGR
    of 0.49999999999999967 for 1/2), so reaching means coming within TOLERANCE.
    """
    reach = target - TOLERANCE
    if values[0] >= reach:
        return shares[0]
    for k in range(1, len(values)):
        if values[k] >= reach:
            f0, f1, v0, v1 = shares[k - 1], shares[k], values[k - 1], values[k]
            return f0 + min(1.0, (target - v0) / (v1 - v0)) * (f1 - f0)
    return 1.0


def curve_metrics(curve: Curve, price_ratio: float = DEFAULT_PRICE_RATIO) -> Metrics:
    gap = curve.q_premium - curve.q_cheap
    if gap <= 0:
        raise ValueError("the premium model is not better than the cheap one on these rows")
    pgr = [g / gap for g in curve.gains]
    s = curve.shares
    apgr = sum((s[k] - s[k - 1]) * (pgr[k] + pgr[k - 1]) / 2 for k in range(1, len(s)))
    floor = 0.95 * curve.q_premium - curve.q_cheap
    prem95 = 0.0 if floor <= 0 else first_share(s, curve.gains, floor)
    return Metrics(
        apgr=apgr,
        cpt50=first_share(s, pgr, 0.5),
        cpt80=first_share(s, pgr, 0.8),
        prem95=prem95,
        saving=saving(prem95, price_ratio),
    )


def saving(share: float, price_ratio: float) -> float:
    return 1.0 - (share + (1.0 - share) * price_ratio)


def random_metrics(q_cheap: float, q_premium: float, price_ratio: float = DEFAULT_PRICE_RATIO) -> Metrics:
    """The random router, analytically: Q(f) is the straight line from Q_c to Q_p."""
    prem95 = max(0.0, (0.95 * q_premium - q_cheap) / (q_premium - q_cheap))
    return Metrics(0.5, 0.5, 0.8, prem95, saving(prem95, price_ratio))


def evaluate(
    scores: Sequence[float], rows: Sequence[Row], price_ratio: float = DEFAULT_PRICE_RATIO
) -> Metrics:
    if len(scores) != len(rows):
        raise ValueError(f"{len(scores)} scores for {len(rows)} rows")
    return curve_metrics(build_curve(ordering(scores), rows), price_ratio)


def length_scores(rows: Sequence[Row]) -> list[float]:
    return [float(len(row.prompt)) for row in rows]


def oracle_scores(rows: Sequence[Row]) -> list[float]:
    return [row.delta for row in rows]


def bootstrap(
    rows: Sequence[Row],
    routers: Mapping[str, Sequence[float]],
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    price_ratio: float = DEFAULT_PRICE_RATIO,
) -> dict[str, list[Metrics]]:
    """Metrics of every router (and "random") on the same `resamples` row resamples."""
    orderings = {name: ordering(scores) for name, scores in routers.items()}
    rng = random.Random(seed)
    n = len(rows)
    q_cheap = [r.q_cheap for r in rows]
    q_premium = [r.q_premium for r in rows]
    deltas = [r.delta for r in rows]
    out: dict[str, list[Metrics]] = {name: [] for name in [*routers, "random"]}
    for _ in range(resamples):
        counts = [0] * n
        for i in rng.choices(range(n), k=n):
            counts[i] += 1
        weighted_delta = list(map(mul, counts, deltas))
        qc = sum(map(mul, counts, q_cheap)) / n
        qp = sum(map(mul, counts, q_premium)) / n
        for name, o in orderings.items():
            shares, gains = _curve(o, counts, weighted_delta)
            out[name].append(curve_metrics(Curve(shares, gains, qc, qp), price_ratio))
        out["random"].append(random_metrics(qc, qp, price_ratio))
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation between order statistics (numpy's default)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class Estimate:
    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def estimate(value: float, samples: Sequence[float]) -> Estimate:
    return Estimate(value, percentile(samples, 2.5), percentile(samples, 97.5))


METRIC_NAMES = tuple(f.name for f in fields(Metrics))


@dataclass(frozen=True, slots=True)
class Report:
    """Point values with 95 % bootstrap intervals, per router, plus paired differences."""

    q_cheap: float
    q_premium: float
    routers: dict[str, dict[str, Estimate]]
    differences: dict[str, dict[str, Estimate]]  # "a - b" -> metric -> estimate


def report(
    rows: Sequence[Row],
    routers: Mapping[str, Sequence[float]],
    pairs: Sequence[tuple[str, str]] = (),
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    price_ratio: float = DEFAULT_PRICE_RATIO,
) -> Report:
    """Every router plus random, length and oracle baselines; `pairs` name the differences wanted."""
    everyone = {**routers, "length": length_scores(rows), "oracle": oracle_scores(rows)}
    base = build_curve(ordering([0.0] * len(rows)), rows)
    points = {name: evaluate(scores, rows, price_ratio) for name, scores in everyone.items()}
    points["random"] = random_metrics(base.q_cheap, base.q_premium, price_ratio)
    samples = bootstrap(rows, everyone, resamples, seed, price_ratio)

    def metric(m: Metrics, name: str) -> float:
        return float(getattr(m, name))

    table = {
        name: {k: estimate(metric(point, k), [metric(s, k) for s in samples[name]]) for k in METRIC_NAMES}
        for name, point in points.items()
    }
    diffs: dict[str, dict[str, Estimate]] = {}
    for a, b in pairs:
        diffs[f"{a} - {b}"] = {
            k: estimate(
                metric(points[a], k) - metric(points[b], k),
                [metric(x, k) - metric(y, k) for x, y in zip(samples[a], samples[b], strict=True)],
            )
            for k in METRIC_NAMES
        }
    return Report(base.q_cheap, base.q_premium, table, diffs)


def markdown(title: str, rep: Report) -> str:
    header = "| router | APGR | CPT(50 %) | CPT(80 %) | prem@95 | cost saving at prem@95 |"
    lines = [f"### {title}", "", f"Q_c = {rep.q_cheap:.3f}, Q_p = {rep.q_premium:.3f}", "", header]
    lines.append("|---|---|---|---|---|---|")
    for name, row in [*rep.routers.items(), *rep.differences.items()]:
        lines.append(f"| {name} | " + " | ".join(str(row[k]) for k in METRIC_NAMES) + " |")
    return "\n".join(lines)


def read_scores(path: str | Path) -> dict[str, float]:
    """Scores written by `python -m modelplex.routing.complexity_score`, keyed by id."""
    out: dict[str, float] = {}
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                obj = json.loads(line)
                out[str(obj["id"])] = float(obj["score"])
    return out


def main(argv: Sequence[str] | None = None, scorer: Callable[[str], float] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", action="append", required=True, help="labelled JSONL; repeatable")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="complexity model JSON (default: the shipped one)")
    source.add_argument("--scores", action="append", help="score JSONL per --data, from any router")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--price-ratio", type=float, default=DEFAULT_PRICE_RATIO)
    args = parser.parse_args(argv)
    if args.scores is not None and len(args.scores) != len(args.data):
        parser.error("give one --scores file per --data file")
    if scorer is None and args.scores is None:
        from modelplex.routing.complexity import ComplexityModel

        scorer = ComplexityModel.load(args.model).score
    for k, data in enumerate(args.data):
        rows = read_rows(data)
        if args.scores is not None:
            by_id = read_scores(args.scores[k])
            scores = [by_id[row.id] for row in rows]
        else:
            assert scorer is not None
            scores = [scorer(row.prompt) for row in rows]
        pairs = [("router", "length"), ("router", "random"), ("router", "oracle")]
        rep = report(rows, {"router": scores}, pairs, args.resamples, args.seed, args.price_ratio)
        print(markdown(Path(data).name, rep), end="\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
