"""AWS Lambda entry point: `modelplex.serverless.handler` serves API Gateway (HTTP API v2 and REST
v1), Lambda Function URL and ALB events through Mangum, from one gateway built per cold start.

Lambda freezes the process between invocations and may drop it while frozen, so an invocation
leaves nothing for later: before it returns, the work its request started (limit and budget
settlement, the ledger row, the request-log row) is finished and shipped, for at most
FLUSH_TIMEOUT_S. What is not shipped by then stays in the spool under /tmp and goes out during the
next invocation of the same instance. Limits of running this way: docs/scale.md, "Serverless".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mangum import Mangum
from mangum.types import LambdaContext, LambdaEvent

from modelplex.observability.requestlog import find as find_requestlog
from modelplex.server.http import ASGIApp, Message
from modelplex.services import Services

log = logging.getLogger("modelplex.serverless")
CONFIG_ENV = "MODELPLEX_CONFIG"
FLUSH_TIMEOUT_S = 2.0
FLUSH_POLL_S = 0.005


class Lifespan:
    """The app's ASGI lifespan, started once and kept open for the life of the instance (Mangum's
    own lifespan support would start and stop the gateway around every invocation)."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._started: asyncio.Future[Message] | None = None
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        self._started = asyncio.get_running_loop().create_future()
        self._task = asyncio.ensure_future(self._app({"type": "lifespan", "asgi": {"version": "3.0"},
                                                      "state": {}}, self._inbox.get, self._send))
        await self._inbox.put({"type": "lifespan.startup"})
        pending: set[asyncio.Future[Any]] = {self._started, self._task}
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if not self._started.done():  # the app raised instead of answering
            self._task.result()
            raise RuntimeError("modelplex's lifespan ended before its startup completed")
        message = self._started.result()
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"modelplex failed to start: {message.get('message', '')}")

    async def shutdown(self) -> None:
        if self._task is not None and not self._task.done():
            await self._inbox.put({"type": "lifespan.shutdown"})
            await self._task

    async def _send(self, message: Message) -> None:
        if self._started is not None and not self._started.done():
            self._started.set_result(message)


class LambdaGateway:
    """A Lambda handler: builds the gateway on the first invocation, then serves every event."""

    def __init__(self, build: Callable[[], Services], flush_timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        self._build = build
        self.flush_timeout_s = flush_timeout_s
        self.svc: Services | None = None
        self.lifespan: Lifespan | None = None
        self._adapter: Mangum | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.cold_starts = 0

    def __call__(self, event: LambdaEvent, context: LambdaContext) -> dict[str, Any]:
        if self._adapter is None:
            self._start()
        assert self._adapter is not None and self._loop is not None
        asyncio.set_event_loop(self._loop)  # Mangum runs each request on the current loop
        before = asyncio.all_tasks(self._loop)
        response = self._adapter(event, context)
        self._loop.run_until_complete(self._settle(before))
        return response

    def _start(self) -> None:
        from modelplex.app import build_app

        self.cold_starts += 1
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        svc = self._build()
        app = build_app(svc)
        lifespan = Lifespan(app)
        self._loop.run_until_complete(lifespan.startup())  # opens the stores
        self.svc, self.lifespan = svc, lifespan
        self._adapter = Mangum(app, lifespan="off")  # type: ignore[arg-type]

    async def _settle(self, before: set[asyncio.Task[Any]]) -> None:
        """Finish what the invocation started, then ship its ledger and request-log rows."""
        assert self.svc is not None
        deadline = time.monotonic() + self.flush_timeout_s
        started = asyncio.all_tasks() - before - {asyncio.current_task()}
        if started:  # settlement of limits and budgets, hedges being cancelled
            await asyncio.wait(started, timeout=max(deadline - time.monotonic(), 0.001))
        if self.svc.admission is not None:
            await self.svc.admission.flush_ledger()
        requestlog = find_requestlog(self.svc)
        if requestlog is None or requestlog.shipper is None:
            return
        # The shipper is a background task: the loop only runs during invocations, so give it the
        # time to store this invocation's rows now. (It signals nothing: its counters are polled.)
        while requestlog.stats.backlog_rows > 0 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(FLUSH_POLL_S)
        if requestlog.stats.backlog_rows > 0:
            log.warning("request log: %d row(s) not shipped within %.1fs stay in the spool until the "
                        "next invocation", requestlog.stats.backlog_rows, self.flush_timeout_s)

    def close(self) -> None:
        """Shut the gateway down (tests, or a runtime that announces the end of an instance)."""
        if self._loop is None or self.lifespan is None:
            return
        with contextlib.suppress(Exception):
            self._loop.run_until_complete(self.lifespan.shutdown())
        self._loop.close()
        self._adapter = self._loop = self.lifespan = self.svc = None


def _from_environment() -> Services:
    from modelplex.cli import environment
    from modelplex.serve import load_services

    env: Mapping[str, str] = environment()
    path = env.get(CONFIG_ENV)
    if not path:
        raise RuntimeError(f"set {CONFIG_ENV} to the gateway config's path, e.g. /var/task/modelplex.yaml")
    return load_services(Path(path), env)


handler = LambdaGateway(_from_environment)
