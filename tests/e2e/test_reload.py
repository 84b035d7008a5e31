"""Config reload on file change and SIGHUP, without dropping requests; a bad file is rejected."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from helpers import GATEWAY_KEY, Gateway, Sims, base_config, deployment


def config(sims: Sims, models: list[str], reload: bool = True) -> dict[str, Any]:
    deps = [deployment("slow", "openai", sims["openai"], "gpt-sim+tokens_per_s=25+output_tokens=40"),
            deployment("quick", "openai", sims["openai"], "gpt-sim")]
    cfg = base_config(deps, [{"name": m, "deployments": ["slow" if m == "slow" else "quick"]} for m in models])
    cfg["server"]["reload"] = reload
    return cfg


def wait_for(predicate: Any, timeout: float = 8.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def works(client: openai.OpenAI, model: str) -> bool:
    try:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    except openai.NotFoundError:
        return False
    return True


@pytest.fixture
def gw(sims: Sims, tmp_path: Path) -> Iterator[Gateway]:
    g = Gateway(config(sims, ["slow", "a"]), tmp_path)
    yield g
    g.stop()


def test_reload_on_change_keeps_streams_and_rejects_bad_files(gw: Gateway, sims: Sims) -> None:
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
    assert works(client, "a") and not works(client, "b")

    result: dict[str, Any] = {}

    def slow_stream() -> None:
        text, finish = "", None
        for chunk in client.chat.completions.create(model="slow", stream=True,
                                                    messages=[{"role": "user", "content": "long"}]):
            for c in chunk.choices:
                text += c.delta.content or ""
                finish = c.finish_reason or finish
        result.update(text=text, finish=finish)

    streamer = threading.Thread(target=slow_stream)
    streamer.start()
    time.sleep(0.3)
    gw.write_config(config(sims, ["slow", "a", "b"]))
    assert wait_for(lambda: works(client, "b")), gw.log()
    streamer.join(10)
    assert result.get("finish") == "stop" and len(result["text"].split()) == 40  # the whole answer, once

    bad = config(sims, ["slow", "a", "c"])
    bad["models"][0]["strategy"] = "telepathy"
    gw.write_config(bad)
    assert wait_for(lambda: "config reload rejected" in gw.log())
    assert works(client, "b") and not works(client, "c")
    with urllib.request.urlopen(f"{gw.url}/readyz") as resp:
        ready = json.loads(resp.read())
    assert ready["status"] == "ready" and "models[0].strategy" in ready["last_reload_error"]


def test_reload_on_sighup(sims: Sims, tmp_path: Path) -> None:
    gw = Gateway(config(sims, ["a"], reload=False), tmp_path)
    try:
        client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=GATEWAY_KEY, max_retries=0)
        gw.write_config(config(sims, ["a", "b"], reload=False))
        time.sleep(1.5)
        assert not works(client, "b")  # no file watching: only SIGHUP reloads
        gw.signal(signal.SIGHUP)
        assert wait_for(lambda: works(client, "b"), 3), gw.log()
        assert gw.proc.poll() is None
    finally:
        gw.stop()
