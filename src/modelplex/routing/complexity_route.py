"""A route's complexity step: the learned scorer plus the route's threshold, as one decision.

Built once per config load, so the model file is read and the threshold calibrated off the
request path; a decision is then a score and one comparison.
"""

from __future__ import annotations

from collections.abc import Callable

from modelplex.config.schema import Complexity, Config
from modelplex.routing.features import Features

Decide = Callable[[Features], bool]


def _decider(spec: Complexity) -> Decide:
    from modelplex.routing.complexity import ComplexityModel

    model = ComplexityModel.load(spec.model_file)
    if spec.threshold is not None:
        threshold = spec.threshold
    elif spec.premium_share is not None:
        threshold = model.threshold_for_share(spec.premium_share)
    else:
        assert spec.quality_floor is not None  # the config check demands exactly one
        threshold = model.threshold_for_quality(spec.quality_floor)

    def decide(f: Features) -> bool:
        return model.score(f.prompt_text) >= threshold

    return decide


def build_scorers(config: Config) -> dict[str, Decide]:
    return {r.name: _decider(r.complexity) for r in config.routes if r.complexity is not None}
