"""The new providers end to end: the official openai and anthropic SDKs talk to a real `modelplex serve`
process whose deployments are the simulated Gemini, Bedrock, Cohere, Mistral and Azure OpenAI, all
configured from YAML the way a user would (region and AWS keys, api_version, ...)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from helpers import GATEWAY_KEY, Gateway, LoopThread, Sims, base_config

PROVIDERS = {
    # public model: (provider, simulator kind, base_url suffix, upstream model, extra settings)
    "gm": ("gemini", "gemini", "/v1beta", "gemini-sim", {}),
    "br": ("bedrock", "bedrock", "", "anthropic.claude-sim-v1:0",
           {"region": "us-west-2", "aws_access_key_id": "AKIDSIM", "aws_secret_access_key": "sim-secret"}),
    "co": ("cohere", "cohere", "", "command-sim", {}),
    "mi": ("mistral", "mistral", "/v1", "mistral-sim", {}),
    "az": ("azure", "azure", "", "gpt-sim-deployment", {"api_version": "2024-10-21"}),
}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def provider_gateway(loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Sims]]:
    sims = Sims(loop_thread)
    deployments: list[dict[str, Any]] = []
    for public, (provider, kind, suffix, model, extra) in PROVIDERS.items():
        sim = sims.start(f"gw-{kind}", kind)
        deployment: dict[str, Any] = {"name": f"{public}-dep", "provider": provider, "model": model,
                                      "base_url": sim.url + suffix,
                                      "timeouts": {"connect": 2, "first_token": 5, "idle": 5, "total": 20}, **extra}
        if provider != "bedrock":
            deployment["api_key"] = "sim-upstream-key"
        deployments.append(deployment)
    config = base_config(deployments, [{"name": p, "deployments": [f"{p}-dep"]} for p in PROVIDERS])
    gw = Gateway(config, Path(tmp_path_factory.mktemp("providers")), name="providers")
    yield gw, sims
    gw.stop()
    sims.stop()


def oai(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0)


@pytest.mark.parametrize("model", sorted(PROVIDERS))
def test_openai_sdk_chat_stream_and_tools(provider_gateway: tuple[Gateway, Sims], model: str) -> None:
    gw, sims = provider_gateway
    messages: Any = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
    raw = oai(gw).chat.completions.with_raw_response.create(model=model, messages=messages, max_tokens=50)
    completion = raw.parse()
    assert completion.choices[0].message.content and completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 12
    assert raw.headers["x-modelplex-deployment"] == f"{model}-dep"
    chunks = list(oai(gw).chat.completions.create(model=model, messages=messages, stream=True,
                                                  stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == completion.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12
    call = oai(gw).chat.completions.create(model=model, messages=[{"role": "user", "content": "Weather?"}],
                                           tools=[WEATHER]).choices[0].message.tool_calls
    assert call is not None and json.loads(call[0].function.arguments) == {"city": "sample"}
    kind = PROVIDERS[model][1]
    assert len(sims[f"gw-{kind}"].state.log) == 3


@pytest.mark.parametrize("model", ["gm", "br", "co"])
def test_anthropic_sdk_stream(provider_gateway: tuple[Gateway, Sims], model: str) -> None:
    gw, _ = provider_gateway
    client = anthropic.Anthropic(base_url=gw.url, api_key=GATEWAY_KEY, max_retries=0)
    with client.messages.stream(model=model, max_tokens=50, messages=[{"role": "user", "content": "Hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.stop_reason == "end_turn" and final.usage.output_tokens == 12
