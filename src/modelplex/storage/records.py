"""Records as table rows: the one translation between the storage dataclasses and the columns the
SQL backends (SQLite, PostgreSQL) share, plus the rule for what `update_key` may change."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Final

from modelplex.storage.base import (
    BudgetSpec,
    KeyRecord,
    LedgerEntry,
    LimitSpec,
    TeamRecord,
    UserRecord,
)

KEY_COLUMNS: Final = ("id", "name", "digest", "team", "user_id", "models", "routes", "metadata",
                      "limits", "budgets", "created_at", "expires_at", "revoked_at", "prefix")
TEAM_COLUMNS: Final = ("name", "metadata", "limits", "budgets", "created_at")
USER_COLUMNS: Final = ("id", "team", "metadata", "limits", "budgets", "created_at")
LEDGER_COLUMNS: Final = ("request_id", "at", "key_id", "team", "user_id", "route", "model", "deployment",
                         "cost_micro", "currency", "report_cost_micro", "estimated", "unpriced")

_KEY_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(KeyRecord))
_FIXED: Final = frozenset({"id", "digest"})


def apply_key_changes(record: KeyRecord, changes: Mapping[str, Any]) -> KeyRecord:
    """`record` with the named fields replaced; id and digest never change."""
    wrong = set(changes) - (_KEY_FIELDS - _FIXED)
    if wrong:
        raise ValueError(f"update_key cannot change {', '.join(sorted(wrong))}")
    return dataclasses.replace(record, **changes)


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _limits(raw: str) -> LimitSpec:
    return LimitSpec(**json.loads(raw))


def _budgets(raw: str) -> tuple[BudgetSpec, ...]:
    return tuple(BudgetSpec(**b) for b in json.loads(raw))


def _names(raw: str | None) -> tuple[str, ...] | None:
    return None if raw is None else tuple(json.loads(raw))


def key_row(r: KeyRecord) -> tuple[Any, ...]:
    return (r.id, r.name, r.digest, r.team, r.user,
            None if r.models is None else _dump(list(r.models)),
            None if r.routes is None else _dump(list(r.routes)),
            _dump(r.metadata), _dump(dataclasses.asdict(r.limits)),
            _dump([dataclasses.asdict(b) for b in r.budgets]),
            r.created_at, r.expires_at, r.revoked_at, r.prefix)


def key_record(row: Mapping[str, Any]) -> KeyRecord:
    return KeyRecord(
        id=row["id"], name=row["name"], digest=bytes(row["digest"]), team=row["team"],
        user=row["user_id"], models=_names(row["models"]), routes=_names(row["routes"]),
        metadata=json.loads(row["metadata"]), limits=_limits(row["limits"]),
        budgets=_budgets(row["budgets"]), created_at=row["created_at"], expires_at=row["expires_at"],
        revoked_at=row["revoked_at"], prefix=row["prefix"],
    )


def team_row(t: TeamRecord) -> tuple[Any, ...]:
    return (t.name, _dump(t.metadata), _dump(dataclasses.asdict(t.limits)),
            _dump([dataclasses.asdict(b) for b in t.budgets]), t.created_at)


def team_record(row: Mapping[str, Any]) -> TeamRecord:
    return TeamRecord(name=row["name"], metadata=json.loads(row["metadata"]), limits=_limits(row["limits"]),
                      budgets=_budgets(row["budgets"]), created_at=row["created_at"])


def user_row(u: UserRecord) -> tuple[Any, ...]:
    return (u.id, u.team, _dump(u.metadata), _dump(dataclasses.asdict(u.limits)),
            _dump([dataclasses.asdict(b) for b in u.budgets]), u.created_at)


def user_record(row: Mapping[str, Any]) -> UserRecord:
    return UserRecord(id=row["id"], team=row["team"], metadata=json.loads(row["metadata"]),
                      limits=_limits(row["limits"]), budgets=_budgets(row["budgets"]),
                      created_at=row["created_at"])


def ledger_row(e: LedgerEntry) -> tuple[Any, ...]:
    return (e.request_id, e.at, e.key_id, e.team, e.user, e.route, e.model, e.deployment,
            e.cost_micro, e.currency, e.report_cost_micro, e.estimated, e.unpriced)


def ledger_filter(team: str | None, key_id: str | None, since: float | None,
                  placeholder: str) -> tuple[str, list[Any]]:
    """A WHERE clause for `Ledger.total`; `placeholder` is '?' or '$' (numbered)."""
    clauses: list[str] = []
    args: list[Any] = []
    for column, op, value in (("team", "=", team), ("key_id", "=", key_id), ("at", ">=", since)):
        if value is not None:
            args.append(value)
            mark = "?" if placeholder == "?" else f"${len(args)}"
            clauses.append(f"{column} {op} {mark}")
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args
