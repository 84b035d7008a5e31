"""The SQLite schema: every table of keys, counters and the ledger, in one file."""

from __future__ import annotations

from typing import Final

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE api_key (
            id TEXT PRIMARY KEY, name TEXT NOT NULL, digest BLOB NOT NULL UNIQUE, team TEXT NOT NULL,
            user_id TEXT, models TEXT, routes TEXT, metadata TEXT NOT NULL, limits TEXT NOT NULL,
            budgets TEXT NOT NULL, created_at REAL NOT NULL, expires_at REAL, revoked_at REAL,
            prefix TEXT NOT NULL)""",
        "CREATE INDEX api_key_team ON api_key (team)",
        "CREATE INDEX api_key_user ON api_key (user_id)",
        """CREATE TABLE team (
            name TEXT PRIMARY KEY, metadata TEXT NOT NULL, limits TEXT NOT NULL, budgets TEXT NOT NULL,
            created_at REAL NOT NULL)""",
        """CREATE TABLE app_user (
            id TEXT PRIMARY KEY, team TEXT NOT NULL, metadata TEXT NOT NULL, limits TEXT NOT NULL,
            budgets TEXT NOT NULL, created_at REAL NOT NULL)""",
        "CREATE INDEX app_user_team ON app_user (team)",
        """CREATE TABLE ledger (
            request_id TEXT PRIMARY KEY, at REAL NOT NULL, key_id TEXT, team TEXT, user_id TEXT,
            route TEXT, model TEXT, deployment TEXT, cost_micro INTEGER NOT NULL, currency TEXT NOT NULL,
            report_cost_micro INTEGER NOT NULL, estimated INTEGER NOT NULL, unpriced INTEGER NOT NULL)""",
        "CREATE INDEX ledger_team ON ledger (team, at)",
        "CREATE INDEX ledger_key ON ledger (key_id, at)",
        "CREATE INDEX ledger_at ON ledger (at)",
        # One row per counter and second; `expires` (second + window + 1) lets a sweep drop the
        # rows of counters nobody takes from any more.
        """CREATE TABLE rate_bucket (
            counter TEXT NOT NULL, second INTEGER NOT NULL, amount INTEGER NOT NULL,
            expires INTEGER NOT NULL, PRIMARY KEY (counter, second)) WITHOUT ROWID""",
        "CREATE INDEX rate_bucket_expires ON rate_bucket (expires)",
        """CREATE TABLE lease (
            scope TEXT NOT NULL, lease TEXT NOT NULL, expires_at REAL NOT NULL,
            PRIMARY KEY (scope, lease)) WITHOUT ROWID""",
        "CREATE INDEX lease_expires ON lease (expires_at)",
        """CREATE TABLE budget (
            counter TEXT PRIMARY KEY, spent INTEGER NOT NULL, reserved INTEGER NOT NULL,
            expires_at REAL) WITHOUT ROWID""",
        "CREATE INDEX budget_expires ON budget (expires_at) WHERE expires_at IS NOT NULL",
        # `counters` is the JSON list of budget counters the reservation holds an amount in.
        """CREATE TABLE reservation (
            id TEXT PRIMARY KEY, amount INTEGER NOT NULL, counters TEXT NOT NULL, state TEXT NOT NULL,
            expires_at REAL NOT NULL, forget_at REAL NOT NULL) WITHOUT ROWID""",
        "CREATE INDEX reservation_open ON reservation (expires_at) WHERE state = 'open'",
        "CREATE INDEX reservation_forget ON reservation (forget_at)",
    ),
)
