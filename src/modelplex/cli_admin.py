"""`modelplex keys`, `teams`, `users`: the admin API from the command line.

The gateway URL and admin key come from --url / --admin-key or MODELPLEX_URL / MODELPLEX_ADMIN_KEY.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import click


class Admin:
    def __init__(self, url: str, key: str | None) -> None:
        self.url = url.rstrip("/")
        self.key = key

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, query: dict[str, str] | None = None
    ) -> Any:
        if not self.key:
            raise click.UsageError("an admin key is needed: --admin-key or MODELPLEX_ADMIN_KEY")
        if not self.url.startswith(("http://", "https://")):
            raise click.UsageError(f"--url must be an http(s) URL, not {self.url!r}")
        url = f"{self.url}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(  # noqa: S310 (the scheme is checked above)
            url,
            data=data,
            method=method,
            headers={"authorization": f"Bearer {self.key}", "content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310
                raw = resp.read()
        except urllib.error.HTTPError as err:
            detail = err.read().decode("utf-8", "replace")
            click.echo(f"error {err.code}: {detail}", err=True)
            sys.exit(1)
        except urllib.error.URLError as err:
            click.echo(f"cannot reach {self.url}: {err.reason}", err=True)
            sys.exit(1)
        return json.loads(raw) if raw else None


def _out(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def _admin_options(fn: Any) -> Any:
    fn = click.option("--admin-key", envvar="MODELPLEX_ADMIN_KEY", default=None, help="The admin key.")(fn)
    fn = click.option(
        "--url",
        envvar="MODELPLEX_URL",
        default="http://127.0.0.1:8080",
        show_default=True,
        help="The gateway.",
    )(fn)
    return fn


def _limits(rpm: int | None, tpm: int | None, concurrency: int | None) -> dict[str, int]:
    return {k: v for k, v in {"rpm": rpm, "tpm": tpm, "concurrency": concurrency}.items() if v is not None}


def _budgets(values: tuple[str, ...]) -> list[dict[str, Any]]:
    """`50/month`, `5/day`, `100/total`, `20/month/soft`."""
    out = []
    for v in values:
        parts = v.split("/")
        try:
            amount = float(parts[0])
        except ValueError:
            raise click.BadParameter(f"{v!r}: expected AMOUNT/PERIOD[/soft]") from None
        period = parts[1] if len(parts) > 1 else "month"
        out.append({"amount": amount, "period": period, "hard": not (len(parts) > 2 and parts[2] == "soft")})
    return out


limit_opts = [
    click.option("--rpm", type=int),
    click.option("--tpm", type=int),
    click.option("--concurrency", type=int),
    click.option("--budget", "budget", multiple=True, help="AMOUNT/PERIOD[/soft], e.g. 50/month."),
]


def _with_limits(fn: Any) -> Any:
    for opt in reversed(limit_opts):
        fn = opt(fn)
    return fn


@click.group()
def keys() -> None:
    """Create, list, update and revoke virtual keys."""


@keys.command("create")
@click.option("--name", required=True)
@click.option("--team", default="default", show_default=True)
@click.option("--user", default=None)
@click.option("--models", default=None, help="Comma-separated models and routes this key may use.")
@click.option("--expires", default=None, help="ISO date or time, e.g. 2026-12-31.")
@click.option("--metadata", default=None, help="JSON object.")
@_with_limits
@_admin_options
def keys_create(
    name: str,
    team: str,
    user: str | None,
    models: str | None,
    expires: str | None,
    metadata: str | None,
    rpm: int | None,
    tpm: int | None,
    concurrency: int | None,
    budget: tuple[str, ...],
    url: str,
    admin_key: str | None,
) -> None:
    """Create a key. Its secret is printed once and never again."""
    body: dict[str, Any] = {
        "name": name,
        "team": team,
        "limits": _limits(rpm, tpm, concurrency),
        "budgets": _budgets(budget),
    }
    if user:
        body["user"] = user
    if models:
        body["models"] = [m.strip() for m in models.split(",") if m.strip()]
    if expires:
        body["expires_at"] = expires if "T" in expires else f"{expires}T00:00:00Z"
    if metadata:
        body["metadata"] = json.loads(metadata)
    _out(Admin(url, admin_key).call("POST", "/admin/keys", body))


@keys.command("list")
@click.option("--team", default=None)
@click.option("--user", default=None)
@_admin_options
def keys_list(team: str | None, user: str | None, url: str, admin_key: str | None) -> None:
    """List keys (never their secrets)."""
    query = {k: v for k, v in {"team": team, "user": user}.items() if v}
    _out(Admin(url, admin_key).call("GET", "/admin/keys", query=query))


@keys.command("update")
@click.argument("key_id")
@click.option("--name", default=None)
@click.option("--models", default=None)
@_with_limits
@_admin_options
def keys_update(
    key_id: str,
    name: str | None,
    models: str | None,
    rpm: int | None,
    tpm: int | None,
    concurrency: int | None,
    budget: tuple[str, ...],
    url: str,
    admin_key: str | None,
) -> None:
    """Change a key's name, models, limits or budgets."""
    body: dict[str, Any] = {}
    if name:
        body["name"] = name
    if models is not None:
        body["models"] = [m.strip() for m in models.split(",") if m.strip()]
    if rpm or tpm or concurrency:
        body["limits"] = _limits(rpm, tpm, concurrency)
    if budget:
        body["budgets"] = _budgets(budget)
    _out(Admin(url, admin_key).call("PATCH", f"/admin/keys/{key_id}", body))


