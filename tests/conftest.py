from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import Gateway, LoopThread, Sims, base_config, deployment  # noqa: E402


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.stop()


@pytest.fixture(scope="session")
def sims(loop_thread: LoopThread) -> Iterator[Sims]:
    s = Sims(loop_thread)
    s.start("openai", "openai")
    s.start("anthropic", "anthropic")
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _reset_sims(request: pytest.FixtureRequest) -> None:
    if "sims" in request.fixturenames:
        request.getfixturevalue("sims").reset()


@pytest.fixture(scope="session")
def gateway(sims: Sims, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """One gateway process for the SDK and API tests: models `oa` (OpenAI) and `an` (Anthropic)."""
    tmp = tmp_path_factory.mktemp("gateway")
    config = base_config(
        [deployment("oa-dep", "openai", sims["openai"], "gpt-sim", capabilities={"context_window": 100000}),
         deployment("an-dep", "anthropic", sims["anthropic"], "claude-sim",
                    capabilities={"context_window": 100000, "prefill": True}),
         deployment("oa-embed", "openai", sims["openai"], "embed-sim")],
        [{"name": "oa", "deployments": ["oa-dep"]},
         {"name": "an", "deployments": ["an-dep"]},
         {"name": "embed", "deployments": ["oa-embed"]}],
    )
    gw = Gateway(config, tmp)
    yield gw
    gw.stop()
