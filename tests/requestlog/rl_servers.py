"""Where the request-log tests find PostgreSQL, and what they do when it is missing."""

from __future__ import annotations

import os

import pytest

POSTGRES_DSN = os.environ.get("MODELPLEX_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def unavailable(reason: str) -> None:
    """Skip: PostgreSQL is not there. Under CI=true that is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: servers are required)")
    pytest.skip(reason)
