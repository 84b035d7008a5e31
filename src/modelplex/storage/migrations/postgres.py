"""The PostgreSQL schema: keys, teams, users and the ledger."""

from __future__ import annotations

from typing import Final

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE api_key (
            id text PRIMARY KEY, name text NOT NULL, digest bytea NOT NULL UNIQUE, team text NOT NULL,
            user_id text, models jsonb, routes jsonb, metadata jsonb NOT NULL, limits jsonb NOT NULL,
            budgets jsonb NOT NULL, created_at double precision NOT NULL, expires_at double precision,
            revoked_at double precision, prefix text NOT NULL)""",
        "CREATE INDEX api_key_team ON api_key (team)",
        "CREATE INDEX api_key_user ON api_key (user_id)",
        """CREATE TABLE team (
            name text PRIMARY KEY, metadata jsonb NOT NULL, limits jsonb NOT NULL, budgets jsonb NOT NULL,
            created_at double precision NOT NULL)""",
        """CREATE TABLE app_user (
            id text PRIMARY KEY, team text NOT NULL, metadata jsonb NOT NULL, limits jsonb NOT NULL,
            budgets jsonb NOT NULL, created_at double precision NOT NULL)""",
        "CREATE INDEX app_user_team ON app_user (team)",
        """CREATE TABLE ledger (
            request_id text PRIMARY KEY, at double precision NOT NULL, key_id text, team text,
            user_id text, route text, model text, deployment text, cost_micro bigint NOT NULL,
            currency text NOT NULL, report_cost_micro bigint NOT NULL, estimated boolean NOT NULL,
            unpriced boolean NOT NULL)""",
        "CREATE INDEX ledger_team ON ledger (team, at)",
        "CREATE INDEX ledger_key ON ledger (key_id, at)",
        "CREATE INDEX ledger_at ON ledger (at)",
    ),
)
