"""One contract suite, run against every provider adapter over real sockets to the simulator.

Each case names a provider adapter and the simulator wire format that plays it. Every adapter must
give the same canonical answers: the same text for the same prompt (the simulator is
deterministic), streams equal to non-streams, tool calls with valid JSON arguments, JSON mode,
usage normalised identically (cached, cache-write and reasoning tokens apart), and each error class.
To add a provider: add a ProviderCase.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import LoopThread, Sims
from modelplex import errors
from modelplex.config.schema import Config, Metering
from modelplex.context import RequestContext
from modelplex.metering.catalog import Catalog, load_catalog
from modelplex.metering.meter import Meter
from modelplex.providers.mistral import tool_call_id as mistral_tool_call_id
from modelplex.providers.registry import load_registry
from modelplex.routing import execute, streams
from modelplex.routing.execute import Policy
from modelplex.routing.features import embedding_features, features
from modelplex.routing.health import Health
from modelplex.routing.plan import Plan, plan
from modelplex.runtime import build_runtime
from modelplex.simulator import content
from modelplex.transport import Transport
from modelplex.types import (
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    FinishDelta,
    Message,
    ResponseFormat,
    Text,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolResult,
    Usage,
    UsageDelta,
)

ERRORS: dict[str, type[errors.UpstreamError]] = {
    "500": errors.UpstreamServerError,
    "503": errors.UpstreamServerError,
    "429": errors.UpstreamRateLimited,
    "401": errors.UpstreamAuthError,
    "403": errors.UpstreamAuthError,
    "404": errors.UpstreamNotFound,
    "400": errors.UpstreamBadRequest,
    "context_length": errors.ContextLengthExceeded,
    "content_policy": errors.ContentPolicyViolation,
}


@dataclass
class ProviderCase:
    provider: str  # modelplex adapter name
    sim_kind: str  # simulator wire format that plays this provider
    base_url: Callable[[str], str]  # simulator URL -> deployment base_url
    model: str = "contract-model"
    extra: dict[str, Any] = field(default_factory=dict)
    # Outcomes whose error class differs from ERRORS for this provider, with the reason.
    errors: dict[str, type[errors.UpstreamError]] = field(default_factory=dict)
    json_mode: bool = True
    embeddings: bool = False
    # Which usage details the wire format can carry apart; the others fold into plain input/output.
    usage: frozenset[str] = frozenset({"cached", "cache_write", "reasoning"})
    # How the adapter rewrites a tool-call id the provider would refuse (Mistral: 9 alphanumerics).
    wire_id: Callable[[str], str] = lambda call_id: call_id
    label: str | None = None  # when one provider has several cases

    @property
    def id(self) -> str:
        return self.label or self.provider

    def usage_shape(self, u: Usage) -> Usage:
        """The canonical usage this provider can report for a response whose true usage is `u`."""
        input_tokens, output_tokens = u.input_tokens, u.output_tokens
        cached, written, reasoning = u.cached_input_tokens, u.cache_write_tokens, u.reasoning_tokens
        if "cached" not in self.usage:
            input_tokens, cached = input_tokens + cached, 0
        if "cache_write" not in self.usage:
            input_tokens, written = input_tokens + written, 0
        if "reasoning" not in self.usage:
            output_tokens, reasoning = output_tokens + reasoning, 0
        return Usage(input_tokens=input_tokens, output_tokens=output_tokens, cached_input_tokens=cached,
                     cache_write_tokens=written, reasoning_tokens=reasoning)


CASES = [
    ProviderCase("openai", "openai", lambda u: f"{u}/v1", embeddings=True),
    ProviderCase("openai_compatible", "openai", lambda u: f"{u}/v1", embeddings=True),
    ProviderCase("groq", "openai", lambda u: f"{u}/v1"),
    ProviderCase("vllm", "openai", lambda u: f"{u}/v1"),
    # Anthropic has no structured code for context length or content policy: both are plain 400s.
    ProviderCase("anthropic", "anthropic", lambda u: u, json_mode=False,
                 errors={"context_length": errors.UpstreamBadRequest, "content_policy": errors.UpstreamBadRequest}),
    # Gemini: an over-long prompt is a plain INVALID_ARGUMENT (no structured reason); a blocked prompt
    # is structured (promptFeedback.blockReason). No field for cache writes: they count as input.
    ProviderCase("gemini", "gemini", lambda u: f"{u}/v1beta", usage=frozenset({"cached", "reasoning"}),
                 errors={"context_length": errors.UpstreamBadRequest}),
    # Bedrock: a too-long prompt and a model's own content filter are both plain ValidationExceptions
    # (guardrails report as stopReason guardrail_intervened, a finish, not an error). Reasoning tokens
    # are counted in outputTokens.
    ProviderCase("bedrock", "bedrock", lambda u: u, model="anthropic.claude-sim-v1:0",
                 extra={"region": "us-east-1", "aws_access_key_id": "AKIDSIMULATOR",
                        "aws_secret_access_key": "sim-secret", "aws_session_token": "sim-session"},
                 usage=frozenset({"cached", "cache_write"}),
                 errors={"context_length": errors.UpstreamBadRequest, "content_policy": errors.UpstreamBadRequest}),
    # Cohere: errors carry no code, only the status; context length and blocked content are plain 400s.
    # Usage reports cached tokens, but no cache writes and no thinking apart from output.
    ProviderCase("cohere", "cohere", lambda u: u, usage=frozenset({"cached"}), embeddings=True,
                 errors={"context_length": errors.UpstreamBadRequest, "content_policy": errors.UpstreamBadRequest}),
    # Mistral: context length and moderation blocks have no structured type (message text only); usage
    # reports cached tokens, thinking inside completion_tokens. Tool-call ids are rewritten to 9 chars.
    ProviderCase("mistral", "mistral", lambda u: f"{u}/v1", usage=frozenset({"cached"}), embeddings=True,
                 wire_id=mistral_tool_call_id,
                 errors={"context_length": errors.UpstreamBadRequest, "content_policy": errors.UpstreamBadRequest}),
    # Azure OpenAI: the deployment path with a dated api-version, and the v1 API.
    ProviderCase("azure", "azure", lambda u: u, embeddings=True, extra={"api_version": "2024-10-21"}),
    ProviderCase("azure", "azure", lambda u: f"{u}/openai/v1", embeddings=True, extra={"api_version": "v1"},
                 label="azure-v1"),
]


@pytest.fixture(scope="module")
def contract_sims(loop_thread: LoopThread) -> Iterator[Sims]:
    s = Sims(loop_thread)
    for kind in sorted({c.sim_kind for c in CASES}):
        s.start(f"contract-{kind}", kind)
    yield s
    s.stop()


@pytest.fixture(scope="module")
async def transport() -> Any:
    t = Transport()
    yield t
    await t.close()


class Harness:
    def __init__(self, case: ProviderCase, sims: Sims, transport: Transport, model: str | None = None,
                 price: dict[str, Any] | None = None, catalog: Catalog | None = None) -> None:
        self.case = case
        self.model = model or case.model
        self.sim = sims[f"contract-{case.sim_kind}"]
        self.sim.state.reset()
        self.sim.state.models.clear()
        self.transport = transport
        dep = {"name": "dep", "provider": case.provider, "model": self.model,
               "base_url": case.base_url(self.sim.url), "api_key": "sim-upstream-key",
               "timeouts": {"connect": 2, "first_token": 3, "idle": 3, "total": 10}, **case.extra}
        if price is not None:
            dep["price"] = price
        config = Config.model_validate({"deployments": [dep], "models": [{"name": "m", "deployments": ["dep"]}],
                                        "routing": {"retry": {"max_attempts_per_deployment": 1}}})
        self.runtime = build_runtime(config, load_registry(), catalog=catalog)
        self.health = Health(config.routing)
        self.policy = Policy(retry=config.routing.retry, hedge=config.routing.hedge, continuation=False, key="m")
        self.rng = random.Random(0)

    def plan(self, request: ChatRequest) -> Plan:
        return plan(self.runtime, self.health, "m", None, features(request, None, "openai", None, None), self.rng, 0.0)

    def behave(self, **settings: Any) -> None:
        self.sim.state.models[self.model] = self.sim.state.default.from_mapping(settings)

    def _ctx(self, stream: bool) -> RequestContext:
        ctx = RequestContext(dialect="test", operation="chat", stream=stream)
        ctx.deadline = ctx.started + 10
        return ctx

    async def chat(self, request: ChatRequest) -> ChatResponse:
        return await execute.complete(self.runtime, self.transport, self.health, self._ctx(stream=False),
                                      self.plan(request), self.policy, request, self.rng)

    async def open(self, request: ChatRequest) -> streams.CommittedStream:
        return await streams.open_stream(self.runtime, self.transport, self.health, self._ctx(stream=True),
                                         self.plan(request), self.policy, request, self.rng)

    async def stream(self, request: ChatRequest) -> tuple[list[Any], streams.CommittedStream]:
        committed = await self.open(request)
        deltas = [d async for d in committed.deltas()]
        committed.close()
        return deltas, committed

    async def error(self, request: ChatRequest) -> errors.UpstreamError:
        with pytest.raises(errors.AllAttemptsFailed) as exc:
            if request.stream:
                await self.stream(request)
            else:
                await self.chat(request)
        return exc.value.failures[0].error


def ask(text: str = "Explain the contract suite", stream: bool = False, **kw: Any) -> ChatRequest:
    return ChatRequest(model="m", stream=stream, messages=[
        Message(role="system", content=[Text(text="Be brief.")]),
        Message(role="user", content=[Text(text=text)])], **kw)


WEATHER = Tool(name="get_weather", description="Weather in a city",
               parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})

pytestmark = pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])


@pytest.fixture
def h(case: ProviderCase, contract_sims: Sims, transport: Transport) -> Harness:
    return Harness(case, contract_sims, transport)


async def test_chat(h: Harness) -> None:
    response = await h.chat(ask())
    [choice] = response.choices
    assert choice.finish_reason == "stop"
    text = choice.message.text()
    expected = "".join(content.answer_tokens("Be brief.\nExplain the contract suite", 12, None))
    assert text == expected
    assert response.usage.output_tokens == 12 and response.usage.input_tokens > 0
    [seen] = h.sim.state.log
    assert seen.model == h.case.model  # the upstream model id, not the public name


async def test_stream_equals_chat(h: Harness) -> None:
    chat = await h.chat(ask())
    deltas, committed = await h.stream(ask(stream=True))
    text = "".join(d.text for d in deltas if isinstance(d, TextDelta))
    assert text == chat.choices[0].message.text()
    assert [d.reason for d in deltas if isinstance(d, FinishDelta)] == ["stop"]
    assert committed.final_usage(ask()) == chat.usage
    assert committed.finished


async def test_usage_shapes_normalise_alike(h: Harness) -> None:
    h.behave(cached_input_tokens=5, cache_write_tokens=3, reasoning_tokens=7)
    prompt = "a prompt long enough to have cached and written parts " * 3
    response = await h.chat(ask(prompt))
    total = content.prompt_tokens(["Be brief.", prompt])
    assert response.usage == h.case.usage_shape(Usage(input_tokens=total - 8, cached_input_tokens=5,
                                                      cache_write_tokens=3, output_tokens=12, reasoning_tokens=7))
    _, committed = await h.stream(ask(prompt, stream=True))
    assert committed.final_usage(ask(prompt)) == response.usage


async def test_max_tokens_length(h: Harness) -> None:
    response = await h.chat(ask(max_tokens=3))
    assert response.choices[0].finish_reason == "length"
    assert response.usage.output_tokens == 3


async def test_tool_call(h: Harness) -> None:
    response = await h.chat(ask("Weather in Paris?", tools=[WEATHER]))
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = [p for p in choice.message.content if isinstance(p, ToolCall)]
    assert call.name == "get_weather" and call.id
    assert json.loads(call.arguments) == {"city": "sample"}
    sent = json.loads(h.sim.state.log[-1].body)
    assert "get_weather" in json.dumps(sent)


async def test_tool_result_roundtrip(h: Harness) -> None:
    request = ChatRequest(model="m", tools=[WEATHER], messages=[
        Message(role="user", content=[Text(text="Weather in Paris?")]),
        Message(role="assistant", content=[ToolCall(id="call_1", name="get_weather", arguments='{"city":"Paris"}')]),
        Message(role="tool", content=[ToolResult(tool_call_id="call_1", content=[Text(text="21 C")])])])
    response = await h.chat(request)
    assert response.choices[0].finish_reason == "stop"
    sent = h.sim.state.log[-1].body.decode()
    assert h.case.wire_id("call_1") in sent and "21 C" in sent


async def test_stream_tool_call(h: Harness) -> None:
    deltas, _ = await h.stream(ask("Weather in Paris?", stream=True, tools=[WEATHER]))
    calls = [d for d in deltas if isinstance(d, ToolCallDelta)]
    assert calls[0].id and calls[0].name == "get_weather"
    assert json.loads("".join(d.arguments for d in calls)) == {"city": "sample"}
    assert [d.reason for d in deltas if isinstance(d, FinishDelta)] == ["tool_calls"]


async def test_json_mode(h: Harness) -> None:
    if not h.case.json_mode:
        pytest.skip(f"{h.case.provider} has no JSON mode on the wire (emulated by instruction; see docs)")
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "n": {"type": "integer"}}}
    response = await h.chat(ask(response_format=ResponseFormat(type="json_schema", name="x", schema=schema)))
    assert json.loads(response.choices[0].message.text()) == {"name": "sample", "n": 1}


@pytest.mark.parametrize("outcome", sorted(ERRORS))
async def test_error_classes(h: Harness, outcome: str) -> None:
    h.behave(script=[outcome])
    err = await h.error(ask())
    expected = h.case.errors.get(outcome, ERRORS[outcome])
    assert type(err) is expected, (outcome, err)
    assert err.message


@pytest.mark.parametrize("header", ["retry-after=3", "retry-after-ms=1500"])
async def test_rate_limit_retry_after(h: Harness, header: str) -> None:
    h.behave(script=[f"429:{header}"])
    err = await h.error(ask())
    assert isinstance(err, errors.UpstreamRateLimited)
    assert err.retry_after == (3.0 if header.startswith("retry-after=") else 1.5)


async def test_stream_error_before_first_token(h: Harness) -> None:
    h.behave(script=["503"])
    err = await h.error(ask(stream=True))
    assert isinstance(err, errors.UpstreamServerError)


async def test_stream_cut_is_an_interruption(h: Harness) -> None:
    h.behave(script=["cut:4"])
    committed = await h.open(ask(stream=True))
    with pytest.raises(errors.StreamInterrupted):
        async for _ in committed.deltas():
            pass
    committed.close()
    assert not committed.finished


async def test_missing_terminator_still_completes(h: Harness) -> None:
    h.behave(script=["no_done"])
    deltas, committed = await h.stream(ask(stream=True))
    assert committed.finished
    assert any(isinstance(d, UsageDelta) for d in deltas)


async def test_embeddings(h: Harness) -> None:
    if not h.case.embeddings:
        pytest.skip(f"{h.case.provider} embeddings are not part of this contract case")
    request = EmbeddingRequest(model="m", inputs=["a", "b"])
    ctx = RequestContext(dialect="test", operation="embeddings")
    ctx.deadline = ctx.started + 10
    p = plan(h.runtime, h.health, "m", None, embedding_features(request, None, "openai"), h.rng, 0.0)
    response = await execute.embed(h.runtime, h.transport, h.health, ctx, p, h.policy, request, h.rng)
    assert [e.index for e in response.data] == [0, 1] and response.usage.input_tokens > 0


# --- cost: usage x catalog price, to the micro-unit ----------------------------------------------

CATALOG_YAML = Path(__file__).resolve().parents[2] / "src/modelplex/metering/catalog.yaml"
KINDS = {"input": "input_tokens", "output": "output_tokens", "cached_input": "cached_input_tokens",
         "cache_write": "cache_write_tokens", "reasoning": "reasoning_tokens"}
DEFAULTS = {"cached_input": "input", "cache_write": "input", "reasoning": "output"}


def catalog_entry(provider: str) -> dict[str, Any] | None:
    entries = yaml.safe_load(CATALOG_YAML.read_text())["entries"]
    mine = [e for e in entries if e["provider"] == provider and str(e["effective_from"]) <= "2026-11-29"]
    return mine[0] if mine else None


def expected_micro(prices: dict[str, Any], usage: Usage) -> int:
    """Independent of modelplex's arithmetic: exact fractions, then half-to-even to micro-units."""
    exact = Fraction(0)
    for kind, field_name in KINDS.items():
        price = prices.get(kind, prices.get(DEFAULTS.get(kind, kind)))
        exact += Fraction(str(price)) * getattr(usage, field_name)
    return round(exact)  # price is per 1M tokens: tokens x price is micro-units exactly; round() is half-even


async def test_cost_is_usage_times_catalog_price(case: ProviderCase, contract_sims: Sims, transport: Transport) -> None:
    entry = catalog_entry(case.provider)
    catalog = load_catalog()
    if entry is not None:  # priced through the shipped catalog, by the provider's own model id
        h = Harness(case, contract_sims, transport, model=entry["model"], catalog=catalog)
        prices = entry["prices"]
    else:  # a provider the catalog does not price: the same catalog prices, set in config
        fallback = catalog_entry("openai")
        assert fallback is not None
        prices = fallback["prices"]
        h = Harness(case, contract_sims, transport, price={**prices, "currency": "USD"}, catalog=catalog)
    assert h.runtime.endpoints["dep"].price is not None
    h.behave(cached_input_tokens=5, cache_write_tokens=3, reasoning_tokens=7)
    response = await h.chat(ask("a prompt long enough to have cached and written parts " * 3))
    ctx = RequestContext(dialect="test", operation="chat")
    ctx.answered_by, ctx.usage = h.runtime.endpoints["dep"], response.usage
    Meter(Metering()).settle(h.runtime, ctx)
    assert ctx.cost_micro == expected_micro(prices, response.usage)
    assert ctx.cost_currency == "USD"
