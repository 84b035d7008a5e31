"""Settling money: an answer's cost once, waste apart, nothing counted twice."""

from __future__ import annotations

from modelplex.config.schema import Config, Metering
from modelplex.context import AttemptRecord, RequestContext
from modelplex.errors import StreamInterrupted, UpstreamConnectError
from modelplex.metering.meter import Meter
from modelplex.providers.registry import load_registry
from modelplex.runtime import build_runtime
from modelplex.types import Usage

CONFIG = Config.model_validate({
    "deployments": [{"name": "a", "provider": "openai", "model": "m", "api_key": "k",
                     "price": {"input": 1, "output": 2, "currency": "EUR"}},
                    {"name": "b", "provider": "openai", "model": "m", "api_key": "k",
                     "price": {"input": 1, "output": 2, "currency": "EUR"}}],
    "models": [{"name": "x", "deployments": ["a", "b"]}]})
RT = build_runtime(CONFIG, load_registry())
USAGE = Usage(input_tokens=1000, output_tokens=500)  # 1000 x 1 + 500 x 2 = 2000 micro


def settle(ctx: RequestContext) -> RequestContext:
    Meter(Metering(currency="EUR")).settle(RT, ctx)
    return ctx


def test_success_is_cost_not_waste() -> None:
    ctx = RequestContext(dialect="openai", operation="chat")
    ctx.answered_by, ctx.usage = RT.endpoints["a"], USAGE
    ctx.attempts = [AttemptRecord(deployment="a", provider="openai", model="x", started=0, outcome="ok", usage=USAGE)]
    settle(ctx)
    assert (ctx.cost_micro, ctx.report_cost_micro, ctx.waste_micro) == (2000, 2000, 0)


def test_cut_stream_is_waste_once() -> None:
    ctx = RequestContext(dialect="openai", operation="chat")
    ctx.answered_by, ctx.usage = RT.endpoints["a"], USAGE
    ctx.error = StreamInterrupted("cut", UpstreamConnectError("cut"))
    ctx.attempts = [AttemptRecord(deployment="a", provider="openai", model="x", started=0, outcome="upstream_connect_error",
                                  usage=USAGE)]
    settle(ctx)
    assert ctx.cost_micro is None and ctx.waste_micro == 2000


def test_hedge_loser_is_waste_beside_the_answer() -> None:
    ctx = RequestContext(dialect="openai", operation="chat")
    ctx.answered_by, ctx.usage = RT.endpoints["b"], USAGE
    loser = Usage(input_tokens=1000, estimated=True)
    ctx.attempts = [AttemptRecord(deployment="a", provider="openai", model="x", started=0, outcome="hedge_lost", usage=loser),
                    AttemptRecord(deployment="b", provider="openai", model="x", started=0, outcome="ok", usage=USAGE)]
    settle(ctx)
    assert (ctx.cost_micro, ctx.waste_micro) == (2000, 1000)


def test_unpriced_is_none_never_zero() -> None:
    config = Config.model_validate({"deployments": [{"name": "u", "provider": "openai", "model": "m", "api_key": "k"}],
                                    "models": [{"name": "x", "deployments": ["u"]}]})
    rt = build_runtime(config, load_registry())
    ctx = RequestContext(dialect="openai", operation="chat")
    ctx.answered_by, ctx.usage = rt.endpoints["u"], USAGE
    Meter(Metering()).settle(rt, ctx)
    assert ctx.unpriced and ctx.cost_micro is None and ctx.report_cost_micro is None
