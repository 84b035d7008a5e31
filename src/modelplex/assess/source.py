"""Read a request log into one in-memory SQLite table `r`, whatever it came from: the gateway's
request log (SQLite file or PostgreSQL) or an export of another system (CSV or JSONL in the schema
of docs/assess.md). Every figure of the assessment is then one SQL query over `r`.

Normalisation: `ok` is 1 for a success (status below 400, no error class, not aborted); a failed
request's cost counts as failed spend (`waste_micro`), never as an answer's cost. `waste_attr` is
the part of `waste_micro` that the attempts column attributes to a provider and model.
"""

from __future__ import annotations

import asyncio
import csv
import io
import math
import os
import shutil
import sqlite3
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

import msgspec

from modelplex.observability.requestlog_row import fingerprint

# (column, SQLite type) of `r`, in order. CSV/JSONL files use the same names (docs/assess.md).
COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("request_id", "TEXT"), ("ts", "REAL"), ("key_name", "TEXT"), ("team", "TEXT"), ("route", "TEXT"),
    ("task", "TEXT"), ("model", "TEXT"), ("deployment", "TEXT"), ("provider", "TEXT"),
    ("status", "INTEGER"), ("error_class", "TEXT"), ("aborted", "INTEGER"), ("stream", "INTEGER"),
    ("latency_ms", "REAL"), ("ttft_ms", "REAL"), ("failover_ms", "REAL"), ("failover_from", "TEXT"),
    ("input_tokens", "INTEGER"), ("output_tokens", "INTEGER"), ("cost_micro", "INTEGER"),
    ("waste_micro", "INTEGER"), ("counterfactual_micro", "INTEGER"), ("currency", "TEXT"),
    ("fingerprint", "TEXT"), ("score", "REAL"), ("attempts", "TEXT"),
)
NAMES: Final = tuple(c for c, _ in COLUMNS)
NONE: Final = "(none)"  # the group of rows without a value
GROUPED: Final = frozenset({"key_name", "team", "route", "task", "model", "provider", "fingerprint"})
REQUIRED: Final = ("ts", "model", "provider", "status", "latency_ms")
# Money may come as integer micro-units (`cost_micro`) or as decimal currency units (`cost`).
MONEY: Final = ("cost", "waste", "counterfactual")
ALIASES: Final = {"key": "key_name", "user_key": "key_name", "error": "error_class", "latency": "latency_ms",
                  "ttft": "ttft_ms", "timestamp": "ts", "time": "ts"}
_LOG_QUERY: Final = (
    "SELECT l.request_id, l.ts, l.key_name, l.team, l.route, l.task, l.model, l.deployment, l.provider, "
    "l.status, l.error_class, l.aborted, l.stream, l.latency_ms, l.ttft_ms, l.failover_ms, l.failover_from, "
    "l.input_tokens, l.output_tokens, l.cost_micro, l.waste_micro, l.counterfactual_micro, l.currency, "
    "l.fingerprint, {score} AS score, CASE WHEN l.waste_micro > 0 THEN l.attempts END AS attempts "
    "FROM {log} l {join} WHERE l.ts >= {since}"
)


class SourceError(Exception):
    """The log cannot be read, or a file does not follow the documented schema."""


_MMAP: Final = 1 << 32


class LogDB(sqlite3.Connection):
    """The working database: a throw-away file (no journal, no fsync) in a temporary directory,
    removed with the connection. A file rather than `:memory:` so that a second connection can
    read it in parallel (compute.py uses both CPU cores)."""

    path: str

    def reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        conn.execute(f"PRAGMA mmap_size = {_MMAP}")
        return conn


def open_db() -> LogDB:
    directory = tempfile.mkdtemp(prefix="modelplex-assess-")
    path = os.path.join(directory, "log.db")
    db = sqlite3.connect(path, factory=LogDB, check_same_thread=False)
    db.path = path
    weakref.finalize(db, shutil.rmtree, directory, True)
    for pragma in ("journal_mode = OFF", "synchronous = OFF", f"mmap_size = {_MMAP}", "cache_size = -262144"):
        db.execute(f"PRAGMA {pragma}")
    columns = ", ".join(f"{c} {t}" for c, t in COLUMNS)
    db.execute(f"CREATE TABLE r ({columns}, ok INTEGER, waste_attr INTEGER, qtype TEXT)")
    return db


def load(location: str, since: float | None = None) -> tuple[LogDB, str]:
    """(the database holding `r`, a description of the source)."""
    db = open_db()
    lower = location.lower()
    if lower.startswith(("postgresql://", "postgres://")):
        _load_csv(db, io.StringIO(asyncio.run(_postgres_csv(location, since))), since)
        what = "PostgreSQL request log"
    else:
        path = Path(location.removeprefix("sqlite:///").removeprefix("sqlite://"))
        if not path.exists():
            raise SourceError(f"{path}: no such file")
        if lower.endswith(".csv"):
            with path.open(newline="", encoding="utf-8") as f:
                _load_csv(db, f, since)
            what = f"CSV file {path}"
        elif lower.endswith((".jsonl", ".ndjson", ".json")):
            with path.open("rb") as f:
                _load_jsonl(db, f, since)
            what = f"JSONL file {path}"
        else:
            _load_sqlite(db, path, since)
            what = f"SQLite request log {path}"
    _attribute_waste(db)
    return db, what


