"""Adapter details of Gemini, Cohere, Mistral and Azure that the contract suite does not reach:
request shapes, structured error mapping, in-stream errors and provider quirks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelplex import errors
from modelplex.config.schema import Deployment
from modelplex.providers.azure import AzureOpenAIAdapter
from modelplex.providers.base import SSEEvent, Target
from modelplex.providers.cohere import CohereAdapter
from modelplex.providers.gemini import SKIP_SIGNATURE, GeminiAdapter
from modelplex.providers.mistral import MistralAdapter, tool_call_id
from modelplex.types import (
    ChatRequest,
    EmbeddingRequest,
    FinishDelta,
    Message,
    ResponseFormat,
    Text,
    TextDelta,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
    UsageDelta,
)

WEATHER = Tool(name="get_weather", parameters={"type": "object", "properties": {"city": {"type": "string"}}})
TOOL_HISTORY = [
    Message(role="system", content=[Text(text="sys")]),
    Message(role="user", content=[Text(text="Weather in Paris and Rome?")]),
    Message(role="assistant", content=[ToolCall(id="call_a", name="get_weather", arguments='{"city":"Paris"}'),
                                       ToolCall(id="call_b", name="get_weather", arguments='{"city":"Rome"}')]),
    Message(role="tool", content=[ToolResult(tool_call_id="call_a", content=[Text(text="21 C")])]),
    Message(role="tool", content=[ToolResult(tool_call_id="call_b", content=[Text(text="boom")], is_error=True)]),
]


def target(adapter: Any, **values: Any) -> Target:
    d = Deployment.model_validate({"name": "d", "provider": adapter.name, "model": "m", "api_key": "k", **values})
    return adapter.prepare(d)  # type: ignore[no-any-return]


def sse(payload: dict[str, Any] | str, event: str | None = None) -> SSEEvent:
    return SSEEvent(event, payload if isinstance(payload, str) else json.dumps(payload))


# --- Gemini ------------------------------------------------------------------------------------


def test_gemini_request_shape() -> None:
    a = GeminiAdapter()
    t = target(a, model="gemini-2.5-flash")
    r = ChatRequest(model="x", messages=TOOL_HISTORY, tools=[WEATHER], n=2, max_tokens=9,
                    tool_choice=ToolChoice(mode="tool", name="get_weather"),
                    response_format=ResponseFormat(type="json_schema", schema={"type": "object"}))
    up = a.chat_request(r, t)
    assert up.url == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    assert up.headers["x-goog-api-key"] == "k"
    body = json.loads(up.body)
    assert body["systemInstruction"] == {"parts": [{"text": "sys"}]}
    model_turn, results = body["contents"][1], body["contents"][2]
    # Only the first call of a step carries the signature; ids from elsewhere are passed through.
    assert [p.get("thoughtSignature") for p in model_turn["parts"]] == [SKIP_SIGNATURE, None]
    assert model_turn["parts"][0]["functionCall"] == {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_a"}
    # Both results join one user turn, named after the call they answer.
    assert results["role"] == "user" and [p["functionResponse"]["name"] for p in results["parts"]] == ["get_weather"] * 2
    assert results["parts"][1]["functionResponse"]["response"] == {"error": "boom"}
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}
    assert body["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"] == WEATHER.parameters
    assert body["generationConfig"] == {"maxOutputTokens": 9, "candidateCount": 2,
                                        "responseMimeType": "application/json",
                                        "responseJsonSchema": {"type": "object"}}
    stream = a.chat_request(ChatRequest(model="x", stream=True, messages=TOOL_HISTORY[:2]), target(a, model="tunedModels/t"))
    assert stream.url.endswith("/tunedModels/t:streamGenerateContent?alt=sse")


def test_gemini_response_ids_thoughts_and_finish() -> None:
    a = GeminiAdapter()
    body = {"candidates": [{"content": {"role": "model", "parts": [
        {"text": "thinking...", "thought": True}, {"text": "Hi"},
        {"functionCall": {"name": "f", "args": {"x": 1}}}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": 10, "cachedContentTokenCount": 4, "candidatesTokenCount": 3,
                          "thoughtsTokenCount": 5, "toolUsePromptTokenCount": 2},
        "responseId": "r1", "modelVersion": "gemini-x-001"}
    resp = a.chat_response(json.dumps(body).encode(), target(a))
    [choice] = resp.choices
    assert choice.message.text() == "Hi" and choice.finish_reason == "tool_calls"
    [call] = [p for p in choice.message.content if isinstance(p, ToolCall)]
    assert call.id.startswith("gmcall_") and call.arguments == '{"x":1}'
    assert (resp.usage.input_tokens, resp.usage.cached_input_tokens, resp.usage.output_tokens,
            resp.usage.reasoning_tokens) == (8, 4, 3, 5)
    # A made-up id never goes back to Gemini as an `id`.
    replay = a.chat_body(ChatRequest(model="x", messages=[Message(role="assistant", content=[call])]), target(a))
    assert "id" not in replay["contents"][0]["parts"][0]["functionCall"]
    body["candidates"][0]["finishReason"] = "SAFETY"
    body["candidates"][0]["content"]["parts"] = [{"text": "partial"}]
    assert a.chat_response(json.dumps(body).encode(), target(a)).choices[0].finish_reason == "content_filter"


def test_gemini_errors() -> None:
    a = GeminiAdapter()

    def err(status: int, rpc: str, **extra: Any) -> errors.UpstreamError:
        return a.error(status, {}, json.dumps({"error": {"code": status, "message": "m", "status": rpc, **extra}}).encode())

    bad_key = [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}]
    assert type(err(400, "INVALID_ARGUMENT", details=bad_key)) is errors.UpstreamAuthError
    assert type(err(400, "INVALID_ARGUMENT")) is errors.UpstreamBadRequest
    assert type(err(400, "FAILED_PRECONDITION")) is errors.UpstreamAuthError
    retry = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}]
    limited = err(429, "RESOURCE_EXHAUSTED", details=retry)
    assert type(limited) is errors.UpstreamRateLimited and limited.retry_after == 17.0
    assert type(err(503, "UNAVAILABLE")) is errors.UpstreamServerError
    assert type(err(404, "NOT_FOUND")) is errors.UpstreamNotFound
    blocked = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 3}}
    with pytest.raises(errors.ContentPolicyViolation):
        a.chat_response(json.dumps(blocked).encode(), target(a))


def test_gemini_stream_parser() -> None:
    a = GeminiAdapter()
    p = a.stream_parser(ChatRequest(model="x", messages=[]), target(a))
    running = {"promptTokenCount": 7, "totalTokenCount": 7}
    chunk = {"candidates": [{"content": {"parts": [{"text": "Hel"}]}, "index": 0}], "usageMetadata": running}
    assert p.feed(sse(chunk)) == [TextDelta(text="Hel")]  # running usage is not reported yet
    with pytest.raises(errors.UpstreamMalformed):
        p.end()
    final = {"candidates": [{"content": {"parts": [{"text": "lo"}]}, "finishReason": "MAX_TOKENS", "index": 0}],
             "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 2}}
    text, finish, usage = p.feed(sse(final))
    assert finish == FinishDelta(reason="length") and isinstance(usage, UsageDelta) and usage.usage.output_tokens == 2
    assert p.end() == []
    with pytest.raises(errors.UpstreamServerError):
        p.feed(sse({"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}}))
    with pytest.raises(errors.ContentPolicyViolation):
        p.feed(sse({"promptFeedback": {"blockReason": "SAFETY"}}))
    with pytest.raises(errors.SkippedEvent):
        p.feed(sse('{"candidates": ['))


def test_gemini_embeddings() -> None:
    a = GeminiAdapter()
    up = a.embeddings_request(EmbeddingRequest(model="e", inputs=["a", "b"], dimensions=8), target(a, model="embed"))
    body = json.loads(up.body)
    assert up.url.endswith("/models/embed:batchEmbedContents")
    assert body["requests"][1] == {"model": "models/embed", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 8}
    resp = a.embeddings_response(b'{"embeddings": [{"values": [0.1]}, {"values": [0.2]}]}', target(a))
    assert [e.vector for e in resp.data] == [[0.1], [0.2]] and resp.usage.estimated
    with pytest.raises(errors.UpstreamBadRequest):
        a.embeddings_request(EmbeddingRequest(model="e", inputs=[[1, 2]]), target(a))


# --- Cohere ------------------------------------------------------------------------------------


def test_cohere_request_shape_and_tool_choice() -> None:
    a = CohereAdapter()
    r = ChatRequest(model="x", messages=TOOL_HISTORY, tools=[WEATHER, Tool(name="other")], top_p=0.5, top_k=3,
                    tool_choice=ToolChoice(mode="tool", name="get_weather"), stop=["\n"])
    up = a.chat_request(r, target(a, model="command-a"))
    body = json.loads(up.body)
    assert up.url == "https://api.cohere.com/v2/chat" and up.headers["authorization"] == "Bearer k"
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather"] and body["tool_choice"] == "REQUIRED"
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool", "tool"]
    assert body["messages"][2]["tool_calls"][1]["id"] == "call_b" and "content" not in body["messages"][2]
    assert body["messages"][3] == {"role": "tool", "tool_call_id": "call_a", "content": "21 C"}
    assert (body["p"], body["k"], body["stop_sequences"]) == (0.5, 3, ["\n"])
    none = a.chat_body(ChatRequest(model="x", messages=TOOL_HISTORY[:2], tools=[WEATHER],
                                   tool_choice=ToolChoice(mode="none")), target(a))
    assert none["tool_choice"] == "NONE"


def test_cohere_errors_and_failed_generations() -> None:
    a = CohereAdapter()
    for status, cls in [(498, errors.UpstreamAuthError), (402, errors.UpstreamAuthError), (499, errors.UpstreamServerError),
                        (501, errors.UpstreamBadRequest), (422, errors.UpstreamBadRequest), (429, errors.UpstreamRateLimited)]:
        err = a.error(status, {}, b'{"id": "x", "message": "nope"}')
        assert type(err) is cls and err.message == "nope", status
    failed = {"id": "x", "finish_reason": "ERROR", "message": {"role": "assistant", "content": []}}
    with pytest.raises(errors.UpstreamServerError):
        a.chat_response(json.dumps(failed).encode(), target(a))
    p = a.stream_parser(ChatRequest(model="x", messages=[]), target(a))
    with pytest.raises(errors.UpstreamServerError, match="overloaded"):
        p.feed(sse({"type": "message-end", "delta": {"finish_reason": "ERROR", "error": "model overloaded"}}))


def test_cohere_usage_prefers_billed_units() -> None:
    a = CohereAdapter()
    body = {"id": "x", "finish_reason": "COMPLETE", "message": {"role": "assistant", "content": [{"type": "text", "text": "hi"}]},
            "usage": {"billed_units": {"input_tokens": 20, "output_tokens": 5}, "tokens": {"input_tokens": 90, "output_tokens": 5},
                      "cached_tokens": 8}}
    u = a.chat_response(json.dumps(body).encode(), target(a)).usage
    assert (u.input_tokens, u.cached_input_tokens, u.output_tokens) == (12, 8, 5)


# --- Mistral -----------------------------------------------------------------------------------


def test_mistral_tool_call_ids() -> None:
    assert tool_call_id("abcDEF123") == "abcDEF123"
    made = tool_call_id("call_0123456789abcdef")
    assert len(made) == 9 and made.isalnum() and made == tool_call_id("call_0123456789abcdef")
    assert tool_call_id("toolu_01") != tool_call_id("toolu_02")


def test_mistral_request_differences() -> None:
    a = MistralAdapter()
    r = ChatRequest(model="x", stream=True, seed=3, user="u", max_tokens=7, tools=[WEATHER],
                    tool_choice=ToolChoice(mode="required"),
                    messages=[*TOOL_HISTORY, Message(role="user", name="alice", content=[Text(text="and?")]),
                              Message(role="assistant", content=[Text(text="Well,")])])
    up = a.chat_request(r, target(a))
    body = json.loads(up.body)
    assert up.url == "https://api.mistral.ai/v1/chat/completions"
    assert body["random_seed"] == 3 and "seed" not in body and "user" not in body and "stream_options" not in body
    assert body["max_tokens"] == 7 and body["tool_choice"] == "any"
    calls = body["messages"][2]["tool_calls"]
    assert [c["id"] for c in calls] == [tool_call_id("call_a"), tool_call_id("call_b")]
    assert body["messages"][3]["tool_call_id"] == tool_call_id("call_a")
    assert "name" not in body["messages"][5] and body["messages"][-1]["prefix"] is True


def test_mistral_errors() -> None:
    a = MistralAdapter()
    invalid_model = b'{"object":"error","message":"Invalid model: x","type":"invalid_model","param":null,"code":"1500"}'
    assert type(a.error(400, {}, invalid_model)) is errors.UpstreamNotFound
    detail = b'{"detail":[{"type":"extra_forbidden","loc":["body","x"],"msg":"Extra inputs are not permitted"}]}'
    err = a.error(422, {}, detail)
    assert type(err) is errors.UpstreamBadRequest and "extra_forbidden" in err.message
    assert type(a.error(401, {}, b'{"message":"Unauthorized","request_id":"r"}')) is errors.UpstreamAuthError
    openai_style = b'{"error":{"message":"long","type":"invalid_request_error","code":"context_length_exceeded"}}'
    assert type(a.error(400, {}, openai_style)) is errors.ContextLengthExceeded


def test_mistral_reasoning_chunks_and_model_length() -> None:
    a = MistralAdapter()
    body = {"id": "x", "model": "magistral", "choices": [{"index": 0, "finish_reason": "model_length", "message": {
        "role": "assistant", "content": [{"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]},
                                         {"type": "text", "text": "Answer"}]}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}
    [choice] = a.chat_response(json.dumps(body).encode(), target(a)).choices
    assert choice.message.text() == "Answer" and choice.finish_reason == "length"
    p = a.stream_parser(ChatRequest(model="x", messages=[]), target(a))
    chunk = {"id": "x", "choices": [{"index": 0, "delta": {"content": [{"type": "text", "text": "Hi"}]}}]}
    assert p.feed(sse(chunk)) == [TextDelta(text="Hi")]


# --- Azure -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "base", "url"), [
    (None, "https://r.openai.azure.com",
     "https://r.openai.azure.com/openai/deployments/my%20dep/chat/completions?api-version=2024-10-21"),
    ("2025-04-01-preview", "https://r.openai.azure.com/openai/",
     "https://r.openai.azure.com/openai/deployments/my%20dep/chat/completions?api-version=2025-04-01-preview"),
    ("v1", "https://r.openai.azure.com/openai/v1", "https://r.openai.azure.com/openai/v1/chat/completions"),
    ("preview", "https://r.openai.azure.com", "https://r.openai.azure.com/openai/v1/chat/completions?api-version=preview"),
])
def test_azure_paths(version: str | None, base: str, url: str) -> None:
    a = AzureOpenAIAdapter()
    t = target(a, model="my dep", base_url=base, api_version=version)
    up = a.chat_request(ChatRequest(model="x", messages=TOOL_HISTORY[:2]), t)
    assert up.url == url and up.headers["api-key"] == "k" and "Authorization" not in up.headers
    assert json.loads(up.body)["messages"][0]["role"] == "system"


def test_azure_errors_and_settings() -> None:
    a = AzureOpenAIAdapter()
    filtered = {"error": {"message": "filtered", "type": None, "param": "prompt", "code": "content_filter", "status": 400,
                          "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {}}}}
    err = a.error(400, {}, json.dumps(filtered).encode())
    assert type(err) is errors.ContentPolicyViolation and err.provider_code == "ResponsibleAIPolicyViolation"
    assert type(a.error(404, {}, b'{"error":{"code":"DeploymentNotFound","message":"m"}}')) is errors.UpstreamNotFound
    assert type(a.error(429, {"retry-after": "2"}, b'{"error":{"code":"429","message":"m"}}')).__name__ == "UpstreamRateLimited"
    d = Deployment.model_validate({"name": "d", "provider": "azure", "model": "m", "api_key": "k"})
    assert [f for f, _ in a.check(d)] == ["base_url"]


def test_mistral_leaves_out_fields_it_would_refuse() -> None:
    a = MistralAdapter()
    r = ChatRequest(model="x", messages=TOOL_HISTORY[:2], passthrough={"store": False, "top_k": 5},
                    passthrough_dialect="openai")
    body = a.chat_body(r, target(a))
    assert "store" not in body and body["top_k"] == 5
