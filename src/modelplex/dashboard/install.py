"""The dashboard: a static page (HTML, CSS, and plain JavaScript drawing SVG, no build step) at
`/dashboard`, and its data at `/dashboard/api/live`, both behind the admin credential.

A browser sends the admin key as HTTP Basic auth (any user name, the key as the password): the
page answers 401 with a Basic challenge, the browser asks once, and then sends the credential with
the page's own data requests. Scripts and API clients may send `Authorization: Bearer <admin key>`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Final

import msgspec

from modelplex.dashboard.live import Live
from modelplex.observability.requestlog import RequestLog
from modelplex.server.adminauth import admin_authorized
from modelplex.server.http import Receive, Scope, Send, send_body
from modelplex.services import Services

BudgetSource = Callable[[], Awaitable[list[dict[str, Any]]]]
_encode = msgspec.json.Encoder().encode
_ASSETS: Final = {  # path -> (file, content type)
    "/dashboard": ("index.html", b"text/html; charset=utf-8"),
    "/dashboard/style.css": ("style.css", b"text/css; charset=utf-8"),
    "/dashboard/charts.js": ("charts.js", b"text/javascript; charset=utf-8"),
    "/dashboard/app.js": ("app.js", b"text/javascript; charset=utf-8"),
}
_SECURITY: Final = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
     b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"referrer-policy", b"no-referrer"),
]


def _basic_password(scope: Scope) -> str | None:
    for key, value in scope["headers"]:
        if key == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "basic":
                return None
            try:
                decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None
            return decoded.partition(":")[2]
    return None


def authorized(svc: Services, scope: Scope) -> bool:
    rt = svc.runtime()
    if admin_authorized(rt, scope):
        return True
    expected = rt.config.server.admin_key
    given = _basic_password(scope)
    if expected is None or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.get_secret_value().encode("utf-8"))


class Dashboard:
    def __init__(self, svc: Services, live: Live, requestlog: RequestLog | None) -> None:
        self.svc = svc
        self.live = live
        self.requestlog = requestlog
        self.budgets: BudgetSource | None = None  # set by the limits work to show budget use
        self._assets = {
            path: (resources.files("modelplex.dashboard").joinpath("static", name).read_bytes(), ctype)
            for path, (name, ctype) in _ASSETS.items()
        }

    async def asset(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await self._check(scope, send):
            return
        body, ctype = self._assets[scope["path"]]
        await send_body(send, 200, body, list(_SECURITY), ctype)

    async def api(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await self._check(scope, send):
            return
        await send_body(send, 200, _encode(await self.data()), list(_SECURITY))

    async def _check(self, scope: Scope, send: Send) -> bool:
        if authorized(self.svc, scope):
            return True
        configured = self.svc.runtime().config.server.admin_key is not None
        message = ("The dashboard takes the admin key (server.admin_key) as the password of HTTP Basic "
                   "auth, or as a Bearer token." if configured else
                   "The dashboard is off: no admin key is configured (server.admin_key).")
        body = _encode({"error": {"message": message, "type": "authentication_error", "param": None,
                                  "code": "admin_key_required"}})
        headers = [(b"www-authenticate", b'Basic realm="modelplex dashboard", charset="UTF-8"')]
        await send_body(send, 401, body, headers + list(_SECURITY))
        return False

    async def data(self) -> dict[str, Any]:
        out = self.live.snapshot()
        out["breakers"] = self._breakers()
        out["budgets"] = await self.budgets() if self.budgets is not None else None
        out["request_log"] = self.requestlog.stats.as_dict() if self.requestlog is not None else None
        return out

    def _breakers(self) -> list[dict[str, Any]]:
        rt = self.svc.runtime()
        now = time.time()
        out = []
        for name, endpoint in sorted(rt.endpoints.items()):
            h = self.svc.health.of(name)
            state = h.breaker.state
            if state == "open" and now >= h.breaker.open_until:
                state = "half_open"  # the next request may probe
            out.append({
                "deployment": name, "provider": endpoint.deployment.provider, "state": state,
                "open_for_s": max(h.breaker.open_until - now, 0.0) if state == "open" else 0.0,
                "cooldown_s": max(h.cooldown_until - now, 0.0), "inflight": h.inflight,
                "ewma_ttft_ms": h.ewma_ttft * 1000.0 if h.ewma_ttft is not None else None,
            })
        return out


def install(svc: Services, requestlog: RequestLog | None) -> Dashboard:
    """Serve the dashboard from `svc`, fed by `requestlog`'s rows."""
    live = Live()
    if requestlog is not None:
        requestlog.observers.append(live.observe)
    dashboard = Dashboard(svc, live, requestlog)
    for path in _ASSETS:
        svc.routes[("GET", path)] = dashboard.asset
    svc.routes[("GET", "/dashboard/api/live")] = dashboard.api
    return dashboard
