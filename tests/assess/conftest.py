"""A generated request log shared by the assess tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "assess"))

from generate import generate  # noqa: E402

ROWS = 30_000


@pytest.fixture(scope="session")
def log_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("assess") / "requests.db"
    generate(path, ROWS, seed=3)
    return path
