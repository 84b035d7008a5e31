"""The official openai SDK's Responses API (`client.responses`) against a real `modelplex serve`
process, served by simulated OpenAI (`oa`) and Anthropic (`an`) deployments."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, cast

import openai
import pytest
from openai._models import construct_type_unchecked
from openai.types.responses import Response, ResponseFunctionToolCall

from helpers import GATEWAY_KEY, Gateway, Sims, base_config, deployment
from modelplex.context import RequestContext
from modelplex.errors import StreamInterrupted, UpstreamServerError
from modelplex.server.responses_render import ResponsesStreamEncoder
from modelplex.types import ChatRequest, Delta, FinishDelta, Message, Text, TextDelta, ToolCallDelta, Usage

MODELS = ["oa", "an"]  # served by the OpenAI simulator / the Anthropic simulator
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {
        "type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]},
    "strict": None,
}
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}
PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
         "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


@pytest.fixture(scope="module")
def vision_gateway(sims: Sims, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Models `oa` and `an` on deployments that take images."""
    caps = {"context_window": 100000, "vision": True}
    config = base_config(
        [deployment("oa-dep", "openai", sims["openai"], "gpt-sim", capabilities=caps),
         deployment("an-dep", "anthropic", sims["anthropic"], "claude-sim", capabilities=caps)],
        [{"name": "oa", "deployments": ["oa-dep"]}, {"name": "an", "deployments": ["an-dep"]}])
    gw = Gateway(config, tmp_path_factory.mktemp("vision"), name="vision")
    yield gw
    gw.stop()


def oai(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0)


def upstream(sims: Sims, model: str) -> dict[str, Any]:
    """The body the simulated provider behind `model` received last."""
    sim = sims["openai" if model == "oa" else "anthropic"]
    body: dict[str, Any] = json.loads(sim.state.log[-1].body)
    return body


def calls(response: Response) -> list[ResponseFunctionToolCall]:
    return [item for item in response.output if isinstance(item, ResponseFunctionToolCall)]


@pytest.mark.parametrize("model", MODELS)
def test_text(gateway: Gateway, sims: Sims, model: str) -> None:
    raw = oai(gateway).responses.with_raw_response.create(
        model=model, instructions="Be brief.", input="Hello there", max_output_tokens=50, temperature=0.2,
        top_p=0.9, user="u-1", metadata={"task": "demo"})
    response = raw.parse()
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed" and response.error is None
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    assert response.output_text
    assert response.max_output_tokens == 50 and response.temperature == 0.2 and response.top_p == 0.9
    assert response.metadata == {"task": "demo"} and response.user == "u-1"
    usage = response.usage
    assert usage is not None and usage.input_tokens > 0 and usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0
    assert raw.headers["x-modelplex-deployment"] == ("oa-dep" if model == "oa" else "an-dep")
    assert raw.headers["x-modelplex-request-id"] == response.id.removeprefix("resp_")
    sent = upstream(sims, model)
    assert "Be brief." in json.dumps(sent) and "Hello there" in json.dumps(sent)
    assert sent["temperature"] == 0.2 and sent["top_p"] == 0.9
    assert 50 in (sent.get("max_tokens"), sent.get("max_completion_tokens"))


@pytest.mark.parametrize("model", MODELS)
def test_input_items(vision_gateway: Gateway, sims: Sims, model: str) -> None:
    response = oai(vision_gateway).responses.create(model=model, input=[
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": [{"type": "input_text", "text": "What is in this picture?"},
                                     {"type": "input_image", "image_url": PIXEL, "detail": "low"}]},
        {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
         "content": [{"type": "output_text", "text": "Un pixel.", "annotations": []}]},
        {"role": "user", "content": "Which colour?"}])
    assert response.status == "completed" and response.output_text
    sent = json.dumps(upstream(sims, model))
    assert "Answer in French." in sent and "Un pixel." in sent and "Which colour?" in sent
    assert PIXEL.split(",", 1)[1] in sent


@pytest.mark.parametrize("model", MODELS)
def test_stream_event_sequence(gateway: Gateway, model: str) -> None:
    with oai(gateway).responses.stream(model=model, input="Tell me a story") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.delta"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert set(kinds[5:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and final.output_text == text
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == text
    assert final.status == "completed" and final.id == events[0].response.id  # type: ignore[union-attr]
    assert final.usage is not None and final.usage.output_tokens > 0 and final.usage.input_tokens > 0


