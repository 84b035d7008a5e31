"""Helpers of the observability tests: in-process services, request contexts, an HTTP receiver."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from modelplex import pipeline
from modelplex.config.schema import Config
from modelplex.context import AttemptRecord, RequestContext
from modelplex.errors import AllAttemptsFailed, AttemptFailure, ModelplexError, UpstreamServerError
from modelplex.metering.catalog import load_catalog
from modelplex.providers.registry import load_registry
from modelplex.runtime import RuntimeHolder, build_runtime
from modelplex.services import Services
from modelplex.types import Usage

ADMIN = "sk-test-admin-key-0001"


def config(**extra: Any) -> dict[str, Any]:
    """Two priced deployments (OpenAI, Anthropic), one unpriced, models over them, a route."""
    return {
        "server": {"admin_key": ADMIN},
        "deployments": [
            {"name": "oa", "provider": "openai", "model": "gpt-mini", "api_key": "x",
             "base_url": "http://127.0.0.1:9101/v1", "price": {"input": 0.15, "output": 0.6}},
            {"name": "an", "provider": "anthropic", "model": "claude-haiku", "api_key": "y",
             "price": {"input": 1.0, "output": 5.0}},
            {"name": "local", "provider": "openai", "model": "my-private-llm", "api_key": "z",
             "base_url": "http://127.0.0.1:9102/v1"},
        ],
        "models": [{"name": "fast", "deployments": ["oa", "an"]},
                   {"name": "premium", "deployments": ["an"]},
                   {"name": "homegrown", "deployments": ["local"]}],
        "routes": [{"name": "auto", "default": "fast", "baseline": "premium"}],
        "keys": [{"name": "k", "key": "sk-test-gateway-key-0001"}],
        **extra,
    }


def services(data: dict[str, Any] | None = None) -> Services:
    cfg = Config.model_validate(data or config())
    catalog = load_catalog()
    return Services(holder=RuntimeHolder(build_runtime(cfg, load_registry(), catalog=catalog), None, {},
                                         catalog))


def ok(svc: Services, model: str = "fast", deployment: str = "oa", *, route: str | None = None,
       stream: bool = False, attempts: list[tuple[str, str]] | None = None, requested: str | None = None,
       duration: float = 0.2) -> RequestContext:
    """A successful request answered by `deployment`, after `attempts` [(deployment, outcome)]."""
    rt = svc.runtime()
    ctx = RequestContext(dialect="openai", operation="chat")
    ctx.model, ctx.stream, ctx.route = requested or route or model, stream, route
    t = ctx.started - duration
    ctx.started = t
    for dep, outcome in attempts or []:
        ctx.attempts.append(AttemptRecord(dep, rt.endpoints[dep].target.provider, model, t, t + 0.01, outcome))
        ctx.first_failure_at = ctx.first_failure_at or t + 0.01
    endpoint = rt.endpoints[deployment]
    usage = Usage(input_tokens=1000, output_tokens=200, cached_input_tokens=50)
    ctx.attempts.append(AttemptRecord(deployment, endpoint.target.provider, model, t + 0.01, t + duration, "ok",
                                      200, ttft_s=0.05 if stream else None, usage=usage))
    ctx.answered_by, ctx.answered_model, ctx.usage, ctx.upstream_s = endpoint, model, usage, duration - 0.02
    if stream:
        ctx.first_byte_at = t + 0.06
    if ctx.first_failure_at is not None:
        ctx.failover_s = duration - 0.01
    pipeline.finish(svc, ctx)
    return ctx


def failed(svc: Services, model: str = "fast", deployment: str = "oa", error: ModelplexError | None = None,
           requested: str | None = None) -> RequestContext:
    """A request that failed: by default every attempt got a 500 (a server-side error)."""
    rt = svc.runtime()
    ctx = RequestContext(dialect="openai", operation="chat")
    ctx.model = requested or model
    if error is None:
        endpoint = rt.endpoints[deployment]
        ctx.attempts.append(AttemptRecord(deployment, endpoint.target.provider, model, ctx.started,
                                          ctx.started + 0.01, "upstream_server_error", 500))
        exc = UpstreamServerError("boom", upstream_status=500)
        error = AllAttemptsFailed([AttemptFailure(deployment, endpoint.target.provider, exc, 10.0)])
    pipeline.fail(svc, ctx, error)
    return ctx


class Receiver:
    """A local HTTP server recording every POST: a webhook receiver, or an OTLP/HTTP collector."""

    def __init__(self, status: int = 200) -> None:
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                outer.posts.append((self.path, dict(self.headers.items()), body))
                self.send_response(outer.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def json(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, _, body in list(self.posts)]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(every)


async def eventually(predicate: Callable[[], Any], timeout: float = 10.0, every: float = 0.02) -> Any:
    """wait_until for async tests: the event loop (and the webhook posts on it) keeps running."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(every)
