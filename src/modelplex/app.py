"""build_app: every route and every middleware of the gateway, in one place.

The inference routes are matched by exact path from a dict and served by plain ASGI handlers:
this is the hot path and it stays free of framework layers. Everything else (health, admin,
metrics, dashboard) is listed in the same table.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import msgspec

from modelplex.server import endpoints, sched
from modelplex.server.anthropic import DIALECT as ANTHROPIC
from modelplex.server.http import ASGIApp, Receive, Scope, Send, send_body
from modelplex.server.openai import DIALECT as OPENAI
from modelplex.server.responses import DIALECT as RESPONSES
from modelplex.server.shed import shedding
from modelplex.services import Services

log = logging.getLogger("modelplex.app")
Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
Middleware = Callable[[ASGIApp], ASGIApp]
_encode = msgspec.json.Encoder().encode


def routes(svc: Services) -> dict[tuple[str, str], Handler]:
    return {
        ("POST", "/v1/chat/completions"): partial(endpoints.chat, svc, OPENAI),
        ("POST", "/chat/completions"): partial(endpoints.chat, svc, OPENAI),
        ("POST", "/v1/messages"): partial(endpoints.chat, svc, ANTHROPIC),
        ("POST", "/v1/responses"): partial(endpoints.chat, svc, RESPONSES),
        ("POST", "/v1/embeddings"): partial(endpoints.embeddings, svc),
        ("GET", "/v1/models"): partial(_models, svc),
        ("GET", "/healthz"): _healthz,
        ("GET", "/readyz"): partial(_readyz, svc),
    }


def middleware(svc: Services) -> list[Middleware]:
    """Outermost first."""
    return [shedding(svc.shedder)]


def build_app(svc: Services) -> ASGIApp:
    table = {**routes(svc), **svc.routes}
    paths = {path for _, path in table}
    admin: list[ASGIApp] = []

    async def router(scope: Scope, receive: Receive, send: Send) -> None:
        handler = table.get((scope["method"], scope["path"]))
        if handler is not None:
            await handler(scope, receive, send)
        elif scope["path"].startswith("/admin/"):
            if not admin:  # built on first use: the admin API is not on the inference path
                from modelplex.server.admin import build_admin

                admin.append(build_admin(svc))
            await admin[0](scope, receive, send)
        elif scope["path"] in paths:
            await _error(send, 405, "method_not_allowed", f"Method {scope['method']} not allowed.")
        else:
            await _error(send, 404, "not_found", f"No route {scope['path']}.")

    app: ASGIApp = router
    for mw in reversed(middleware(svc)):
        app = mw(app)
    inner = app

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await inner(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(svc, receive, send)

    return asgi


async def _models(svc: Services, scope: Scope, receive: Receive, send: Send) -> None:
    anthropic = any(k == b"anthropic-version" for k, _ in scope["headers"])
    await endpoints.models(svc, ANTHROPIC if anthropic else OPENAI, scope, receive, send)


async def _healthz(scope: Scope, receive: Receive, send: Send) -> None:
    await send_body(send, 200, b'{"status":"ok"}', [])


async def _readyz(svc: Services, scope: Scope, receive: Receive, send: Send) -> None:
    rt = svc.runtime()
    ready = bool(rt.models) and bool(rt.endpoints) and not svc.draining
    body = _encode(
        {
            "status": "draining" if svc.draining else ("ready" if ready else "not ready"),
            "config_generation": svc.holder.generation,
            "models": len(rt.models),
            "deployments": len(rt.endpoints),
            "last_reload_error": svc.holder.last_error,
        }
    )
    await send_body(send, 200 if ready else 503, body, [])


async def _error(send: Send, status: int, code: str, message: str) -> None:
    body = _encode(
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    )
    await send_body(send, status, body, [])


async def _watch_config(svc: Services, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            if svc.holder.changed_on_disk():
                svc.holder.reload()
        except Exception:
            log.exception("config watcher failed; it keeps watching")


def _drain_on_sigterm(
    svc: Services, loop: asyncio.AbstractEventLoop, tasks: list[asyncio.Task[None]]
) -> None:
    """SIGTERM: readiness fails at once; after drain_delay_s hand the signal to the server, which
    stops accepting and waits up to its graceful-shutdown timeout for requests and streams."""
    server_handler = signal.getsignal(signal.SIGTERM)
    if not callable(server_handler):
        return

    async def drain() -> None:
        delay = svc.runtime().config.server.drain_delay_s
        log.info("SIGTERM: draining (readiness off, still serving for %.1fs)", delay)
        await asyncio.sleep(delay)
        server_handler(signal.SIGTERM, None)

    def on_sigterm() -> None:
        if not svc.draining:
            svc.draining = True
            tasks.append(asyncio.ensure_future(drain()))

    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)


async def _lifespan(svc: Services, receive: Receive, send: Send) -> None:
    message = await receive()
    assert message["type"] == "lifespan.startup"
    # asyncio.to_thread's threads keep the kernel's default scheduling (server/sched.py).
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(thread_name_prefix="modelplex-thread", initializer=sched.helper_thread))
    try:
        for start in svc.startup:
            await start()
    except Exception as exc:
        log.exception("startup failed")
        await send({"type": "lifespan.startup.failed", "message": str(exc)})
        return
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []
    if svc.holder.path is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, svc.holder.reload)
        if svc.runtime().config.server.reload:
            tasks.append(asyncio.create_task(_watch_config(svc, 1.0)))
    tasks.extend(asyncio.create_task(start()) for start in svc.tasks)
    _drain_on_sigterm(svc, loop, tasks)
    # Everything built so far lives as long as the process: keep the collector from rescanning it.
    gc.freeze()
    await send({"type": "lifespan.startup.complete"})
    message = await receive()
    for task in tasks:
        task.cancel()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.remove_signal_handler(signal.SIGHUP)
        loop.remove_signal_handler(signal.SIGTERM)
    for close in svc.closers:
        try:
            await close()
        except Exception:
            log.exception("error while shutting down")
    await svc.transport.close()
    await send({"type": "lifespan.shutdown.complete"})
