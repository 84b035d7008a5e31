"""Test helpers: simulators on a background event loop, and real gateway processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import yaml

from modelplex.simulator.server import ProviderSpec, SimProvider

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
GATEWAY_KEY = "sk-test-gateway-key-0001"
ADMIN_KEY = "sk-test-admin-key-0001"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def services_up(ports: tuple[int, ...] = (6379, 5432)) -> None:
    """Redis and PostgreSQL on this machine answer; else skip (fail under CI)."""
    import socket

    import pytest

    for port in ports:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            if in_ci():
                raise
            pytest.skip(f"no server on 127.0.0.1:{port}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopThread:
    """An asyncio loop on a daemon thread: simulators keep answering while a test blocks."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="sim-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class Sims:
    """Simulated providers by name, started on the loop thread."""

    def __init__(self, loop: LoopThread) -> None:
        self.loop = loop
        self.providers: dict[str, SimProvider] = {}

    def start(self, name: str, kind: str, **spec: Any) -> SimProvider:
        provider = SimProvider(ProviderSpec(name=name, kind=kind, **spec))
        self.loop.run(provider.start())
        self.providers[name] = provider
        return provider

    def __getitem__(self, name: str) -> SimProvider:
        return self.providers[name]

    def reset(self) -> None:
        for p in self.providers.values():
            p.state.reset()

    def stop(self) -> None:
        for p in self.providers.values():
            self.loop.run(p.stop())


class Gateway:
    """A real `modelplex serve` process on a free port, with its config file."""

    def __init__(self, config: dict[str, Any], tmp: Path, workers: int = 1, env: dict[str, str] | None = None,
                 name: str = "gateway") -> None:
        self.config_path = tmp / f"{name}.yaml"
        self._storage = {"sqlite_path": str(tmp / f"{name}.db"), **config.get("storage", {})}
        config = {**config, "storage": self._storage}
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelplex", "serve", "--config", str(self.config_path),
             "--port", str(self.port), "--workers", str(workers)],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"gateway not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def write_config(self, config: dict[str, Any] | str) -> None:
        if not isinstance(config, str):
            config = {**config, "storage": {**self._storage, **config.get("storage", {})}}
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.config_path)

    def signal(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


def deployment(name: str, provider: str, sim: SimProvider, model: str, **extra: Any) -> dict[str, Any]:
    base = f"{sim.url}/v1" if provider in ("openai", "openai_compatible", "groq", "vllm") else sim.url
    return {"name": name, "provider": provider, "model": model, "base_url": base, "api_key": "sim-upstream-key",
            "timeouts": {"connect": 2, "first_token": 5, "idle": 5, "total": 20}, **extra}


def base_config(deployments: list[dict[str, Any]], models: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": 0, "admin_key": ADMIN_KEY, "reload": True,
                   "log_level": "info"},
        "keys": [{"name": "test", "key": GATEWAY_KEY, "team": "testers"}],
        "deployments": deployments,
        "models": models,
        **extra,
    }