def _load_sqlite(db: sqlite3.Connection, path: Path, since: float | None) -> None:
    try:
        db.execute("ATTACH DATABASE ? AS src", (f"file:{path}?mode=ro",))
    except sqlite3.OperationalError as exc:
        raise SourceError(f"{path}: {exc}") from exc
    tables = {r[0] for r in db.execute("SELECT name FROM src.sqlite_master WHERE type = 'table'")}
    if "request_log" not in tables:
        raise SourceError(f"{path}: not a modelplex request log (no table request_log)")
    feedback = "request_feedback" in tables
    sql = _LOG_QUERY.format(
        score="f.score" if feedback else "NULL",
        log="src.request_log",
        join="LEFT JOIN src.request_feedback f ON f.request_id = l.request_id" if feedback else "",
        since=repr(float(since or 0.0)),
    )
    _fill(db, sql)
    db.execute("DETACH DATABASE src")


async def _postgres_csv(dsn: str, since: float | None) -> str:
    try:
        import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
    except ImportError as exc:
        raise SourceError("reading PostgreSQL needs asyncpg: pip install 'modelplex[postgres]'") from exc
    try:  # a schema other than public: ...?search_path=<schema> (asyncpg passes it to the server)
        conn = await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise SourceError(f"cannot connect to PostgreSQL: {exc}") from exc
    try:
        has_feedback = await conn.fetchval("SELECT to_regclass('request_feedback') IS NOT NULL")
        sql = _LOG_QUERY.format(
            score="f.score" if has_feedback else "NULL", log="request_log",
            join="LEFT JOIN request_feedback f ON f.request_id = l.request_id" if has_feedback else "",
            since=repr(float(since or 0.0)),
        ).replace("THEN l.attempts END", "THEN l.attempts::text END")
        out = io.BytesIO()
        await conn.copy_from_query(sql, output=out, format="csv", header=False)
    except asyncpg.PostgresError as exc:
        raise SourceError(f"cannot read the request log: {exc}") from exc
    finally:
        await conn.close()
    return ",".join(NAMES) + "\n" + out.getvalue().decode("utf-8")


# --- CSV and JSONL ------------------------------------------------------------------------------


def _text(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v)
    return s if s != "" else None


def _float(v: Any) -> float | None:
    if v is None or v == "":
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _int(v: Any) -> int | None:
    if v is None or v == "":
        return None
    if isinstance(v, int):
        return v
    return int(float(v)) if isinstance(v, float) or "." in str(v) or "e" in str(v).lower() else int(v)


def _bool(v: Any) -> int | None:
    if v is None or v == "":
        return None
    if isinstance(v, bool | int):
        return int(bool(v))
    return 1 if str(v).strip().lower() in ("1", "t", "true", "yes", "y") else 0


def _micro(v: Any) -> int | None:
    """Decimal currency units -> integer micro-units, exactly."""
    if v is None or v == "":
        return None
    try:
        return int((Decimal(str(v)) * 1_000_000).to_integral_value())
    except InvalidOperation:
        raise ValueError(f"not a number: {v!r}") from None


def _ts(v: Any) -> float | None:
    if v is None or v == "":
        return None
    if isinstance(v, int | float):
        return float(v)
    s = str(v).strip()
    try:
        return float(s)
    except ValueError:
        pass
    try:
        d = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a timestamp (epoch seconds or ISO 8601): {v!r}") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)  # noqa: UP017
    return d.timestamp()


def _json_text(v: Any) -> str | None:
    if v is None or v == "":
        return None
    return v if isinstance(v, str) else msgspec.json.encode(v).decode()


_TYPES: Final[dict[str, Callable[[Any], Any]]] = {"TEXT": _text, "REAL": _float, "INTEGER": _int}
_SPECIAL: Final[dict[str, Callable[[Any], Any]]] = {
    "ts": _ts, "aborted": _bool, "stream": _bool, "attempts": _json_text,
}


Plan = list[tuple[str | None, Callable[[Any], Any]]]  # per column of `r`: (source field, converter)


def _fingerprint_of(text: Any) -> str | None:
    return fingerprint(str(text)) if text else None


def _nothing(value: Any) -> None:
    return None


