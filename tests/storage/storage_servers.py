"""Where the storage suite finds its real servers, and what it does when one is missing."""

from __future__ import annotations

import os

import pytest

REDIS_URL = os.environ.get("MODELPLEX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get("MODELPLEX_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def unavailable(reason: str) -> None:
    """Skip: a server this test needs is not there. Under CI=true that is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: servers are required)")
    pytest.skip(reason)
