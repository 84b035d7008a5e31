"""Start the gateway: load and check the config, build the services, run uvicorn."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import uvicorn

from modelplex.app import build_app
from modelplex.config.load import load_config
from modelplex.config.schema import Config
from modelplex.limits.report import budget_source, dashboard_budgets
from modelplex.limits.secret import resolve_hmac_secret
from modelplex.metering.catalog import Catalog, load_catalog
from modelplex.observability.exposition import prepare_multiprocess
from modelplex.observability.install import install as install_observability
from modelplex.observability.requestlog import find as find_requestlog
from modelplex.observability.requestlog_install import install as install_requestlog
from modelplex.providers.registry import Registry, load_registry
from modelplex.runtime import RuntimeHolder, build_runtime, config_checks
from modelplex.server import sched
from modelplex.server.http import ASGIApp
from modelplex.services import Services
from modelplex.supervisor import Supervisor

CONFIG_ENV = "MODELPLEX_CONFIG"
WORKERS_ENV = "MODELPLEX_WORKERS"


def services_for(config: Config, registry: Registry, path: Path | None, env: Mapping[str, str],
                 catalog: Catalog | None = None) -> Services:
    catalog = catalog or load_catalog()
    runtime = build_runtime(config, registry, str(path) if path else "<memory>", resolve_hmac_secret(config),
                            catalog=catalog)
    svc = Services(holder=RuntimeHolder(runtime, path, env, catalog))
    install_requestlog(svc)  # the request log, POST /v1/feedback and the dashboard
    install_observability(svc, env, budgets=budget_source(svc))  # metrics, traces, alerts
    log = find_requestlog(svc)
    if log is not None and log.dashboard is not None:
        log.dashboard.budgets = dashboard_budgets(svc)
    return svc


def load_services(path: Path, env: Mapping[str, str]) -> Services:
    registry = load_registry()
    config = load_config(path, env, config_checks(registry))
    return services_for(config, registry, path, env)


def factory() -> ASGIApp:
    """Entry point of each worker process when serving with several workers."""
    from modelplex.cli import environment

    env = environment()
    svc = load_services(Path(env[CONFIG_ENV]), env)
    svc.workers = int(env.get(WORKERS_ENV, "1"))
    # A worker is a fresh interpreter: without this, modelplex's own INFO lines (drain, reload,
    # breaker) are dropped in every worker.
    _configure_logging(svc.runtime().config.server.log_level)
    return build_app(svc)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
    )


def run(
    path: Path, env: Mapping[str, str], *, host: str | None, port: int | None, workers: int | None
) -> None:
    svc = load_services(path, env)  # fails fast, before any worker starts, on a bad config
    server = svc.runtime().config.server
    _configure_logging(server.log_level)
    options = {
        "host": host or server.host,
        "port": server.port if port is None else port,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,  # no X-Forwarded-* rewriting on the hot path
        "log_level": server.log_level,
        "timeout_graceful_shutdown": int(server.drain_deadline_s + 0.999),
    }
    n = workers or server.workers
    # Before any worker starts: they inherit it.
    logging.getLogger("modelplex.serve").info("CPU scheduling: %s", sched.apply(server.cpu_scheduling, n))
    if n == 1:
        uvicorn.Server(uvicorn.Config(build_app(svc), **options)).run()  # type: ignore[arg-type]
        return
    os.environ[CONFIG_ENV] = str(path.resolve())  # read by each worker's factory()
    os.environ[WORKERS_ENV] = str(n)
    # The workers share their metrics through files in one directory, emptied before they start.
    os.environ.update(prepare_multiprocess(
        svc.runtime().config.observability.metrics.multiprocess_dir, env, int(options["port"])))  # type: ignore[call-overload]
    config = uvicorn.Config("modelplex.serve:factory", factory=True, workers=n, **options)  # type: ignore[arg-type]
    Supervisor(config, sockets=[config.bind_socket()]).run()