@pytest.mark.parametrize("model", MODELS)
async def test_async_raw_stream(gateway: Gateway, model: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
    stream = await client.responses.create(model=model, input="hi", stream=True)
    kinds = [event.type async for event in stream]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    await client.close()


@pytest.mark.parametrize("model", MODELS)
def test_tools_roundtrip(gateway: Gateway, sims: Sims, model: str) -> None:
    client = oai(gateway)
    first = client.responses.create(model=model, input="Weather in Paris?", tools=[WEATHER], tool_choice="auto")
    assert first.status == "completed"
    call = calls(first)[0]
    assert call.name == "get_weather" and call.call_id and call.id
    assert "city" in json.loads(call.arguments)
    second = client.responses.create(model=model, tools=[WEATHER], input=[
        {"role": "user", "content": "Weather in Paris?"},
        *first.output,  # type: ignore[list-item]
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'}])
    assert second.status == "completed" and not calls(second)
    assert second.output_text
    sent = json.dumps(upstream(sims, model))
    assert call.call_id in sent and "temp" in sent


@pytest.mark.parametrize("model", MODELS)
def test_stream_tools_roundtrip(gateway: Gateway, model: str) -> None:
    client = oai(gateway)
    with client.responses.stream(model=model, input="Weather in Paris?", tools=[WEATHER]) as stream:
        events = list(stream)
        first = stream.get_final_response()
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds
    assert kinds[-3:] == ["response.function_call_arguments.done", "response.output_item.done",
                          "response.completed"]
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "function_call"
    call = calls(first)[0]
    args = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert args.arguments == call.arguments and "city" in json.loads(call.arguments)
    with client.responses.stream(model=model, tools=[WEATHER], input=[
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "21 degrees"}]) as stream:
        second = stream.get_final_response()
    assert second.output_text and not calls(second)


def test_parallel_calls_are_one_assistant_turn(gateway: Gateway, sims: Sims) -> None:
    """Two function_call items in a row reach OpenAI as one assistant message with two tool calls."""
    oai(gateway).responses.create(model="oa", tools=[WEATHER], input=[
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": '{"city": "Rome"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "21"},
        {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "25"}]}])
    messages = upstream(sims, "oa")["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["call_1", "call_2"]


def test_json_schema(gateway: Gateway) -> None:
    response = oai(gateway).responses.create(model="oa", input="A person", text={"format": {
        "type": "json_schema", "name": "person", "schema": PERSON, "strict": True}})
    assert set(json.loads(response.output_text)) == {"name", "age"}
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"


def test_parse_structured_output(gateway: Gateway) -> None:
    from pydantic import BaseModel

    class Person(BaseModel):
        name: str
        age: int

    response = oai(gateway).responses.parse(model="oa", input="A person", text_format=Person)
    assert isinstance(response.output_parsed, Person)


def test_json_schema_to_anthropic(gateway: Gateway, sims: Sims) -> None:
    """Anthropic has no JSON mode: the schema reaches it as an instruction."""
    response = oai(gateway).responses.create(model="an", input="A person", text={"format": {
        "type": "json_schema", "name": "person", "schema": PERSON}})
    assert response.status == "completed"
    assert '"additionalProperties"' in upstream(sims, "an")["system"]


@pytest.mark.parametrize("model", MODELS)
def test_max_output_tokens_incomplete(gateway: Gateway, model: str) -> None:
    client = oai(gateway)
    response = client.responses.create(model=model, input="Tell me a long story", max_output_tokens=3)
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output[0].status == "incomplete"  # type: ignore[union-attr]
    stream = client.responses.create(model=model, input="Tell me a long story", max_output_tokens=3, stream=True)
    kinds = [e.type for e in stream]
    assert kinds[-1] == "response.incomplete" and "response.completed" not in kinds


def test_passthrough_to_openai_only(gateway: Gateway, sims: Sims) -> None:
    client = oai(gateway)
    client.responses.create(model="oa", input="hi", reasoning={"effort": "low"}, service_tier="auto",
                            store=False, include=[], parallel_tool_calls=False, tools=[WEATHER], tool_choice="none")
    sent = upstream(sims, "oa")
    assert sent["reasoning_effort"] == "low" and sent["service_tier"] == "auto"
    assert sent["parallel_tool_calls"] is False and sent["tool_choice"] == "none"
    client.responses.create(model="an", input="hi", reasoning={"effort": "low"})
    assert "reasoning_effort" not in upstream(sims, "an")


def test_failure_after_commit_ends_with_response_failed(gateway: Gateway, sims: Sims) -> None:
    state = sims["openai"].state
    state.models["gpt-sim"] = state.default.from_mapping({"script": ["cut:3"], "output_tokens": 20})
    try:
        stream = oai(gateway).responses.create(model="oa", input="Tell me a story", stream=True)
        events = list(stream)
    finally:
        state.models.pop("gpt-sim", None)
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and "response.output_text.delta" in kinds
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.status == "failed" and failed.error is not None and failed.error.code == "server_error"
    assert failed.output and failed.output[0].status == "incomplete"  # type: ignore[union-attr]


REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("previous_response_id", {"previous_response_id": "resp_123"}, "previous_response_id"),
    ("conversation", {"conversation": "conv_123"}, "conversation"),
    ("background", {"background": True}, "background"),
    ("prompt template", {"prompt": {"id": "pmpt_1"}}, "prompt"),
    ("truncation auto", {"truncation": "auto"}, "truncation"),
    ("built-in tool", {"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ("allowed_tools choice", {"tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}},
     "tool_choice.type"),
    ("item reference", {"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ("input file", {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]},
     "input[0].content[0].type"),
    ("image by file id", {"input": [{"role": "user", "content": [
        {"type": "input_image", "file_id": "file-1", "detail": "auto"}]}]}, "input[0].content[0].image_url"),
    ("unknown content type", {"input": [{"role": "user", "content": [{"type": "input_video"}]}]},
     "input[0].content[0].type"),
    ("tool output without call id", {"input": [{"type": "function_call_output", "output": "x"}]}, "input[0]"),
    ("json_schema without schema", {"text": {"format": {"type": "json_schema", "name": "x"}}},
     "text.format.schema"),
    ("temperature out of range", {"temperature": 7}, "temperature"),
    ("empty input", {"input": []}, "input"),
    ("no input", {"input": None}, "input"),
    ("only reasoning items", {"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]}, "input"),
]


@pytest.mark.parametrize(("case", "extra", "param"), REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_with_400_naming_the_parameter(gateway: Gateway, case: str, extra: dict[str, Any], param: str) -> None:
    body = {"model": "oa", "input": "hi", **extra}
    with pytest.raises(openai.BadRequestError) as info:
        oai(gateway).responses.create(**body)
    err = info.value
    assert err.status_code == 400 and err.param == param, (err.param, err.message)
    assert err.type == "invalid_request_error"
    assert "Traceback" not in err.message


def test_unknown_parameter(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai(gateway).responses.create(model="oa", input="hi", extra_body={"frobnicate": 1})
    assert info.value.param == "frobnicate" and "frobnicate" in info.value.message


def test_stateless_message_says_why(gateway: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai(gateway).responses.create(model="oa", input="hi", previous_response_id="resp_1")
    assert "stateless" in info.value.message and "input" in info.value.message


def test_unknown_model_is_404(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError):
        oai(gateway).responses.create(model="no-such-model", input="hi")


def _replay(deltas: list[Delta], fail: bool = False) -> tuple[list[Any], Response | None]:
    """Run the stream encoder over `deltas` and feed its events to the SDK's own accumulator (the one
    behind `client.responses.stream`), which checks item identities and event order."""
    from openai.lib.streaming.responses._responses import ResponseStreamState
    from openai.types.responses import ResponseStreamEvent

    request = ChatRequest(model="m", messages=[Message(role="user", content=[Text(text="x")])], stream=True)
    encoder = ResponsesStreamEncoder(request, RequestContext(dialect="responses", operation="chat"), "up")
    raw = encoder.start() + b"".join(encoder.delta(d) for d in deltas)
    if fail:
        raw += encoder.error(StreamInterrupted("The upstream stream was cut.", UpstreamServerError("cut")))
    else:
        raw += encoder.end(Usage(input_tokens=3, output_tokens=5))
    state: Any = ResponseStreamState(input_tools=openai.omit, text_format=openai.omit)
    events: list[Any] = []
    for block in raw.decode().split("\n\n")[:-1]:
        name, data = block.split("\n")
        payload = json.loads(data.removeprefix("data: "))
        assert name == f"event: {payload['type']}"
        events.extend(state.handle_event(construct_type_unchecked(type_=cast(Any, ResponseStreamEvent), value=payload)))
    return events, state._completed_response


MIXED: list[Delta] = [
    TextDelta(text="Let me check."),
    ToolCallDelta(index=0, id="call_1", name="get_weather", arguments='{"city": '),
    ToolCallDelta(index=0, arguments='"Paris"}'),
    ToolCallDelta(index=1, id="call_2", name="get_weather", arguments='{"city": "Rome"}'),
    FinishDelta(reason="tool_calls"),
]


def test_encoder_text_then_parallel_calls() -> None:
    events, final = _replay(MIXED)
    kinds = [e.type for e in events]
    assert kinds.count("response.output_item.added") == kinds.count("response.output_item.done") == 3
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final is not None and final.output_text == "Let me check."
    assert [(c.call_id, json.loads(c.arguments)["city"]) for c in calls(final)] == [("call_1", "Paris"), ("call_2", "Rome")]


def test_encoder_failure_keeps_partial_output_and_never_completes() -> None:
    events, final = _replay(MIXED[:2], fail=True)
    kinds = [e.type for e in events]
    assert final is None and kinds[-1] == "response.failed" and "response.completed" not in kinds
    failed = events[-1].response
    assert failed.error.code == "server_error" and "cut" in failed.error.message
    assert [item.status for item in failed.output] == ["completed", "incomplete"]


def test_encoder_empty_answer_is_one_empty_message() -> None:
    events, final = _replay([FinishDelta(reason="stop")])
    assert final is not None and final.output_text == "" and len(final.output) == 1
