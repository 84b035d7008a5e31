"""A simulated Azure OpenAI resource: /openai/deployments/{deployment}/chat/completions?api-version=...
and the v1 API's /openai/v1/chat/completions (plus embeddings on both), with the `api-key` header.

OpenAI's bodies with Azure's additions: a first stream chunk that carries only
`prompt_filter_results`, `content_filter_results` on choices, and Azure's error bodies (a string
`code` such as "429" or "DeploymentNotFound", and `content_filter` with an `innererror`). The tests
parse it with the official `openai` SDK's AzureOpenAI client.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from modelplex.simulator import openai
from modelplex.simulator.core import Answer, Ask, SimRequest, SimState, respond

_SAFE = {"filtered": False, "severity": "safe"}
FILTERS = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
_ERRORS: dict[str, tuple[int, dict[str, Any]]] = {
    "401": (
        401,
        {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint."},
    ),
    "403": (403, {"code": "403", "message": "Public access is disabled. Please configure private endpoint."}),
    "404": (
        404,
        {"code": "DeploymentNotFound", "message": "The API deployment for this resource does not exist."},
    ),
    "429": (
        429,
        {
            "code": "429",
            "message": "Requests to the ChatCompletions_Create Operation have exceeded the rate limit.",
        },
    ),
    "500": (
        500,
        {"code": "InternalServerError", "message": "The server had an error processing your request."},
    ),
    "503": (
        503,
        {
            "code": "ServiceUnavailable",
            "message": "The service is temporarily unable to process your request.",
        },
    ),
    "content_policy": (
        400,
        {
            "message": (
                "The response was filtered due to the prompt triggering Azure OpenAI's content management"
                " policy."
            ),
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {**FILTERS, "violence": {"filtered": True, "severity": "medium"}},
            },
        },
    ),
}


class AzureWire(openai.OpenAIWire):
    def body(self, ask: Ask, answer: Answer, request_id: str) -> bytes:
        data = json.loads(super().body(ask, answer, request_id))
        data["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": FILTERS}]
        for choice in data["choices"]:
            choice["content_filter_results"] = FILTERS
        return json.dumps(data).encode()

    def events(self, ask: Ask, answer: Answer, request_id: str) -> tuple[list[bytes], bytes]:
        chunks, done = super().events(ask, answer, request_id)
        first = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": FILTERS}],
        }
        return [b"data: " + json.dumps(first).encode() + b"\n\n", *chunks], done

    def error(self, kind: str, ask: Ask | None, message: str) -> tuple[int, bytes]:
        if kind in _ERRORS:
            status, error = _ERRORS[kind]
            return status, json.dumps({"error": error}).encode()
        return super().error(kind, ask, message)  # model errors pass through in OpenAI's shape


WIRE = AzureWire()


def _refuse(status: int, code: str, message: str) -> web.Response:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return web.Response(status=status, body=body, content_type="application/json")


def _access_problem(request: web.Request, v1: bool) -> web.Response | None:
    if not request.headers.get("api-key") and not request.headers.get("authorization", "").startswith(
        "Bearer "
    ):
        status, error = _ERRORS["401"]
        return _refuse(status, str(error["code"]), str(error["message"]))
    version = request.query.get("api-version")
    if not v1 and not version:
        return _refuse(404, "404", "Resource not found")
    if v1 and version not in (None, "preview"):
        return _refuse(400, "BadRequest", "API version not supported")
    return None


def routes(state: SimState) -> list[web.RouteDef]:
    openai_embeddings = next(r.handler for r in openai.routes(state) if r.path == "/v1/embeddings")

    async def chat(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        deployment = request.match_info.get("deployment")
        refused = _access_problem(request, v1=deployment is None)
        if refused is not None:
            return refused
        try:
            data = json.loads(raw)
            if deployment is not None:
                data["model"] = deployment  # the deployment in the path names the model
            ask = openai.read_ask(data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return _refuse(400, "BadRequest", f"Invalid body: {exc}")
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
        return await respond(request, state, WIRE, ask, record)

    async def embeddings(request: web.Request) -> web.StreamResponse:
        refused = _access_problem(request, v1="deployment" not in request.match_info)
        if refused is not None:
            return refused
        return await openai_embeddings(request)

    return [
        web.post("/openai/deployments/{deployment}/chat/completions", chat),
        web.post("/openai/deployments/{deployment}/embeddings", embeddings),
        web.post("/openai/v1/chat/completions", chat),
        web.post("/openai/v1/embeddings", embeddings),
    ]
