"""Each simulated provider, parsed by that provider's official SDK.

The simulator and modelplex's adapters are written from the same documentation; pointing the
official SDK at the simulator checks the simulator against the vendor's own reading of the wire
format, so the fake and the adapter cannot share one misunderstanding (DESIGN.md §10).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from helpers import LoopThread, Sims
from modelplex.simulator import content

# The cohere SDK reads pydantic's deprecated `__fields__`; that is its business, not this test's.
pytestmark = pytest.mark.filterwarnings("ignore:The `__fields__` attribute is deprecated")

SYSTEM, USER = "Be brief.", "Explain the simulator"
EXPECTED = "".join(content.answer_tokens(f"{SYSTEM}\n{USER}", 12, None))
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
JSON_SCHEMA: dict[str, Any] = {
    "type": "object", "properties": {"name": {"type": "string"}, "n": {"type": "integer"}}}


@pytest.fixture(scope="module")
def sdk_sims(loop_thread: LoopThread) -> Iterator[Sims]:
    s = Sims(loop_thread)
    for kind in ("gemini", "bedrock", "cohere", "mistral", "azure"):
        s.start(f"sdk-{kind}", kind)
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _fresh(sdk_sims: Sims) -> None:
    for p in sdk_sims.providers.values():
        p.state.reset()
        p.state.models.clear()


def behave(sims: Sims, kind: str, model: str, **settings: Any) -> None:
    state = sims[f"sdk-{kind}"].state
    state.models[model] = state.default.from_mapping(settings)


# --- Gemini: google-genai ---------------------------------------------------------------------


@pytest.fixture
def genai_client(sdk_sims: Sims) -> Any:
    genai = pytest.importorskip("google.genai", reason="google-genai is not installable here")
    from google.genai import types

    return genai.Client(api_key="sim-key",
                        http_options=types.HttpOptions(base_url=sdk_sims["sdk-gemini"].url, api_version="v1beta"))


def test_gemini_chat_and_usage(genai_client: Any, sdk_sims: Sims) -> None:
    from google.genai import types

    behave(sdk_sims, "gemini", "gemini-sim", cached_input_tokens=4, reasoning_tokens=6)
    r = genai_client.models.generate_content(
        model="gemini-sim", contents=USER, config=types.GenerateContentConfig(system_instruction=SYSTEM))
    assert r.text == EXPECTED
    assert r.candidates[0].finish_reason == types.FinishReason.STOP
    u = r.usage_metadata
    assert u.prompt_token_count == content.prompt_tokens([SYSTEM, USER])
    assert (u.candidates_token_count, u.cached_content_token_count, u.thoughts_token_count) == (12, 4, 6)
    [seen] = sdk_sims["sdk-gemini"].state.log
    assert seen.path == "/v1beta/models/gemini-sim:generateContent" and seen.headers["x-goog-api-key"] == "sim-key"


def test_gemini_stream(genai_client: Any) -> None:
    from google.genai import types

    chunks = list(genai_client.models.generate_content_stream(
        model="gemini-sim", contents=USER, config=types.GenerateContentConfig(system_instruction=SYSTEM)))
    assert "".join(c.text or "" for c in chunks) == EXPECTED
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.candidates_token_count == 12


def test_gemini_tools_and_json(genai_client: Any) -> None:
    from google.genai import types

    tool = types.Tool(function_declarations=[types.FunctionDeclaration(
        name="get_weather", description="Weather", parameters_json_schema=WEATHER_SCHEMA)])
    r = genai_client.models.generate_content(
        model="gemini-sim", contents="Weather in Paris?", config=types.GenerateContentConfig(
            tools=[tool], automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True)))
    [call] = r.function_calls
    assert (call.name, call.args) == ("get_weather", {"city": "sample"})
    streamed = [c for c in genai_client.models.generate_content_stream(
        model="gemini-sim", contents="Weather?", config=types.GenerateContentConfig(tools=[tool]))]
    assert [fc.name for c in streamed for fc in c.function_calls or []] == ["get_weather"]
    r = genai_client.models.generate_content(
        model="gemini-sim", contents="JSON please", config=types.GenerateContentConfig(
            response_mime_type="application/json", response_json_schema=JSON_SCHEMA))
    assert json.loads(r.text) == {"name": "sample", "n": 1}


def test_gemini_errors_and_blocks(genai_client: Any, sdk_sims: Sims) -> None:
    from google.genai import errors, types

    behave(sdk_sims, "gemini", "gemini-sim", script=["429", "404", "content_policy"])
    with pytest.raises(errors.ClientError) as exc:
        genai_client.models.generate_content(model="gemini-sim", contents="hi")
    assert (exc.value.code, exc.value.status) == (429, "RESOURCE_EXHAUSTED")
    with pytest.raises(errors.ClientError) as exc:
        genai_client.models.generate_content(model="gemini-sim", contents="hi")
    assert (exc.value.code, exc.value.status) == (404, "NOT_FOUND")
    r = genai_client.models.generate_content(model="gemini-sim", contents="hi")
    assert r.prompt_feedback.block_reason == types.BlockedReason.SAFETY and not r.candidates


def test_gemini_embeddings(genai_client: Any) -> None:
    from google.genai import types

    r = genai_client.models.embed_content(
        model="embed-sim", contents=["a", "b"], config=types.EmbedContentConfig(output_dimensionality=4))
    assert [len(e.values) for e in r.embeddings] == [4, 4]


# --- Bedrock: boto3 bedrock-runtime ------------------------------------------------------------

BEDROCK_MODEL = "anthropic.claude-sim-v1:0"


@pytest.fixture
def bedrock_client(sdk_sims: Sims) -> Any:
    boto3 = pytest.importorskip("boto3", reason="boto3 is not installable here")
    from botocore.config import Config

    return boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=sdk_sims["sdk-bedrock"].url,
                        aws_access_key_id="AKIDSIMULATOR", aws_secret_access_key="sim-secret",
                        config=Config(retries={"total_max_attempts": 1}))


def _converse_args(text: str = USER, **extra: Any) -> dict[str, Any]:
    return {"modelId": BEDROCK_MODEL, "system": [{"text": SYSTEM}],
            "messages": [{"role": "user", "content": [{"text": text}]}], **extra}


def test_bedrock_converse_and_usage(bedrock_client: Any, sdk_sims: Sims) -> None:
    behave(sdk_sims, "bedrock", BEDROCK_MODEL, cached_input_tokens=4, cache_write_tokens=2)
    r = bedrock_client.converse(**_converse_args())
    assert r["output"]["message"]["content"][0]["text"] == EXPECTED and r["stopReason"] == "end_turn"
    total = content.prompt_tokens([SYSTEM, USER])
    assert r["usage"]["inputTokens"] == total - 6 and r["usage"]["outputTokens"] == 12
    assert (r["usage"]["cacheReadInputTokens"], r["usage"]["cacheWriteInputTokens"]) == (4, 2)
    [seen] = sdk_sims["sdk-bedrock"].state.log
    assert seen.model == BEDROCK_MODEL and seen.headers["Authorization"].startswith("AWS4-HMAC-SHA256 ")


def test_bedrock_converse_stream(bedrock_client: Any) -> None:
    events = list(bedrock_client.converse_stream(**_converse_args())["stream"])
    assert list(events[0]) == ["messageStart"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == EXPECTED
    [stop] = [e["messageStop"] for e in events if "messageStop" in e]
    assert stop["stopReason"] == "end_turn"
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 12


def test_bedrock_tools_and_json(bedrock_client: Any) -> None:
    tools = {"tools": [{"toolSpec": {"name": "get_weather", "inputSchema": {"json": WEATHER_SCHEMA}}}]}
    r = bedrock_client.converse(**_converse_args("Weather in Paris?", toolConfig=tools))
    [use] = [b["toolUse"] for b in r["output"]["message"]["content"] if "toolUse" in b]
    assert r["stopReason"] == "tool_use" and (use["name"], use["input"]) == ("get_weather", {"city": "sample"})
    events = list(bedrock_client.converse_stream(**_converse_args("Weather?", toolConfig=tools))["stream"])
    [start] = [e["contentBlockStart"]["start"]["toolUse"] for e in events if "contentBlockStart" in e]
    pieces = [e["contentBlockDelta"]["delta"]["toolUse"]["input"] for e in events if "contentBlockDelta" in e]
    assert start["name"] == "get_weather" and json.loads("".join(pieces)) == {"city": "sample"}
    schema = {"type": "json_schema", "structure": {"jsonSchema": {"schema": json.dumps(JSON_SCHEMA), "name": "x"}}}
    r = bedrock_client.converse(**_converse_args("JSON please", outputConfig={"textFormat": schema}))
    assert json.loads(r["output"]["message"]["content"][0]["text"]) == {"name": "sample", "n": 1}


def test_bedrock_errors(bedrock_client: Any, sdk_sims: Sims) -> None:
    behave(sdk_sims, "bedrock", BEDROCK_MODEL, script=["429", "404", "context_length"])
    with pytest.raises(bedrock_client.exceptions.ThrottlingException):
        bedrock_client.converse(**_converse_args())
    with pytest.raises(bedrock_client.exceptions.ResourceNotFoundException):
        bedrock_client.converse_stream(**_converse_args())
    with pytest.raises(bedrock_client.exceptions.ValidationException) as exc:
        bedrock_client.converse(**_converse_args())
    assert exc.value.response["Error"]["Message"] == "Input is too long for requested model."


# --- Cohere: cohere.ClientV2 --------------------------------------------------------------------


@pytest.fixture
def cohere_client(sdk_sims: Sims) -> Any:
    cohere = pytest.importorskip("cohere", reason="cohere is not installable here")
    return cohere.ClientV2(api_key="sim-key", base_url=sdk_sims["sdk-cohere"].url)


def _cohere_messages(text: str = USER) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def test_cohere_chat_and_usage(cohere_client: Any, sdk_sims: Sims) -> None:
    behave(sdk_sims, "cohere", "command-sim", cached_input_tokens=4)
    r = cohere_client.chat(model="command-sim", messages=_cohere_messages())
    assert r.message.content[0].text == EXPECTED and r.finish_reason == "COMPLETE"
    assert r.usage.billed_units.input_tokens == content.prompt_tokens([SYSTEM, USER])
    assert (r.usage.billed_units.output_tokens, r.usage.cached_tokens) == (12, 4)
    [seen] = sdk_sims["sdk-cohere"].state.log
    assert seen.path == "/v2/chat" and seen.headers["Authorization"] == "Bearer sim-key"


def test_cohere_stream(cohere_client: Any) -> None:
    events = list(cohere_client.chat_stream(model="command-sim", messages=_cohere_messages()))
    assert [e.type for e in events[:2]] == ["message-start", "content-start"]
    assert "".join(e.delta.message.content.text for e in events if e.type == "content-delta") == EXPECTED
    assert events[-1].type == "message-end" and events[-1].delta.finish_reason == "COMPLETE"
    assert events[-1].delta.usage.billed_units.output_tokens == 12


def test_cohere_tools_and_json(cohere_client: Any) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}]
    r = cohere_client.chat(model="command-sim", messages=_cohere_messages("Weather?"), tools=tools)
    [call] = r.message.tool_calls
    assert r.finish_reason == "TOOL_CALL" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "sample"}
    events = list(cohere_client.chat_stream(model="command-sim", messages=_cohere_messages("Weather?"), tools=tools))
    [start] = [e for e in events if e.type == "tool-call-start"]
    args = "".join(e.delta.message.tool_calls.function.arguments for e in events if e.type == "tool-call-delta")
    assert start.delta.message.tool_calls.function.name == "get_weather" and json.loads(args) == {"city": "sample"}
    r = cohere_client.chat(model="command-sim", messages=_cohere_messages("JSON please"),
                           response_format={"type": "json_object", "json_schema": JSON_SCHEMA})
    assert json.loads(r.message.content[0].text) == {"name": "sample", "n": 1}


def test_cohere_errors_and_embed(cohere_client: Any, sdk_sims: Sims) -> None:
    import cohere

    behave(sdk_sims, "cohere", "command-sim", script=["429", "401", "context_length"])
    once = {"max_retries": 0}  # the SDK retries 429 by itself
    with pytest.raises(cohere.TooManyRequestsError):
        cohere_client.chat(model="command-sim", messages=_cohere_messages(), request_options=once)
    with pytest.raises(cohere.UnauthorizedError):
        cohere_client.chat(model="command-sim", messages=_cohere_messages(), request_options=once)
    with pytest.raises(cohere.BadRequestError) as exc:
        cohere_client.chat(model="command-sim", messages=_cohere_messages())
    assert exc.value.body["message"].startswith("too many tokens")
    r = cohere_client.embed(model="embed-sim", texts=["a", "b"], input_type="search_document",
                            embedding_types=["float"])
    assert len(r.embeddings.float_) == 2 and r.meta.billed_units.input_tokens == 2


# --- Mistral: mistralai ------------------------------------------------------------------------


@pytest.fixture
def mistral_client(sdk_sims: Sims) -> Any:
    pytest.importorskip("mistralai.client", reason="mistralai is not installable here")
    from mistralai.client import Mistral

    return Mistral(api_key="sim-key", server_url=sdk_sims["sdk-mistral"].url)


def _mistral_messages(text: str = USER) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


def test_mistral_chat_stream_and_usage(mistral_client: Any, sdk_sims: Sims) -> None:
    behave(sdk_sims, "mistral", "mistral-sim", cached_input_tokens=4)
    r = mistral_client.chat.complete(model="mistral-sim", messages=_mistral_messages(), random_seed=7)
    assert r.choices[0].message.content == EXPECTED and r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (content.prompt_tokens([SYSTEM, USER]), 12)
    assert r.usage.additional_properties["prompt_tokens_details"] == {"cached_tokens": 4}
    events = list(mistral_client.chat.stream(model="mistral-sim", messages=_mistral_messages()))
    assert "".join(e.data.choices[0].delta.content or "" for e in events) == EXPECTED
    assert events[-1].data.choices[0].finish_reason == "stop" and events[-1].data.usage.completion_tokens == 12


def test_mistral_tools_json_and_prefix(mistral_client: Any) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}]
    r = mistral_client.chat.complete(model="mistral-sim", messages=_mistral_messages("Weather?"), tools=tools,
                                     tool_choice="any")
    [call] = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls" and len(call.id) == 9
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "sample"}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": JSON_SCHEMA}}
    r = mistral_client.chat.complete(model="mistral-sim", messages=_mistral_messages("JSON"), response_format=fmt)
    assert json.loads(r.choices[0].message.content) == {"name": "sample", "n": 1}
    prefixed = [*_mistral_messages(), {"role": "assistant", "content": "The", "prefix": True}]
    assert mistral_client.chat.complete(model="mistral-sim", messages=prefixed).choices[0].message.content


def test_mistral_errors_and_embeddings(mistral_client: Any, sdk_sims: Sims) -> None:
    from mistralai.client import errors

    behave(sdk_sims, "mistral", "mistral-sim", script=["404", "429"])
    with pytest.raises(errors.SDKError) as exc:
        mistral_client.chat.complete(model="mistral-sim", messages=_mistral_messages())
    assert exc.value.status_code == 404 and json.loads(exc.value.body)["type"] == "invalid_model"
    with pytest.raises(errors.SDKError) as exc:
        mistral_client.chat.complete(model="mistral-sim", messages=_mistral_messages())
    assert exc.value.status_code == 429
    r = mistral_client.embeddings.create(model="mistral-embed", inputs=["a", "b"])
    assert [d.index for d in r.data] == [0, 1] and r.usage.prompt_tokens == 2


# --- Azure OpenAI: openai.AzureOpenAI (dated api-version) and openai.OpenAI (v1 API) ------------


@pytest.fixture
def azure_clients(sdk_sims: Sims) -> tuple[Any, Any]:
    openai = pytest.importorskip("openai", reason="openai is not installable here")
    url = sdk_sims["sdk-azure"].url
    dated = openai.AzureOpenAI(azure_endpoint=url, api_key="sim-key", api_version="2024-10-21", max_retries=0)
    v1 = openai.OpenAI(base_url=f"{url}/openai/v1/", api_key="sim-key", max_retries=0)
    return dated, v1


def _openai_messages(text: str = USER) -> list[dict[str, Any]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]


@pytest.mark.parametrize("which", ["dated", "v1"])
def test_azure_chat_and_stream(azure_clients: tuple[Any, Any], sdk_sims: Sims, which: str) -> None:
    client = azure_clients[0] if which == "dated" else azure_clients[1]
    r = client.chat.completions.create(model="gpt-sim-deployment", messages=_openai_messages())
    assert r.choices[0].message.content == EXPECTED and r.usage.completion_tokens == 12
    chunks = list(client.chat.completions.create(model="gpt-sim-deployment", messages=_openai_messages(),
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices == [] and chunks[0].model_extra["prompt_filter_results"]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == EXPECTED
    assert chunks[-1].usage.completion_tokens == 12
    seen = sdk_sims["sdk-azure"].state.log[0]
    assert seen.model == "gpt-sim-deployment"
    expected_path = ("/openai/deployments/gpt-sim-deployment/chat/completions" if which == "dated"
                     else "/openai/v1/chat/completions")
    assert seen.path == expected_path


def test_azure_tools_errors_and_embeddings(azure_clients: tuple[Any, Any], sdk_sims: Sims) -> None:
    import openai

    dated, _ = azure_clients
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}]
    r = dated.chat.completions.create(model="gpt-sim", messages=_openai_messages("Weather?"), tools=tools)
    [call] = r.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "sample"}
    behave(sdk_sims, "azure", "gpt-err", script=["content_policy", "429", "404"])
    with pytest.raises(openai.BadRequestError) as exc:
        dated.chat.completions.create(model="gpt-err", messages=_openai_messages())
    assert exc.value.code == "content_filter"
    assert exc.value.body["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    with pytest.raises(openai.RateLimitError):
        dated.chat.completions.create(model="gpt-err", messages=_openai_messages())
    with pytest.raises(openai.NotFoundError) as nf:
        dated.chat.completions.create(model="gpt-err", messages=_openai_messages())
    assert nf.value.code == "DeploymentNotFound"
    e = dated.embeddings.create(model="embed-sim", input=["a", "b"])
    assert [d.index for d in e.data] == [0, 1]