def _plan(header: Iterable[str], where: str) -> Plan:
    """Where each column of `r` comes from in a record, and how it is converted."""
    reverse = {ALIASES.get(h.strip(), h.strip()): h for h in header}
    present = set(reverse)
    missing = [c for c in REQUIRED if c not in present]
    if "cost_micro" not in present and "cost" not in present:
        missing.append("cost (or cost_micro)")
    if missing:
        raise SourceError(f"{where}: missing required column(s): {', '.join(missing)} (see docs/assess.md)")
    plan: Plan = []
    for column, kind in COLUMNS:
        money = column.removesuffix("_micro")
        if column in reverse:
            plan.append((reverse[column], _SPECIAL.get(column, _TYPES[kind])))
        elif column.endswith("_micro") and money in MONEY and money in reverse:
            plan.append((reverse[money], _micro))
        elif column == "fingerprint" and "prompt" in reverse:
            plan.append((reverse["prompt"], _fingerprint_of))
        else:
            plan.append((None, _nothing))
    return plan


def _insert(db: sqlite3.Connection, rows: Iterator[tuple[Any, ...]], since: float | None) -> None:
    columns = ", ".join(f"{c} {t}" for c, t in COLUMNS)
    db.execute(f"CREATE TEMP TABLE raw ({columns})")
    sql = f"INSERT INTO raw ({', '.join(NAMES)}) VALUES ({', '.join('?' for _ in NAMES)})"  # noqa: S608
    ts_at = NAMES.index("ts")
    if since is not None:
        rows = (r for r in rows if r[ts_at] is not None and r[ts_at] >= since)
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= 50_000:
            db.executemany(sql, batch)
            batch.clear()
    db.executemany(sql, batch)
    _fill(db, "SELECT * FROM temp.raw")
    db.execute("DROP TABLE temp.raw")


def _load_csv(db: sqlite3.Connection, f: Iterable[str], since: float | None) -> None:
    reader = csv.reader(f)
    try:
        header = next(reader)
    except StopIteration:
        raise SourceError("the CSV file is empty") from None
    index = {h: i for i, h in enumerate(header)}
    plan = [(index[k] if k is not None else -1, f) for k, f in _plan(header, "CSV header")]
    width = len(header)

    def rows() -> Iterator[tuple[Any, ...]]:
        for line, record in enumerate(reader, 2):
            if not record:
                continue
            if len(record) != width:
                raise SourceError(f"CSV line {line}: {len(record)} fields, the header has {width}")
            try:
                yield tuple(f(record[i]) if i >= 0 else None for i, f in plan)
            except ValueError as exc:
                raise SourceError(f"CSV line {line}: {exc}") from None

    _insert(db, rows(), since)


def _load_jsonl(db: sqlite3.Connection, f: io.BufferedReader | Any, since: float | None) -> None:
    decode = msgspec.json.Decoder(dict[str, Any]).decode
    plans: dict[frozenset[str], Plan] = {}

    def rows() -> Iterator[tuple[Any, ...]]:
        for line, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                record = decode(raw)
            except msgspec.DecodeError as exc:
                raise SourceError(f"JSONL line {line}: {exc}") from None
            keys = frozenset(record)
            plan = plans.get(keys)
            if plan is None:
                plan = plans[keys] = _plan(keys, f"JSONL line {line}")
            try:
                yield tuple(f(record[k]) if k is not None else None for k, f in plan)
            except ValueError as exc:
                raise SourceError(f"JSONL line {line}: {exc}") from None

    _insert(db, rows(), since)


def _fill(db: sqlite3.Connection, select: str) -> None:
    """Copy `select` (the columns NAMES) into `r`, normalised in the same pass."""
    waste = "coalesce(waste_micro, 0) + CASE WHEN ok THEN 0 ELSE coalesce(cost_micro, 0) END"
    out = [
        "CASE WHEN ok THEN cost_micro END" if c == "cost_micro"
        else waste if c == "waste_micro"
        else "coalesce(aborted, 0)" if c == "aborted"
        else f"CASE WHEN {waste} > 0 THEN attempts END" if c == "attempts"
        else f"coalesce({c}, '{NONE}')" if c in GROUPED
        else c
        for c in NAMES
    ]
    ok = "coalesce(status < 400 AND error_class IS NULL AND coalesce(aborted, 0) = 0, 0)"
    qtype = f"coalesce(task, 'route: ' || route, '{NONE}')"  # what "query type" means: task label, else route
    db.execute(
        f"INSERT INTO r ({', '.join(NAMES)}, ok, waste_attr, qtype) "  # noqa: S608
        f"SELECT {', '.join(out)}, ok, 0, {qtype} FROM (SELECT s.*, {ok} AS ok FROM ({select}) s)"
    )
    db.commit()


def _attribute_waste(db: sqlite3.Connection) -> None:
    """The part of each row's waste that its attempts attribute to a provider and model: all of it
    or, when the attempts' costs do not add up to at most the waste, none of it."""
    db.execute("""
        UPDATE r SET waste_attr = coalesce((
            SELECT CASE WHEN sum(json_extract(a.value, '$.cost_micro')) <= r.waste_micro
                        THEN sum(json_extract(a.value, '$.cost_micro')) END
            FROM json_each(r.attempts) a WHERE coalesce(json_extract(a.value, '$.answer'), 0) = 0), 0)
        WHERE waste_micro > 0 AND attempts IS NOT NULL AND json_valid(attempts)""")
    db.commit()
