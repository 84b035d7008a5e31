"""A simulated Bedrock runtime: POST /model/{modelId}/converse and /converse-stream, the stream in
AWS event-stream framing (application/vnd.amazon.eventstream).

Shapes follow the bedrock-runtime service model (botocore's service-2.json); errors carry their
type in the `x-amzn-ErrorType` header as AWS sends it. The tests parse both with boto3. Requests
must carry a SigV4 Authorization (its structure is checked, not its signature: the simulator knows
no secret) or a Bedrock API key as a bearer token.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from aiohttp import web

from modelplex.providers.eventstream import encode_message
from modelplex.simulator import content
from modelplex.simulator.core import Answer, Ask, SimRequest, SimState, respond

STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}
_CORAL = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
# Bedrock pads each stream event with a "p" field of varying length (hides token sizes).
_PAD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

_ERRORS: dict[str, tuple[int, str, str]] = {
    # kind: (HTTP status, error type, message)
    "400": (400, "ValidationException", "Malformed input request, please reformat your input and try again."),
    "401": (401, "UnrecognizedClientException", "The security token included in the request is invalid."),
    "403": (403, "AccessDeniedException", "You don't have access to the model with the specified model ID."),
    "404": (
        404,
        "ResourceNotFoundException",
        "Could not resolve the foundation model from the model identifier.",
    ),
    "408": (408, "ModelTimeoutException", "Model has timed out in processing the request."),
    "424": (424, "ModelErrorException", "The model returned an error."),
    "429": (429, "ThrottlingException", "Too many requests, please wait before trying again."),
    "500": (500, "InternalServerException", "The system encountered an unexpected error during processing."),
    "503": (503, "ServiceUnavailableException", "Bedrock is unable to process your request."),
    "context_length": (400, "ValidationException", "Input is too long for requested model."),
    "content_policy": (400, "ValidationException", "Output blocked by content filtering policy."),
    "prefill": (400, "ValidationException", "This model does not support assistant message prefill."),
}
_SIGV4 = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)"
    r"/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;-]+), ?Signature=(?P<sig>[0-9a-f]{64})$"
)


def _usage(a: Answer) -> dict[str, Any]:
    """inputTokens excludes cache reads and writes; reasoning is counted in outputTokens."""
    plain = max(a.input_total - a.cached - a.cache_write, 0)
    output = a.output + a.reasoning
    usage: dict[str, Any] = {
        "inputTokens": plain,
        "outputTokens": output,
        "totalTokens": plain + a.cached + a.cache_write + output,
    }
    if a.cached:
        usage["cacheReadInputTokens"] = a.cached
    if a.cache_write:
        usage["cacheWriteInputTokens"] = a.cache_write
    return usage


def _event(name: str, payload: dict[str, Any]) -> bytes:
    headers = {":event-type": name, ":content-type": "application/json", ":message-type": "event"}
    padded = {**payload, "p": _PAD[: 8 + len(json.dumps(payload)) % 40]}
    return encode_message(headers, json.dumps(padded).encode())


class BedrockWire:
    stream_content_type = "application/vnd.amazon.eventstream"

    def body(self, ask: Ask, answer: Answer, request_id: str) -> bytes:
        blocks: list[dict[str, Any]] = []
        if answer.tokens:
            blocks.append({"text": "".join(answer.tokens)})
        if answer.tool is not None:
            call_id, name, args = answer.tool
            blocks.append(
                {"toolUse": {"toolUseId": "tooluse_" + call_id[5:], "name": name, "input": json.loads(args)}}
            )
        return json.dumps(
            {
                "output": {"message": {"role": "assistant", "content": blocks}},
                "stopReason": STOP[answer.finish],
                "usage": _usage(answer),
                "metrics": {"latencyMs": 42},
            }
        ).encode()

    def events(self, ask: Ask, answer: Answer, request_id: str) -> tuple[list[bytes], bytes]:
        chunks = [_event("messageStart", {"role": "assistant"})]
        index = 0
        if answer.tokens:
            # Text blocks start with their first delta: there is no contentBlockStart for text.
            chunks.extend(
                _event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": t}})
                for t in answer.tokens
            )
            chunks.append(_event("contentBlockStop", {"contentBlockIndex": 0}))
            index = 1
        if answer.tool is not None:
            call_id, name, args = answer.tool
            start = {"toolUse": {"toolUseId": "tooluse_" + call_id[5:], "name": name}}
            chunks.append(_event("contentBlockStart", {"contentBlockIndex": index, "start": start}))
            chunks.extend(
                _event(
                    "contentBlockDelta", {"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}}
                )
                for piece in content.split_in(args, 3)
            )
            chunks.append(_event("contentBlockStop", {"contentBlockIndex": index}))
        chunks.append(_event("messageStop", {"stopReason": STOP[answer.finish]}))
        chunks.append(_event("metadata", {"usage": _usage(answer), "metrics": {"latencyMs": 42}}))
        # Event-stream framing has no terminator: the HTTP body simply ends after `metadata`.
        return chunks, b""

    def error(self, kind: str, ask: Ask | None, message: str) -> tuple[int, bytes]:
        status, etype, text = _ERRORS.get(
            kind, (int(kind) if kind.isdigit() else 500, "InternalServerException", "Simulated error.")
        )
        # `__type` is moved into the x-amzn-ErrorType header by the route before sending.
        return status, json.dumps({"message": text, "__type": etype}).encode()

    def malformed(self) -> bytes:
        headers = {
            ":event-type": "contentBlockDelta",
            ":content-type": "application/json",
            ":message-type": "event",
        }
        return encode_message(headers, b'{"contentBlockIndex": 0, "delta": ')


WIRE = BedrockWire()


def _block_text(block: dict[str, Any]) -> str:
    if "text" in block:
        return str(block["text"])
    if "toolUse" in block:
        return json.dumps(block["toolUse"].get("input", {}))
    if "toolResult" in block:
        return "".join(
            c["text"] if "text" in c else json.dumps(c.get("json", {}))
            for c in block["toolResult"].get("content") or []
        )
    return ""


def read_ask(body: dict[str, Any], model: str, stream: bool) -> Ask:
    msgs = body.get("messages") or []
    system = "".join(b.get("text", "") for b in body.get("system") or [])
    texts = ([system] if system else []) + [
        "".join(_block_text(b) for b in m.get("content") or []) for m in msgs
    ]
    users = ["".join(_block_text(b) for b in m.get("content") or []) for m in msgs if m.get("role") == "user"]
    last = msgs[-1] if msgs else {}
    last_blocks = last.get("content") or []
    tool_config = body.get("toolConfig") or {}
    tools = [
        (t["toolSpec"]["name"], t["toolSpec"].get("inputSchema", {}).get("json"))
        for t in tool_config.get("tools") or []
        if "toolSpec" in t
    ]
    choice = tool_config.get("toolChoice") or {}
    tool_choice = (
        "required" if "any" in choice else choice.get("tool", {}).get("name", "auto" if tools else None)
    )
    text_format = (body.get("outputConfig") or {}).get("textFormat") or {}
    schema_text = ((text_format.get("structure") or {}).get("jsonSchema") or {}).get("schema")
    prefill = None
    if last.get("role") == "assistant" and not any("toolUse" in b for b in last_blocks):
        prefill = "".join(_block_text(b) for b in last_blocks)
    return Ask(
        model=model,
        texts=texts,
        last_user=users[-1] if users else "",
        stream=stream,
        max_tokens=(body.get("inferenceConfig") or {}).get("maxTokens"),
        tools=tools,
        tool_choice=tool_choice,
        after_tool_result=any("toolResult" in b for b in last_blocks),
        json_schema=json.loads(schema_text) if schema_text else None,
        prefill=prefill,
    )


def _refuse(status: int, etype: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps({"message": message}).encode(),
        content_type="application/json",
        headers={"x-amzn-ErrorType": etype + _CORAL},
    )


def _auth_problem(request: web.Request) -> web.Response | None:
    auth = request.headers.get("authorization", "")
    if auth.startswith("Bearer ") and len(auth) > 7:
        return None
    if not auth:
        return _refuse(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
    m = _SIGV4.match(auth)
    amz_date = request.headers.get("x-amz-date", "")
    if m is None or m["service"] != "bedrock" or not amz_date.startswith(m["date"]):
        return _refuse(
            403, "InvalidSignatureException", "The request signature we calculated does not match."
        )
    if not {"host", "x-amz-date"} <= set(m["signed"].split(";")):
        return _refuse(403, "InvalidSignatureException", "Host and x-amz-date must be signed.")
    return None


def _typed(resp: web.StreamResponse) -> web.StreamResponse:
    """Move an error body's `__type` into x-amzn-ErrorType, where Bedrock sends it."""
    if (
        not isinstance(resp, web.Response)
        or resp.status < 400
        or resp.prepared
        or not isinstance(resp.body, bytes)
    ):
        return resp
    try:
        data = json.loads(resp.body)
    except ValueError:
        return resp
    if isinstance(data, dict) and "__type" in data:
        resp.headers["x-amzn-ErrorType"] = data.pop("__type") + _CORAL
        resp.body = json.dumps(data).encode()
    return resp


def routes(state: SimState) -> list[web.RouteDef]:
    async def converse(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        refused = _auth_problem(request)
        if refused is not None:
            return refused
        model = request.match_info["model_id"]
        try:
            ask = read_ask(json.loads(raw), model, stream=request.path.endswith("/converse-stream"))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return _refuse(400, "ValidationException", f"Malformed input request: {exc!r}")
        _, behaviour = state.behaviour(ask.model)
        record = SimRequest(
            at=time.monotonic(),
            path=request.path,
            model=ask.model,
            stream=ask.stream,
            outcome=state.outcome(ask.model, behaviour),
            body=raw,
            headers=dict(request.headers),
        )
        state.log.append(record)
        return _typed(await respond(request, state, WIRE, ask, record))

    return [
        web.post("/model/{model_id:.+}/converse", converse),
        web.post("/model/{model_id:.+}/converse-stream", converse),
    ]
