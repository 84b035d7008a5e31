"""Fit a complexity model on labelled prompts and write it as the JSON file `complexity.py` loads.

Training needs numpy (`pip install modelplex[train]`); the gateway never imports this module.
Every hyperparameter setting of the grid is fit on the train rows only and the one with the best
mean dev APGR is kept (no refit on dev, no re-splitting of the data files). The dev scores of the
kept model, computed by the same pure-Python scorer the gateway runs, become the file's score
quantiles and quality curve, from which thresholds are calibrated.

    python -m modelplex.routing.complexity_train \\
        --train b1_train.jsonl --dev b1_dev.jsonl --out complexity_model.json

Retraining from the request log: export rows in the format `complexity_data` documents and pass
them as --train; give a separate --dev export, or --holdout 0.2 to hold out a keyed-hash share of
the log's prompts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelplex.routing.complexity import FORMAT, ComplexityModel, QualityCurve
from modelplex.routing.complexity_data import Row, holdout, read_rows
from modelplex.routing.complexity_eval import build_curve, evaluate, ordering, percentile
from modelplex.routing.complexity_features import N_DENSE, FeatureSpec, featurize

Vector = npt.NDArray[np.float64]
Objective = Callable[[Vector], tuple[float, Vector]]

TARGETS = ("better", "gain")
LAMBDAS = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4)
QUANTILES = 1001
CURVE_POINTS = 101
SIGNIFICANT = 5  # digits kept per weight in the file


@dataclass(frozen=True, slots=True)
class Config:
    """One grid point: what to predict, how hard to regularise, which features."""

    target: str  # "better": logistic on q_premium > q_cheap; "gain": least squares on q_premium - q_cheap
    lam: float  # L2 penalty per row on every weight but the bias
    spec: FeatureSpec

    def label(self) -> str:
        return f"target={self.target} lam={self.lam:g} option_tokens={self.spec.option_tokens}"


@dataclass(frozen=True, slots=True)
class Design:
    """A sparse row-feature matrix as coordinate arrays; products go through np.bincount."""

    rows: npt.NDArray[np.int64]
    cols: npt.NDArray[np.int64]
    vals: Vector
    shape: tuple[int, int]

    @classmethod
    def build(cls, prompts: Sequence[str], spec: FeatureSpec) -> Design:
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for r, prompt in enumerate(prompts):
            features = featurize(prompt, spec)
            rows.extend([r] * len(features))
            cols.extend(features)
            vals.extend(features.values())
        shape = (len(prompts), N_DENSE + (1 << spec.hash_bits))
        return cls(np.array(rows, np.int64), np.array(cols, np.int64), np.array(vals), shape)

    def dot(self, w: Vector) -> Vector:
        out = np.bincount(self.rows, self.vals * w[self.cols], minlength=self.shape[0])
        return out.astype(np.float64, copy=False)

    def tdot(self, g: Vector) -> Vector:
        out = np.bincount(self.cols, self.vals * g[self.rows], minlength=self.shape[1])
        return out.astype(np.float64, copy=False)


def lbfgs(objective: Objective, x0: Vector, max_iter: int = 1000, memory: int = 10) -> Vector:
    """Minimise a smooth convex objective: L-BFGS directions with Armijo backtracking."""
    x = x0.copy()
    f, g = objective(x)
    history: list[tuple[Vector, Vector, float]] = []
    for _ in range(max_iter):
        q = g.copy()
        alphas: list[float] = []
        for s, y, rho in reversed(history):
            alphas.append(rho * float(s @ q))
            q -= alphas[-1] * y
        if history:
            s, y, _ = history[-1]
            q *= float(s @ y) / float(y @ y)
        for (s, y, rho), alpha in zip(history, reversed(alphas), strict=True):
            q += s * (alpha - rho * float(y @ q))
        slope = -float(g @ q)
        if slope >= 0:  # not a descent direction: restart from steepest descent
            history.clear()
            q, slope = g.copy(), -float(g @ g)
        step = 1.0 if history else 1.0 / max(1.0, float(np.abs(g).max()))
        while True:
            x_new = x - step * q
            f_new, g_new = objective(x_new)
            if f_new <= f + 1e-4 * step * slope or step < 1e-12:
                break
            step *= 0.5
        s, y = x_new - x, g_new - g
        if float(s @ y) > 1e-12:
            history = [*history[-(memory - 1) :], (s, y, 1.0 / float(s @ y))]
        converged = abs(f - f_new) <= 1e-10 * max(1.0, abs(f)) or float(np.abs(g_new).max()) < 1e-7
        x, f, g = x_new, f_new, g_new
        if converged:
            break
    return x


def _objective(design: Design, y: Vector, lam: float, logistic: bool) -> Objective:
    n = design.shape[0]

    def objective(params: Vector) -> tuple[float, Vector]:
        bias, w = params[0], params[1:]
        z = design.dot(w) + bias
        if logistic:
            loss = float(np.sum(np.logaddexp(0.0, z) - y * z)) / n
            residual = 1.0 / (1.0 + np.exp(-z)) - y
        else:
            residual = z - y
            loss = 0.5 * float(residual @ residual) / n
        grad = np.concatenate([[residual.sum() / n], design.tdot(residual) / n + lam * w])
        return loss + 0.5 * lam * float(w @ w), grad

    return objective


def fit(design: Design, rows: Sequence[Row], config: Config) -> tuple[str, float, list[float]]:
    """(link, bias, weights) of one config fit on `rows`."""
    q_cheap = np.array([r.q_cheap for r in rows])
    q_premium = np.array([r.q_premium for r in rows])
    logistic = config.target == "better"
    y = (q_premium > q_cheap).astype(np.float64) if logistic else q_premium - q_cheap
    params = lbfgs(_objective(design, y, config.lam, logistic), np.zeros(design.shape[1] + 1))
    rounded = [float(f"{p:.{SIGNIFICANT}g}") for p in params]
    return ("logistic" if logistic else "identity"), rounded[0], rounded[1:]


def calibration(scores: Sequence[float], rows: Sequence[Row]) -> tuple[list[float], QualityCurve]:
    """Score quantiles and the quality-versus-share curve of the dev set."""
    quantiles = [percentile(scores, 100.0 * k / (QUANTILES - 1)) for k in range(QUANTILES)]
    curve = build_curve(ordering(scores), rows)
    grid = [k / (CURVE_POINTS - 1) for k in range(CURVE_POINTS)]
    gains = [float(np.interp(f, curve.shares, curve.gains)) for f in grid]
    quality = [round((curve.q_cheap + g) / curve.q_premium, 6) for g in gains]
    return quantiles, QualityCurve(grid, quality, curve.q_cheap, curve.q_premium)


@dataclass(frozen=True, slots=True)
class Candidate:
    config: Config
    model: ComplexityModel
    dev_apgr: dict[str, float]

    @property
    def mean_apgr(self) -> float:
        return sum(self.dev_apgr.values()) / len(self.dev_apgr)


def candidate(config: Config, train: Sequence[Row], design: Design, dev: dict[str, list[Row]]) -> Candidate:
    link, bias, weights = fit(design, train, config)
    placeholder = QualityCurve([0.0, 1.0], [0.0, 1.0], 0.0, 1.0)
    model = ComplexityModel(config.spec, link, bias, weights, [0.0, 1.0], placeholder)
    apgr = {name: evaluate([model.score(r.prompt) for r in rows], rows).apgr for name, rows in dev.items()}
    return Candidate(config, model, apgr)


def train(
    train_rows: Sequence[Row],
    dev: dict[str, list[Row]],
    grid: Sequence[Config],
    log: Callable[[str], None] = lambda _: None,
) -> ComplexityModel:
    """Fit every config, keep the best by mean dev APGR, calibrate it on the pooled dev rows."""
    designs: dict[FeatureSpec, Design] = {}
    best: Candidate | None = None
    results: list[dict[str, Any]] = []
    for config in grid:
        if config.spec not in designs:
            designs[config.spec] = Design.build([r.prompt for r in train_rows], config.spec)
        found = candidate(config, train_rows, designs[config.spec], dev)
        log(f"{config.label()}  dev APGR " + " ".join(f"{k}={v:.4f}" for k, v in found.dev_apgr.items()))
        results.append({"config": config.label(), "dev_apgr": found.dev_apgr})
        if best is None or found.mean_apgr > best.mean_apgr:
            best = found
    if best is None:
        raise ValueError("the hyperparameter grid is empty")
    pooled = [r for rows in dev.values() for r in rows]
    quantiles, curve = calibration([best.model.score(r.prompt) for r in pooled], pooled)
    meta = {"chosen": best.config.label(), "dev_apgr": best.dev_apgr, "grid": results}
    return replace(best.model, quantiles=quantiles, curve=curve, meta=meta)


def make_grid(spec: FeatureSpec, targets: Sequence[str], lambdas: Sequence[float]) -> list[Config]:
    specs = [replace(spec, option_tokens=True), replace(spec, option_tokens=False)]
    return [Config(t, lam, s) for s in specs for t in targets for lam in lambdas]


def write_model(model: ComplexityModel, path: Path) -> None:
    obj = model.to_json()
    if obj["format"] != FORMAT:
        raise AssertionError("unexpected format")
    path.write_text(json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", action="append", required=True, help="labelled JSONL; repeatable")
    split = parser.add_mutually_exclusive_group(required=True)
    split.add_argument("--dev", action="append", help="labelled dev JSONL; repeatable")
    split.add_argument("--holdout", type=float, help="hold out this share of the train rows' prompts")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", default="", help="recorded in the file, e.g. the model pair")
    parser.add_argument("--hash-bits", type=int, default=16)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--lambdas", default=",".join(f"{x:g}" for x in LAMBDAS))
    args = parser.parse_args(argv)
    rows = [row for path in args.train for row in read_rows(path)]
    if args.holdout is not None:
        rows, held = holdout(rows, args.holdout)
        dev = {"holdout": held}
    else:
        dev = {Path(path).stem: read_rows(path) for path in args.dev}
    targets = [t for t in args.targets.split(",") if t]
    if unknown := set(targets) - set(TARGETS):
        parser.error(f"unknown targets {sorted(unknown)}; choose from {TARGETS}")
    grid = make_grid(
        FeatureSpec(hash_bits=args.hash_bits), targets, [float(x) for x in args.lambdas.split(",")]
    )
    model = train(rows, dev, grid, log=lambda line: print(line, file=sys.stderr, flush=True))
    sources = {"train": [Path(p).name for p in args.train], "dev": list(dev), "train_rows": len(rows)}
    model = replace(model, meta={"name": args.name, **sources, **model.meta})
    write_model(model, args.out)
    print(f"wrote {args.out}: {model.meta['chosen']}, dev APGR {model.meta['dev_apgr']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
