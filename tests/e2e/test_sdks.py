"""The official openai and anthropic SDKs as clients of a real `modelplex serve` process, served by
simulated OpenAI and Anthropic deployments in all four combinations."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from helpers import GATEWAY_KEY, Gateway, Sims

MODELS = ["oa", "an"]  # served by the OpenAI simulator / the Anthropic simulator
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {
            "type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]},
    },
}
ANTHROPIC_WEATHER = {"name": "get_weather", "description": "Current weather in a city",
                     "input_schema": WEATHER["function"]["parameters"]}


def oai(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0)


def ant(gw: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=GATEWAY_KEY, max_retries=0)


def served_by(sims: Sims, model: str) -> str:
    return "openai" if model == "oa" else "anthropic"


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_chat(gateway: Gateway, sims: Sims, model: str) -> None:
    raw = oai(gateway).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}],
        max_tokens=50, temperature=0.2)
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert raw.headers["x-modelplex-deployment"] == ("oa-dep" if model == "oa" else "an-dep")
    assert raw.headers["x-modelplex-attempts"] == "1"
    assert raw.headers["x-modelplex-request-id"]
    assert float(raw.headers["x-modelplex-overhead-ms"]) >= 0
    seen = sims[served_by(sims, model)].state.log
    assert len(seen) == 1 and "Be brief." in seen[0].body.decode()


@pytest.mark.parametrize("model", MODELS)
async def test_openai_sdk_async_and_stream(gateway: Gateway, model: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
    completion = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Tell me a story"}], stream=True,
        stream_options={"include_usage": True})
    text, finish, usage = "", None, None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text and finish == "stop"
    assert usage is not None and usage.completion_tokens > 0
    await client.close()


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_tools_roundtrip(gateway: Gateway, model: str) -> None:
    client = oai(gateway)
    first = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Weather in Paris?"}],
                                           tools=[WEATHER], tool_choice="auto")
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert "city" in args
    second = client.chat.completions.create(model=model, tools=[WEATHER], messages=[
        {"role": "user", "content": "Weather in Paris?"},
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content


@pytest.mark.parametrize("model", MODELS)
def test_openai_sdk_stream_tool_call_deltas(gateway: Gateway, model: str) -> None:
    stream = oai(gateway).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER], stream=True)
    name, arguments, call_id, finish = "", "", None, None
    for chunk in stream:
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                call_id = tc.id or call_id
                name += (tc.function.name or "") if tc.function else ""
                arguments += (tc.function.arguments or "") if tc.function else ""
            finish = c.finish_reason or finish
    assert name == "get_weather" and call_id and finish == "tool_calls"
    assert "city" in json.loads(arguments)


def test_openai_sdk_json_schema(gateway: Gateway) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    completion = oai(gateway).chat.completions.create(
        model="oa", messages=[{"role": "user", "content": "A person"}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}})
    value = json.loads(completion.choices[0].message.content or "")
    assert set(value) == {"name", "age"}


def test_openai_sdk_parse_structured_output(gateway: Gateway) -> None:
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str
        age: int

    completion = oai(gateway).chat.completions.parse(
        model="oa", messages=[{"role": "user", "content": "A person"}], response_format=Person)
    assert isinstance(completion.choices[0].message.parsed, Person)


def test_openai_sdk_n_and_stop(gateway: Gateway, sims: Sims) -> None:
    completion = oai(gateway).chat.completions.create(
        model="oa", messages=[{"role": "user", "content": "hi"}], n=2, stop=["END"], user="u-1",
        metadata={"task": "demo"})
    assert [c.index for c in completion.choices] == [0, 1]
    sent = json.loads(sims["openai"].state.log[-1].body)
    assert sent["n"] == 2 and sent["stop"] == ["END"] and sent["user"] == "u-1"
    assert sent["model"] == "gpt-sim"


def test_openai_sdk_embeddings_and_models(gateway: Gateway) -> None:
    client = oai(gateway)
    emb = client.embeddings.create(model="embed", input=["one", "two"])
    assert [d.index for d in emb.data] == [0, 1] and len(emb.data[0].embedding) == 8
    assert emb.usage.prompt_tokens > 0
    names = {m.id for m in client.models.list()}
    assert {"oa", "an", "embed"} <= names


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_messages(gateway: Gateway, sims: Sims, model: str) -> None:
    raw = ant(gateway).messages.with_raw_response.create(
        model=model, max_tokens=100, system="You are terse.", messages=[{"role": "user", "content": "Hello"}])
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert raw.headers["x-modelplex-deployment"] == ("oa-dep" if model == "oa" else "an-dep")
    body = sims[served_by(sims, model)].state.log[-1].body.decode()
    assert "You are terse." in body


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_stream_event_sequence(gateway: Gateway, model: str) -> None:
    events = []
    with ant(gateway).messages.stream(model=model, max_tokens=100,
                                      messages=[{"role": "user", "content": "Tell me a story"}]) as stream:
        for event in stream:
            events.append(event.type)
        final = stream.get_final_message()
    kinds = [e for e in events if e in ("message_start", "content_block_start", "content_block_delta",
                                        "content_block_stop", "message_delta", "message_stop")]
    assert kinds[0] == "message_start" and kinds[1] == "content_block_start"
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert "content_block_delta" in kinds
    assert final.content[0].text and final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_tools_roundtrip(gateway: Gateway, model: str) -> None:
    client = ant(gateway)
    first = client.messages.create(model=model, max_tokens=200, tools=[ANTHROPIC_WEATHER],
                                   messages=[{"role": "user", "content": "Weather in Paris?"}])
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "get_weather" and "city" in use.input
    second = client.messages.create(model=model, max_tokens=200, tools=[ANTHROPIC_WEATHER], messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21 degrees"}]}])
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"


@pytest.mark.parametrize("model", MODELS)
def test_anthropic_sdk_stream_tools(gateway: Gateway, model: str) -> None:
    with ant(gateway).messages.stream(model=model, max_tokens=200, tools=[ANTHROPIC_WEATHER],
                                      messages=[{"role": "user", "content": "Weather in Paris?"}]) as stream:
        final = stream.get_final_message()
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.name == "get_weather" and "city" in use.input
    assert final.stop_reason == "tool_use"


def test_anthropic_prompt_caching_usage(gateway: Gateway, sims: Sims) -> None:
    sims["anthropic"].state.models["claude-sim"] = sims["anthropic"].state.default.from_mapping(
        {"cached_input_tokens": 5, "cache_write_tokens": 3})
    try:
        message = ant(gateway).messages.create(model="an", max_tokens=50, messages=[
            {"role": "user", "content": [{"type": "text", "text": "long shared context " * 20,
                                          "cache_control": {"type": "ephemeral"}}]}])
        assert message.usage.cache_read_input_tokens == 5
        assert message.usage.cache_creation_input_tokens == 3
        sent = json.loads(sims["anthropic"].state.log[-1].body)
        assert sent["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
        # The same usage read through the OpenAI dialect: cached tokens inside prompt_tokens.
        completion = oai(gateway).chat.completions.create(
            model="an", messages=[{"role": "user", "content": "a prompt long enough to hold cached tokens"}])
        assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
        assert completion.usage.prompt_tokens_details.cached_tokens == 5
        assert completion.usage.prompt_tokens_details.cache_write_tokens == 3
    finally:
        sims["anthropic"].state.models.pop("claude-sim", None)


def test_anthropic_models_list(gateway: Gateway) -> None:
    page = ant(gateway).models.list()
    assert {m.id for m in page.data} >= {"oa", "an"}
