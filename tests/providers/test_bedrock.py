"""Bedrock adapter details the contract suite cannot see: SigV4 against botocore, the path as the
HTTP client sends it, credentials, in-stream exceptions and error-type headers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import pytest
import yarl

from modelplex import errors
from modelplex.config.schema import Deployment
from modelplex.providers.base import BinaryEvent
from modelplex.providers.bedrock import BedrockAdapter, BedrockStreamParser
from modelplex.providers.bedrock_sigv4 import Credentials, sign
from modelplex.providers.eventstream import EventStreamDecoder, encode_message
from modelplex.types import ChatRequest, FinishDelta, Message, Text, TextDelta, ToolCallDelta, UsageDelta

NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)


def deployment(**extra: Any) -> Deployment:
    values: dict[str, Any] = {"name": "d", "provider": "bedrock", "model": "anthropic.claude-3-haiku-20240307-v1:0",
                              "region": "eu-west-3", "aws_access_key_id": "AKIDEXAMPLE",
                              "aws_secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", **extra}
    return Deployment.model_validate(values)


def request(stream: bool = False) -> ChatRequest:
    return ChatRequest(model="m", stream=stream, messages=[Message(role="user", content=[Text(text="hi")])])


def botocore_authorization(method: str, url: str, headers: dict[str, str], body: bytes, token: str | None) -> str:
    botocore = pytest.importorskip("botocore", reason="botocore is not installable here")
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials as BotoCredentials

    req = AWSRequest(method=method, url=url, data=body, headers=headers)
    creds = BotoCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        SigV4Auth(creds, "bedrock", "eu-west-3").add_auth(req)
    assert botocore is not None
    return str(req.headers["Authorization"])


@pytest.mark.parametrize("token", [None, "session-token-example"])
@pytest.mark.parametrize("model", ["anthropic.claude-3-haiku-20240307-v1:0",
                                   "arn:aws:bedrock:eu-west-3:123456789012:inference-profile/eu.anthropic.claude-v1:0",
                                   "amazon.nova-micro-v1"])
def test_signature_matches_botocore(model: str, token: str | None) -> None:
    adapter = BedrockAdapter(clock=lambda: NOW)
    target = adapter.prepare(deployment(model=model, aws_session_token=token))
    up = adapter.chat_request(request(), target)
    ours = up.headers["authorization"]
    unsigned = {k: v for k, v in up.headers.items() if k in ("content-type",)}
    assert ours == botocore_authorization("POST", up.url, unsigned, up.body, token)
    assert up.headers["x-amz-date"] == "20260314T150926Z"
    assert (up.headers.get("x-amz-security-token") == token) if token else "x-amz-security-token" not in up.headers
    # What is signed is the path the HTTP client sends: aiohttp/yarl must not re-encode it.
    assert yarl.URL(up.url).raw_path == up.url.split(target.base_url, 1)[1]


def test_signing_covers_host_with_port_and_the_body() -> None:
    creds = Credentials("AKIDEXAMPLE", "secret")
    a = sign("POST", "http://127.0.0.1:9000/model/x/converse", {}, b"{}", credentials=creds, region="r",
             service="bedrock", now=NOW)
    b = sign("POST", "http://127.0.0.1:9000/model/x/converse", {}, b"{ }", credentials=creds, region="r",
             service="bedrock", now=NOW)
    assert a["host"] == "127.0.0.1:9000" and a["authorization"] != b["authorization"]
    assert "SignedHeaders=host;x-amz-date," in a["authorization"]


def test_api_key_is_a_bearer_token_and_settings_are_checked() -> None:
    adapter = BedrockAdapter(clock=lambda: NOW)
    d = Deployment.model_validate({"name": "d", "provider": "bedrock", "model": "m", "region": "us-east-1",
                                   "api_key": "bedrock-api-key"})
    up = adapter.chat_request(request(), adapter.prepare(d))
    assert up.headers["authorization"] == "Bearer bedrock-api-key" and "x-amz-date" not in up.headers
    assert up.url == "https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse"
    assert adapter.check(d) == []
    bad = Deployment.model_validate({"name": "d", "provider": "bedrock", "model": "m", "aws_access_key_id": "A"})
    assert {f for f, _ in adapter.check(bad)} == {"region", "aws_secret_access_key"}


def test_error_type_from_header_or_body() -> None:
    adapter = BedrockAdapter()
    header = {"X-Amzn-ErrorType": "ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    err = adapter.error(429, header, b'{"message": "Too many requests"}')
    assert type(err) is errors.UpstreamRateLimited and err.provider_code == "ThrottlingException"
    err = adapter.error(400, {}, b'{"__type": "com.amazon.bedrock#ResourceNotFoundException", "message": "m"}')
    assert type(err) is errors.UpstreamNotFound
    # A 400 that is a quota, not a bad request: the type decides, not the status.
    err = adapter.error(400, {"x-amzn-errortype": "ServiceQuotaExceededException"}, b'{"message": "quota"}')
    assert type(err) is errors.UpstreamRateLimited
    err = adapter.error(403, {"x-amzn-errortype": "ExpiredTokenException"}, b"")
    assert type(err) is errors.UpstreamAuthError


def _event(name: str, payload: dict[str, Any]) -> BinaryEvent:
    raw = encode_message({":event-type": name, ":message-type": "event", ":content-type": "application/json"},
                         json.dumps(payload).encode())
    [event] = EventStreamDecoder().feed(raw)
    return event


def test_stream_parser_events_and_exceptions() -> None:
    p = BedrockStreamParser()
    assert p.feed(_event("messageStart", {"role": "assistant"})) == []
    assert p.feed(_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}})) == [TextDelta(text="Hi")]
    start = {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}}
    assert p.feed(_event("contentBlockStart", start)) == [ToolCallDelta(index=0, id="t1", name="f")]
    delta = {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"a":'}}}
    assert p.feed(_event("contentBlockDelta", delta)) == [ToolCallDelta(index=0, arguments='{"a":')]
    with pytest.raises(errors.UpstreamMalformed):
        p.end()
    assert p.feed(_event("messageStop", {"stopReason": "tool_use"})) == [FinishDelta(reason="tool_calls")]
    [usage] = p.feed(_event("metadata", {"usage": {"inputTokens": 3, "outputTokens": 2, "cacheReadInputTokens": 1}}))
    assert isinstance(usage, UsageDelta) and usage.usage.cached_input_tokens == 1
    assert p.end() == []
    raw = encode_message({":message-type": "exception", ":exception-type": "throttlingException",
                          ":content-type": "application/json"}, b'{"message": "slow down"}')
    [exc] = EventStreamDecoder().feed(raw)
    with pytest.raises(errors.UpstreamRateLimited, match="slow down"):
        BedrockStreamParser().feed(exc)
    raw = encode_message({":message-type": "exception", ":exception-type": "validationException"}, b"{}")
    [exc] = EventStreamDecoder().feed(raw)
    with pytest.raises(errors.UpstreamBadRequest):
        BedrockStreamParser().feed(exc)


def test_request_body_shapes() -> None:
    adapter = BedrockAdapter(clock=lambda: NOW)
    from modelplex.types import ResponseFormat, ToolCall, ToolChoice, ToolResult

    r = ChatRequest(model="m", max_tokens=50, temperature=1.5, tool_choice=ToolChoice(mode="required"),
                    response_format=ResponseFormat(type="json_object"), messages=[
                        Message(role="system", content=[Text(text="sys")]),
                        Message(role="user", content=[Text(text="q")]),
                        Message(role="assistant", content=[ToolCall(id="c1", name="f", arguments='{"x":1}')]),
                        Message(role="tool", content=[ToolResult(tool_call_id="c1", content=[Text(text="r")],
                                                                 is_error=True)])])
    body = adapter.chat_body(r, adapter.prepare(deployment()))
    assert body["system"] == [{"text": "sys"}]
    assert body["inferenceConfig"] == {"maxTokens": 50, "temperature": 1.0}
    assert body["messages"][1]["content"] == [{"toolUse": {"toolUseId": "c1", "name": "f", "input": {"x": 1}}}]
    assert body["messages"][2]["content"][0]["toolResult"]["status"] == "error"
    # No tools given but the history uses one: Converse needs a toolConfig naming it.
    assert body["toolConfig"]["tools"][0]["toolSpec"]["name"] == "f"
    assert json.loads(body["outputConfig"]["textFormat"]["structure"]["jsonSchema"]["schema"]) == {"type": "object"}