@keys.command("revoke")
@click.argument("key_id")
@_admin_options
def keys_revoke(key_id: str, url: str, admin_key: str | None) -> None:
    """Revoke a key: refused everywhere within seconds."""
    _out(Admin(url, admin_key).call("POST", f"/admin/keys/{key_id}/revoke"))


@click.group()
def teams() -> None:
    """Create, list and delete teams (and set their limits and budgets)."""


@teams.command("put")
@click.argument("name")
@_with_limits
@_admin_options
def teams_put(
    name: str,
    rpm: int | None,
    tpm: int | None,
    concurrency: int | None,
    budget: tuple[str, ...],
    url: str,
    admin_key: str | None,
) -> None:
    body = {"name": name, "limits": _limits(rpm, tpm, concurrency), "budgets": _budgets(budget)}
    _out(Admin(url, admin_key).call("PUT", f"/admin/teams/{name}", body))


@teams.command("list")
@_admin_options
def teams_list(url: str, admin_key: str | None) -> None:
    _out(Admin(url, admin_key).call("GET", "/admin/teams"))


@teams.command("delete")
@click.argument("name")
@_admin_options
def teams_delete(name: str, url: str, admin_key: str | None) -> None:
    Admin(url, admin_key).call("DELETE", f"/admin/teams/{name}")


@click.group()
def users() -> None:
    """Create, list and delete users (and set their limits and budgets)."""


@users.command("put")
@click.argument("user_id")
@click.option("--team", default="default", show_default=True)
@_with_limits
@_admin_options
def users_put(
    user_id: str,
    team: str,
    rpm: int | None,
    tpm: int | None,
    concurrency: int | None,
    budget: tuple[str, ...],
    url: str,
    admin_key: str | None,
) -> None:
    body = {
        "id": user_id,
        "team": team,
        "limits": _limits(rpm, tpm, concurrency),
        "budgets": _budgets(budget),
    }
    _out(Admin(url, admin_key).call("PUT", f"/admin/users/{user_id}", body))


@users.command("list")
@click.option("--team", default=None)
@_admin_options
def users_list(team: str | None, url: str, admin_key: str | None) -> None:
    _out(Admin(url, admin_key).call("GET", "/admin/users", query={"team": team} if team else None))


@users.command("delete")
@click.argument("user_id")
@_admin_options
def users_delete(user_id: str, url: str, admin_key: str | None) -> None:
    Admin(url, admin_key).call("DELETE", f"/admin/users/{user_id}")
