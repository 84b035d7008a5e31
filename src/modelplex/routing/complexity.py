"""The learned complexity router at request time: score a prompt, compare the score to a threshold.

A model is a linear function of the prompt features in `complexity_features` whose weights load
from a JSON file (a few hundred kB). The score is higher when the premium model is more needed.
The file also holds what the training run saw on its dev set: quantiles of the scores, for a
threshold that sends a target share of calls to premium, and the quality-versus-share curve, for a
threshold that keeps a quality floor. Pure Python: nothing numerical is imported on the hot path.

A model belongs to one (cheap, premium) pair: what the cheap model gets wrong depends on the cheap
model. Two are shipped: `b1` (Llama-3.1-8B-Instruct -> GPT-4o, the default) and `b1b`
(Gemini-1.5-Flash-002 -> Gemini-1.5-Pro-002). `python -m modelplex.routing.complexity_train`
fits one for another pair from its request log.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from dataclasses import dataclass, field
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import Any

from modelplex.routing.complexity_features import N_DENSE, FeatureSpec, featurize

FORMAT = "modelplex-complexity/1"
LINKS = ("identity", "logistic")
SHIPPED = {"b1": "complexity_model.json", "b1b": "complexity_model_b1b.json"}


@dataclass(frozen=True, slots=True)
class QualityCurve:
    """Dev-set quality when the top `shares[k]` of prompts by score go to premium.

    `quality[k]` is that mean quality divided by always-premium quality, so 0.95 means "95 % of
    premium quality"; `q_cheap` and `q_premium` are the absolute always-cheap/always-premium means.
    """

    shares: list[float]
    quality: list[float]
    q_cheap: float
    q_premium: float


@dataclass(frozen=True, slots=True)
class ComplexityModel:
    spec: FeatureSpec
    link: str
    bias: float
    weights: list[float]  # N_DENSE shape features, then 2**hash_bits hashed buckets
    quantiles: list[float]  # ascending dev-set score quantiles at k / (len - 1)
    curve: QualityCurve
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.link not in LINKS:
            raise ValueError(f"unknown link {self.link!r}; expected one of {LINKS}")
        expected = N_DENSE + (1 << self.spec.hash_bits)
        if len(self.weights) != expected:
            raise ValueError(f"{len(self.weights)} weights for a feature space of {expected}")
        if len(self.quantiles) < 2 or any(a > b for a, b in pairwise(self.quantiles)):
            raise ValueError("quantiles must be at least two ascending numbers")

    def score(self, text: str) -> float:
        """Higher = the premium model is more needed. Depends on nothing but `text`."""
        w = self.weights
        z = self.bias + sum(w[i] * v for i, v in featurize(text, self.spec).items())
        if self.link == "logistic":
            return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
        return z

    def threshold_for_share(self, share: float) -> float:
        """The score above which `share` of the calibration prompts go to premium."""
        return Threshold.for_premium_share(self, share).value

    def threshold_for_quality(self, floor: float) -> float:
        """The score threshold keeping `floor` x always-premium quality on the calibration set."""
        return Threshold.for_quality_floor(self, floor).value

    @classmethod
    def load(cls, path: str | Path | None = None) -> ComplexityModel:
        """A model file; None is the shipped default and a key of SHIPPED names a shipped model."""
        if path is None or (isinstance(path, str) and path in SHIPPED):
            name = SHIPPED[path if isinstance(path, str) else "b1"]
            text = resources.files("modelplex.routing").joinpath(name).read_text(encoding="utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
        return cls.from_json(json.loads(text))

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ComplexityModel:
        if obj.get("format") != FORMAT:
            raise ValueError(f"not a complexity model file (format {obj.get('format')!r}, want {FORMAT!r})")
        curve = obj["curve"]
        return cls(
            spec=FeatureSpec.from_json(obj["features"]),
            link=str(obj["link"]),
            bias=float(obj["bias"]),
            weights=[float(w) for w in obj["weights"]],
            quantiles=[float(q) for q in obj["quantiles"]],
            curve=QualityCurve(
                shares=[float(s) for s in curve["shares"]],
                quality=[float(q) for q in curve["quality"]],
                q_cheap=float(curve["q_cheap"]),
                q_premium=float(curve["q_premium"]),
            ),
            meta=dict(obj.get("meta", {})),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "features": self.spec.to_json(),
            "link": self.link,
            "bias": self.bias,
            "quantiles": self.quantiles,
            "curve": {
                "shares": self.curve.shares,
                "quality": self.curve.quality,
                "q_cheap": self.curve.q_cheap,
                "q_premium": self.curve.q_premium,
            },
            "meta": self.meta,
            "weights": self.weights,
        }


def _interpolate(xs: list[float], ys: list[float], x: float) -> float:
    """ys at x on the piecewise-linear curve through (xs, ys); xs ascending."""
    k = bisect_left(xs, x)
    if k == 0:
        return ys[0]
    if k == len(xs):
        return ys[-1]
    x0, x1 = xs[k - 1], xs[k]
    return ys[k - 1] + (ys[k] - ys[k - 1]) * ((x - x0) / (x1 - x0) if x1 > x0 else 1.0)


@dataclass(frozen=True, slots=True)
class Threshold:
    """Send a prompt to premium when its score is at least `value`.

    `premium_share` is the share of dev-set prompts that would go to premium, and
    `expected_quality` their mean quality relative to always-premium; both are estimates from the
    dev set the model was calibrated on, not promises about live traffic.
    """

    value: float
    premium_share: float
    expected_quality: float

    def premium(self, score: float) -> bool:
        return score >= self.value

    @classmethod
    def for_premium_share(cls, model: ComplexityModel, share: float) -> Threshold:
        """The threshold that routes `share` of the calibration prompts to premium."""
        if not 0.0 <= share <= 1.0:
            raise ValueError("the premium share must lie in [0, 1]")
        q = model.quantiles
        if share <= 0.0:
            value = math.inf
        elif share >= 1.0:
            value = -math.inf
        else:
            grid = [k / (len(q) - 1) for k in range(len(q))]
            value = _interpolate(grid, q, 1.0 - share)
        quality = _interpolate(model.curve.shares, model.curve.quality, share)
        return cls(value, share, quality)

    @classmethod
    def for_quality_floor(cls, model: ComplexityModel, floor: float) -> Threshold:
        """The smallest premium share whose dev-set quality reaches `floor` x always-premium quality."""
        c = model.curve
        share = 1.0
        for k, quality in enumerate(c.quality):
            if quality >= floor:
                if k == 0:
                    share = c.shares[0]
                else:
                    q0, q1, f0, f1 = c.quality[k - 1], quality, c.shares[k - 1], c.shares[k]
                    share = f0 + (floor - q0) / (q1 - q0) * (f1 - f0)
                break
        return cls.for_premium_share(model, share)
