"""The `modelplex` command: serve, simulate, demo, init, check-config."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import yaml

from modelplex import __version__
from modelplex.config.load import ConfigError


def environment() -> Mapping[str, str]:
    """The one place modelplex reads the process environment."""
    return dict(os.environ)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="modelplex")
def main() -> None:
    """modelplex: one API over many LLM providers, with routing, failover, budgets and metering."""


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default="modelplex.yaml",
    show_default=True,
    help="Config file.",
)
@click.option("--host", default=None, help="Listen address (default: server.host from the config).")
@click.option("--port", type=int, default=None, help="Listen port (default: server.port from the config).")
@click.option("--workers", type=int, default=None, help="Worker processes (default: server.workers).")
def serve(config_path: Path, host: str | None, port: int | None, workers: int | None) -> None:
    """Run the gateway."""
    from modelplex.serve import run

    try:
        run(config_path, environment(), host=host, port=port, workers=workers)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


@main.command("check-config")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def check_config(file: Path) -> None:
    """Validate a config file and print it resolved, secrets redacted."""
    from modelplex.config.load import load_config
    from modelplex.providers.registry import load_registry
    from modelplex.runtime import config_checks

    registry = load_registry()
    try:
        config = load_config(file, environment(), config_checks(registry))
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    resolved = config.model_dump(mode="json")
    click.echo(yaml.safe_dump(resolved, sort_keys=False).rstrip())
    from modelplex.metering.catalog import load_catalog, resolve_price

    catalog = load_catalog()
    unpriced = [d.name for d in config.deployments if resolve_price(d, catalog) is None]
    click.echo(
        f"# ok: {len(config.deployments)} deployment(s), {len(config.models)} model(s), "
        f"{len(config.keys)} key(s)",
        err=True,
    )
    if unpriced:
        click.echo(f"# unpriced deployments (metered as unknown cost): {', '.join(unpriced)}", err=True)


@main.command()
@click.option(
    "--path",
    "target",
    type=click.Path(dir_okay=False, path_type=Path),
    default="modelplex.yaml",
    show_default=True,
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(target: Path, force: bool) -> None:
    """Write a starter modelplex.yaml (OpenAI + Anthropic, keys from the environment)."""
    from modelplex.config.starter import STARTER

    if target.exists() and not force:
        click.echo(f"{target} exists; use --force to overwrite it", err=True)
        sys.exit(1)
    target.write_text(STARTER, encoding="utf-8")
    click.echo(
        f"wrote {target}. Set OPENAI_API_KEY, ANTHROPIC_API_KEY and MODELPLEX_KEY, then run:\n"
        f"  modelplex serve --config {target}"
    )


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Simulator config (YAML); default: an OpenAI and an Anthropic simulator.",
)
def simulate(config_path: Path | None) -> None:
    """Run simulated providers that speak the real wire formats."""
    from modelplex.simulator.server import DEFAULT_SIM, SimProvider, describe, load_specs

    data: dict[str, Any] = DEFAULT_SIM
    if config_path is not None:
        try:
            data = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            click.echo(f"cannot read {config_path}: {exc}", err=True)
            sys.exit(2)
    try:
        specs = load_specs(data)
    except ValueError as exc:
        click.echo(f"invalid simulator config: {exc}", err=True)
        sys.exit(2)

    async def run() -> None:
        providers = [await SimProvider(spec).start() for spec in specs]
        click.echo(describe(providers))
        click.echo("simulating; Ctrl-C to stop", err=True)
        try:
            await asyncio.Event().wait()
        finally:
            for p in providers:
                await p.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


@main.command()
@click.option("--port", type=int, default=8080, show_default=True, help="Gateway port (0: any free port).")
@click.option("--duration", type=float, default=8.0, show_default=True, help="Seconds of demo traffic.")
@click.option("--no-traffic", is_flag=True, help="Start everything but send no demo traffic.")
@click.option("--exit", "exit_after", is_flag=True, help="Exit after the summary instead of serving on.")
def demo(port: int, duration: float, no_traffic: bool, exit_after: bool) -> None:
    """Simulated providers + the gateway + a traffic mix, then keep serving. No API keys needed."""
    from modelplex.demo import run_demo

    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_demo(port=port, duration=duration, traffic=not no_traffic, exit_after=exit_after))


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="modelplex.yaml", show_default=True, help="The gateway config to rehearse.")
@click.option("--provider", required=True, help="The provider to take down (a deployment's `provider`).")
@click.option("--duration", type=click.FloatRange(min=0.5), default=20.0, show_default=True,
              help="Seconds the provider stays down.")
@click.option("--rps", type=click.FloatRange(min=0.5), default=20.0, show_default=True,
              help="Client requests per second, half of them streamed.")
@click.option("--warmup", type=click.FloatRange(min=0.5), default=3.0, show_default=True,
              help="Seconds of traffic before the outage.")
@click.option("--recovery-timeout", type=click.FloatRange(min=0), default=None,
              help="Longest wait for traffic to return to the provider (default: breaker max_open_s + 10).")
@click.option("--model", "models", multiple=True,
              help="Send traffic to this model or route (repeatable; default: every model with a deployment "
                   "of the provider).")
@click.option("--fault", type=click.Choice(["503", "reset"]), default="503", show_default=True,
              help="How the provider fails: 503 answers, or reset connections.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def drill(config_path: Path, provider: str, duration: float, rps: float, warmup: float,
          recovery_timeout: float | None, models: tuple[str, ...], fault: str, as_json: bool) -> None:
    """Rehearse a provider outage: your config against simulators; time to recover, loss, time back."""
    from modelplex.drill import DrillError, Options, run

    logging.basicConfig(level=logging.ERROR)
    options = Options(provider=provider, duration=duration, rps=rps, warmup=warmup,
                      recovery_timeout=recovery_timeout, models=models, fault=fault)
    try:
        run(config_path, environment(), options, as_json)
    except (ConfigError, DrillError) as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


@main.command("export-monitoring")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default="deploy",
    show_default=True,
    help="Directory to write prometheus/modelplex-rules.yml and grafana/modelplex-dashboard.json under.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Take the alert rules from this config (default: the built-in rules).",
)
def export_monitoring(out: Path, config_path: Path | None) -> None:
    """Write the Prometheus alert rules and the Grafana dashboard, from the same rule definitions."""
    from modelplex.config.observability import Alerts
    from modelplex.observability.alerts_export import export

    alerts = Alerts()
    if config_path is not None:
        from modelplex.config.load import load_config
        from modelplex.providers.registry import load_registry
        from modelplex.runtime import config_checks

        try:
            alerts = load_config(config_path, environment(), config_checks(load_registry())).alerts
        except ConfigError as exc:
            click.echo(str(exc), err=True)
            sys.exit(2)
    for path in export(out, alerts):
        click.echo(f"wrote {path}")


@main.command()
@click.option("--log", "log", default=None, metavar="LOCATION",
              help="sqlite:///path.db | path.db | postgresql://... | file.csv | file.jsonl "
                   "(default: the request log of --config, else ./modelplex-requests.db).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Gateway config: fallbacks for provider-switch readiness, route baselines, "
                   "the log's location.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "html"]), default="table",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the report to this file instead of standard output.")
@click.option("--since", default=None,
              help="Only requests since: 7d, 24h, 30m, an ISO date, or epoch seconds.")
def assess(log: str | None, config_path: Path | None, fmt: str, out: Path | None, since: str | None) -> None:
    """Cost per successful response, the Pareto of spend, provider-switch readiness, savings, latency."""
    from modelplex.assess.run import run as run_assess

    sys.exit(run_assess(log, config_path, fmt, out, since, environment()))


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)


def _register_admin() -> None:
    from modelplex.cli_admin import keys, teams, users

    main.add_command(keys)
    main.add_command(teams)
    main.add_command(users)


_register_admin()


if __name__ == "__main__":
    main()
