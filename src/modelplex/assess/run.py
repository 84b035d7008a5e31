"""`modelplex assess`: find the log, read it, compute, render."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from modelplex.config.schema import Config

_SINCE = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(value: str | None, now: float | None = None) -> float | None:
    """`7d`, `24h`, `30m` (ago), an ISO 8601 date or time (UTC unless it says), or epoch seconds."""
    if not value:
        return None
    now = time.time() if now is None else now
    m = _SINCE.match(value.strip())
    if m:
        return now - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        d = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since: not a duration (7d, 24h), a date or epoch seconds: {value!r}") from None
    return (d if d.tzinfo else d.replace(tzinfo=timezone.utc)).timestamp()  # noqa: UP017


def default_log(config: Config | None, config_path: Path | None) -> str:
    """The request log a config writes to (or the default SQLite file next to the config)."""
    if config is None:
        return "modelplex-requests.db"
    settings = config.request_log
    if settings.store == "postgres" and settings.postgres_dsn is not None:
        dsn = settings.postgres_dsn.get_secret_value()
        if settings.postgres_schema:
            dsn += ("&" if "?" in dsn else "?") + f"search_path={settings.postgres_schema}"
        return dsn
    path = Path(settings.sqlite_path).expanduser()
    if not path.is_absolute() and config_path is not None:
        path = config_path.resolve().parent / path
    return str(path)


def run(log: str | None, config_path: Path | None, fmt: str, out: Path | None, since: str | None,
        env: Mapping[str, str]) -> int:
    from modelplex.assess.compute import assess
    from modelplex.assess.source import SourceError, load
    from modelplex.config.load import ConfigError, load_config

    config = None
    if config_path is not None:
        try:
            config = load_config(config_path, env)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return 2
    try:
        start = parse_since(since)
        db, source = load(log or default_log(config, config_path), start)
    except (SourceError, ValueError) as exc:
        print(f"modelplex assess: {exc}", file=sys.stderr)
        return 2
    report = assess(db, source, config, start)
    db.close()
    if fmt == "json":
        text = json.dumps(report, indent=2) + "\n"
    elif fmt == "html":
        from modelplex.assess.render_html import render as render_html

        text = render_html(report)
    else:
        return _table(report, out)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out}", file=sys.stderr)
    return 0


def _table(report: dict[str, Any], out: Path | None) -> int:
    from rich.console import Console

    from modelplex.assess.render_text import render as render_text

    if out is None:
        render_text(report, Console())
        return 0
    with out.open("w", encoding="utf-8") as f:
        render_text(report, Console(file=f, width=160, force_terminal=False))
    print(f"wrote {out}", file=sys.stderr)
    return 0
