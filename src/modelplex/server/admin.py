"""The admin API under /admin: virtual keys, teams, users, budgets, health. Its own credential.

FastAPI serves it so the API documents itself: /admin/openapi.json and /admin/docs. A key's secret
is returned once, at creation; only its HMAC is stored. Changes apply on this worker at once and
on every other worker and replica within the key cache's 2 seconds.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from modelplex.metering.cost import micro_to_str, to_micro
from modelplex.runtime import key_digest
from modelplex.server.adminauth import admin_authorized
from modelplex.services import Services
from modelplex.storage.base import (
    BudgetRule,
    BudgetSpec,
    Conflict,
    KeyRecord,
    LimitSpec,
    NotFound,
    TeamRecord,
    UserRecord,
    period_reset,
)

KEY_PREFIX = "sk-mpx-"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Limits(Model):
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    concurrency: int | None = Field(None, gt=0)


class Budget(Model):
    period: Literal["day", "month", "total"] = "month"
    amount: float = Field(gt=0, description="In the reporting currency, e.g. 50.0 (EUR).")
    hard: bool = True


class KeyCreate(Model):
    name: str = Field(min_length=1, max_length=200)
    team: str = Field("default", min_length=1)
    user: str | None = None
    models: list[str] | None = Field(None, description="Models and routes this key may use; omitted: all.")
    routes: list[str] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    expires_at: dt.datetime | None = None
    limits: Limits = Field(default_factory=Limits)
    budgets: list[Budget] = Field(default_factory=list)


class KeyUpdate(Model):
    name: str | None = Field(None, min_length=1, max_length=200)
    team: str | None = None
    user: str | None = None
    models: list[str] | None = None
    routes: list[str] | None = None
    metadata: dict[str, Any] | None = None
    expires_at: dt.datetime | None = None
    limits: Limits | None = None
    budgets: list[Budget] | None = None


class KeyOut(Model):
    id: str
    name: str
    prefix: str
    team: str
    user: str | None
    models: list[str] | None
    routes: list[str] | None
    metadata: dict[str, Any]
    limits: Limits
    budgets: list[Budget]
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="The secret. Shown once: only its HMAC is stored.")


class TeamIn(Model):
    name: str = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)
    limits: Limits = Field(default_factory=Limits)
    budgets: list[Budget] = Field(default_factory=list)


class UserIn(Model):
    id: str = Field(min_length=1)
    team: str = "default"
    metadata: dict[str, Any] = Field(default_factory=dict)
    limits: Limits = Field(default_factory=Limits)
    budgets: list[Budget] = Field(default_factory=list)


def _ts(value: float | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(value, tz=dt.UTC) if value is not None else None


def _limits(spec: LimitSpec) -> Limits:
    return Limits(rpm=spec.rpm, tpm=spec.tpm, concurrency=spec.concurrency)


def _budgets_out(specs: tuple[BudgetSpec, ...]) -> list[Budget]:
    return [Budget(period=b.period, amount=float(micro_to_str(b.amount_micro)), hard=b.hard) for b in specs]


def _budgets_in(budgets: list[Budget]) -> tuple[BudgetSpec, ...]:
    try:
        return tuple(BudgetSpec(b.period, to_micro(b.amount), b.hard) for b in budgets)
    except ValueError as exc:
        raise HTTPException(422, f"budget amount: {exc}") from None


def key_out(r: KeyRecord) -> KeyOut:
    return KeyOut(
        id=r.id,
        name=r.name,
        prefix=r.prefix,
        team=r.team,
        user=r.user,
        models=list(r.models) if r.models is not None else None,
        routes=list(r.routes) if r.routes is not None else None,
        metadata=r.metadata,
        limits=_limits(r.limits),
        budgets=_budgets_out(r.budgets),
        created_at=_ts(r.created_at) or dt.datetime.now(dt.UTC),
        expires_at=_ts(r.expires_at),
        revoked_at=_ts(r.revoked_at),
    )


def build_admin(svc: Services) -> FastAPI:
    def admin(request: Request) -> None:
        if not admin_authorized(svc.runtime(), request.scope):
            raise HTTPException(401, "An admin key is required: Authorization: Bearer <server.admin_key>.")

    # Every operation requires the admin key; the OpenAPI document and its docs page are public.
    app = FastAPI(
        title="modelplex admin API",
        version="1",
        openapi_url="/admin/openapi.json",
        docs_url="/admin/docs",
        redoc_url=None,
        dependencies=[Depends(admin)],
    )

    def stores() -> Any:
        if svc.stores is None:
            raise HTTPException(503, "The stores are not open yet.")
        return svc.stores.keys

    def check_names(models: list[str] | None) -> None:
        rt = svc.runtime()
        unknown = [m for m in models or [] if m not in rt.models and m not in rt.routes]
        if unknown:
            raise HTTPException(422, f"unknown models or routes: {', '.join(unknown)}")

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": f"not found: {exc.args[0] if exc.args else ''}"}, status_code=404)

    @app.exception_handler(Conflict)
    async def conflict(request: Request, exc: Conflict) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.post("/admin/keys", status_code=201, response_model=KeyCreated, tags=["keys"])
    async def create_key(body: KeyCreate) -> KeyCreated:
        check_names(body.models)
        check_names(body.routes)
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        record = KeyRecord(
            id="key_" + secrets.token_hex(8),
            name=body.name,
            digest=key_digest(svc.runtime().hmac_secret, secret),
            team=body.team,
            user=body.user,
            models=tuple(body.models) if body.models is not None else None,
            routes=tuple(body.routes) if body.routes is not None else None,
            metadata=body.metadata,
            limits=LimitSpec(**body.limits.model_dump()),
            budgets=_budgets_in(body.budgets),
            created_at=time.time(),
            expires_at=body.expires_at.timestamp() if body.expires_at else None,
            prefix=secret[:12],
        )
        await stores().create_key(record)
        svc.keys.forget()
        return KeyCreated(**key_out(record).model_dump(), key=secret)

    @app.get("/admin/keys", response_model=list[KeyOut], tags=["keys"])
    async def list_keys(team: str | None = None, user: str | None = None) -> list[KeyOut]:
        return [key_out(r) for r in await stores().list_keys(team=team, user=user)]

    @app.get("/admin/keys/{key_id}", response_model=KeyOut, tags=["keys"])
    async def get_key(key_id: str) -> KeyOut:
        record = await stores().key_by_id(key_id)
        if record is None:
            raise NotFound(key_id)
        return key_out(record)

    @app.patch("/admin/keys/{key_id}", response_model=KeyOut, tags=["keys"])
    async def update_key(key_id: str, body: KeyUpdate) -> KeyOut:
        changes: dict[str, Any] = {}
        for name in body.model_fields_set:
            value = getattr(body, name)
            if name in ("models", "routes"):
                check_names(value)
                value = tuple(value) if value is not None else None
            elif name == "limits":
                value = LimitSpec(**(value or Limits()).model_dump())
            elif name == "budgets":
                value = _budgets_in(value or [])
            elif name == "expires_at":
                value = value.timestamp() if value is not None else None
            changes[name] = value
        record = await stores().update_key(key_id, **changes)
        svc.keys.forget()
        return key_out(record)

    @app.post("/admin/keys/{key_id}/revoke", response_model=KeyOut, tags=["keys"])
    async def revoke_key(key_id: str) -> KeyOut:
        record = await stores().revoke_key(key_id, time.time())
        svc.keys.forget()
        return key_out(record)

    @app.put("/admin/teams/{name}", response_model=TeamIn, tags=["teams"])
    async def put_team(name: str, body: TeamIn) -> TeamIn:
        if body.name != name:
            raise HTTPException(422, "the name in the path and the body differ")
        await stores().put_team(
            TeamRecord(
                name=name,
                metadata=body.metadata,
                limits=LimitSpec(**body.limits.model_dump()),
                budgets=_budgets_in(body.budgets),
                created_at=time.time(),
            )
        )
        svc.keys.forget()
        return body

    @app.get("/admin/teams", response_model=list[TeamIn], tags=["teams"])
    async def list_teams() -> list[TeamIn]:
        return [
            TeamIn(
                name=t.name, metadata=t.metadata, limits=_limits(t.limits), budgets=_budgets_out(t.budgets)
            )
            for t in await stores().list_teams()
        ]

    @app.delete("/admin/teams/{name}", status_code=204, tags=["teams"])
    async def delete_team(name: str) -> None:
        await stores().delete_team(name)
        svc.keys.forget()

    @app.put("/admin/users/{user_id}", response_model=UserIn, tags=["users"])
    async def put_user(user_id: str, body: UserIn) -> UserIn:
        if body.id != user_id:
            raise HTTPException(422, "the id in the path and the body differ")
        await stores().put_user(
            UserRecord(
                id=user_id,
                team=body.team,
                metadata=body.metadata,
                limits=LimitSpec(**body.limits.model_dump()),
                budgets=_budgets_in(body.budgets),
                created_at=time.time(),
            )
        )
        svc.keys.forget()
        return body

    @app.get("/admin/users", response_model=list[UserIn], tags=["users"])
    async def list_users(team: str | None = None) -> list[UserIn]:
        return [
            UserIn(
                id=u.id,
                team=u.team,
                metadata=u.metadata,
                limits=_limits(u.limits),
                budgets=_budgets_out(u.budgets),
            )
            for u in await stores().list_users(team=team)
        ]

    @app.delete("/admin/users/{user_id}", status_code=204, tags=["users"])
    async def delete_user(user_id: str) -> None:
        await stores().delete_user(user_id)
        svc.keys.forget()

    @app.get("/admin/health", tags=["health"])
    async def health() -> dict[str, Any]:
        now = time.time()
        out = {}
        for name in svc.runtime().endpoints:
            h = svc.health.of(name)
            b = h.breaker
            out[name] = {
                "breaker": b.state if b.state != "open" or now < b.open_until else "half_open",
                "open_until": _ts(b.open_until) if b.state == "open" else None,
                "cooling_down_until": _ts(h.cooldown_until) if h.cooldown_until > now else None,
                "in_flight": h.inflight,
                "ewma_ttft_ms": _ms(h.ewma_ttft),
                "ewma_total_ms": _ms(h.ewma_total),
            }
        store_ok = svc.admission is None or svc.admission._store_ok()
        return {"deployments": out, "counter_store": "ok" if store_ok else "unreachable"}

    @app.get("/admin/budgets", tags=["budgets"])
    async def budgets(scope: str) -> list[dict[str, Any]]:
        """State of the budgets of one scope, e.g. `team:research` or `key:key_3f9a...`."""
        if svc.stores is None:
            raise HTTPException(503, "The stores are not open yet.")
        kind, _, name = scope.partition(":")
        specs: list[BudgetSpec] = []
        if kind == "team":
            team = await svc.stores.keys.team(name)
            specs += list(team.budgets) if team else []
        elif kind == "key":
            key = await svc.stores.keys.key_by_id(name)
            specs += list(key.budgets) if key else []
        elif kind == "user":
            user = await svc.stores.keys.user(name)
            specs += list(user.budgets) if user else []
        specs += [
            BudgetSpec(b.period, to_micro(b.amount), b.hard)
            for b in svc.runtime().config.budgets
            if b.scope == kind and b.name == name
        ]
        now = time.time()
        out = []
        for spec in specs:
            rule = BudgetRule(scope, spec.period, spec.amount_micro, spec.hard)
            state = await svc.stores.counters.budget_state(rule, now)
            out.append(
                {
                    "scope": scope,
                    "period": spec.period,
                    "hard": spec.hard,
                    "cap": micro_to_str(spec.amount_micro),
                    "spent": micro_to_str(state.spent_micro),
                    "reserved": micro_to_str(state.reserved_micro),
                    "currency": svc.meter.currency,
                    "resets_at": _ts(period_reset(spec.period, now)),
                }
            )
        return out

    return app


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None
