"""`modelplex assess`: its figures match direct SQL over the same request log; CSV, JSONL and
PostgreSQL give the same figures as SQLite; the three output formats; readiness from a config."""

from __future__ import annotations

import asyncio
import csv
import json
import math
import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from click.testing import CliRunner

from modelplex.assess.compute import assess, fallback_coverage
from modelplex.assess.source import SourceError, load
from modelplex.cli import main
from modelplex.config.schema import Config

OK = "(status < 400 AND error_class IS NULL AND aborted = 0)"


def q(db: sqlite3.Connection, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    return db.execute(sql, args).fetchall()


def nearest_rank(db: sqlite3.Connection, where: str, column: str, p: float, *args: Any) -> float:
    n = q(db, f"SELECT count(*) FROM request_log WHERE {where} AND {column} IS NOT NULL", *args)[0][0]
    k = math.ceil(p * n) - 1
    return q(db, f"SELECT {column} FROM request_log WHERE {where} AND {column} IS NOT NULL "
                 f"ORDER BY {column} LIMIT 1 OFFSET ?", *args, k)[0][0]


@pytest.fixture(scope="module")
def report(log_db: Path) -> dict[str, Any]:
    db, source = load(str(log_db))
    return assess(db, source)


@pytest.fixture(scope="module")
def direct(log_db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{log_db}?mode=ro", uri=True)


def test_overview_matches_sql(report: dict[str, Any], direct: sqlite3.Connection) -> None:
    n, ok, answer, wasted, failed, priced = q(direct, f"""
        SELECT count(*), sum({OK}), sum(CASE WHEN {OK} THEN cost_micro END),
               sum(CASE WHEN {OK} THEN waste_micro ELSE 0 END), sum(CASE WHEN {OK} THEN 0 ELSE waste_micro END),
               sum({OK} AND cost_micro IS NOT NULL) FROM request_log""")[0]
    o = report["overview"]
    assert (o["requests"], o["ok"], o["answer_micro"], o["wasted_micro"], o["failed_micro"]) == \
        (n, ok, answer, wasted, failed)
    assert o["avg_cost_per_success_micro"] == pytest.approx(answer / priced)
    assert o["all_in_per_success_micro"] == pytest.approx((answer + wasted + failed) / ok)
    assert failed > 0 and wasted > 0  # the generated log exercises both


def test_cost_by_provider_matches_sql_with_waste_attributed_to_attempts(
        report: dict[str, Any], direct: sqlite3.Connection) -> None:
    expected: dict[str, dict[str, int]] = {}
    for provider, n, ok, answer in q(direct, f"""
            SELECT provider, count(*), sum({OK}), coalesce(sum(CASE WHEN {OK} THEN cost_micro END), 0)
            FROM request_log GROUP BY provider"""):
        expected[provider] = {"requests": n, "ok": ok, "answer_micro": answer, "wasted_micro": 0, "failed_micro": 0}
    # Attribution, computed independently in Python from the attempts JSON.
    for provider, ok, waste, attempts in q(direct, f"""
            SELECT provider, {OK}, waste_micro, attempts FROM request_log WHERE waste_micro > 0"""):
        kind = "wasted_micro" if ok else "failed_micro"
        charged = [a for a in json.loads(attempts) if not a.get("answer") and a.get("cost_micro") is not None]
        if charged and sum(a["cost_micro"] for a in charged) <= waste:
            for a in charged:
                expected[a["provider"]][kind] += a["cost_micro"]
            expected[provider][kind] += waste - sum(a["cost_micro"] for a in charged)
        else:
            expected[provider][kind] += waste
    got = {r["provider"]: {k: r[k] for k in ("requests", "ok", "answer_micro", "wasted_micro", "failed_micro")}
           for r in report["cost"]["provider"]}
    assert got == expected


def test_cost_by_route_and_savings_match_sql(report: dict[str, Any], direct: sqlite3.Connection) -> None:
    rows = {r["route"]: r for r in report["cost"]["route"]}
    for route, n, answer, waste in q(direct, f"""
            SELECT coalesce(route, '(none)'), count(*), coalesce(sum(CASE WHEN {OK} THEN cost_micro END), 0),
                   sum(waste_micro) FROM request_log GROUP BY 1"""):
        r = rows[route]
        assert (r["requests"], r["answer_micro"], r["wasted_micro"] + r["failed_micro"]) == (n, answer, waste)
    savings = {r["route"]: r for r in report["savings"]["by_route"]}
    for route, cost, cf in q(direct, f"""
            SELECT coalesce(route, '(none)'), sum(cost_micro), sum(counterfactual_micro) FROM request_log
            WHERE {OK} AND cost_micro IS NOT NULL AND counterfactual_micro IS NOT NULL GROUP BY 1"""):
        assert savings[route]["savings_micro"] == cf - cost
    assert report["savings"]["total"]["savings_micro"] > 0


@pytest.mark.parametrize(("dim", "expr"), [
    ("route", "coalesce(route, '(none)')"), ("task", "coalesce(task, '(none)')"),
    ("team", "coalesce(team, '(none)') || ' / ' || coalesce(key_name, '(none)')"),
    ("fingerprint", "coalesce(fingerprint, '(none)')"),
])
def test_pareto_matches_a_window_query(report: dict[str, Any], direct: sqlite3.Connection, dim: str,
                                       expr: str) -> None:
    groups, set_size, set_requests, requests = q(direct, f"""
        WITH g AS (SELECT {expr} g, sum(coalesce(cost_micro, 0) + waste_micro) s, count(*) n
                   FROM request_log GROUP BY 1),
             c AS (SELECT s, n, sum(s) OVER (ORDER BY s DESC, g ROWS UNBOUNDED PRECEDING) - s AS before,
                          sum(s) OVER () AS total FROM g)
        SELECT (SELECT count(*) FROM g), sum(before < 0.8 * total), sum(CASE WHEN before < 0.8 * total THEN n END),
               sum(n) FROM c""")[0]
    p = report["pareto"][dim]
    assert (p["groups"], p["set_size"]) == (groups, set_size)
    assert p["set_request_share"] == pytest.approx(set_requests / requests)
    assert p["top"][0]["cum_share"] <= p["top"][-1]["cum_share"] <= 1.0


def test_latency_percentiles_match_sql(report: dict[str, Any], direct: sqlite3.Connection) -> None:
    for row in report["latency"]:
        where = f"{OK} AND provider = ?"
        for p in (0.5, 0.9, 0.95, 0.99):
            assert row[f"p{round(p * 100)}_ms"] == nearest_rank(direct, where, "latency_ms", p, row["provider"])
        assert row["ttft_p99_ms"] == nearest_rank(direct, where, "ttft_ms", 0.99, row["provider"])


def test_readiness_matches_sql(report: dict[str, Any], direct: sqlite3.Connection) -> None:
    rows = {r["provider"]: r for r in report["readiness"]["providers"]}
    for provider, n in q(direct, "SELECT failover_from, count(*) FROM request_log WHERE failover_ms IS NOT NULL "
                                 "GROUP BY 1"):
        r = rows[provider]
        assert r["failovers"] == n
        assert r["p50_ms"] == nearest_rank(direct, "failover_from = ?", "failover_ms", 0.5, provider)
        assert r["p99_ms"] == nearest_rank(direct, "failover_from = ?", "failover_ms", 0.99, provider)
        assert r["ready"] is None  # no config given


def test_best_model_per_query_type(report: dict[str, Any], direct: sqlite3.Connection) -> None:
    best = {b["query_type"]: b for b in report["best"]}
    summary = {m["model"]: m for m in best["summary"]["models"]}
    for model, n, ok, quality in q(direct, f"""
            SELECT l.model, count(*), sum({OK}), avg(f.score) FROM request_log l
            LEFT JOIN request_feedback f USING (request_id) WHERE l.task = 'summary' GROUP BY 1"""):
        assert summary[model]["requests"] == n
        assert summary[model]["error_rate"] == pytest.approx((n - ok) / n)
        assert summary[model]["quality"] == pytest.approx(quality)
    # The generator gives the bigger models better scores: quality decides.
    assert best["analysis"]["by"] == "quality" and best["analysis"]["best"] in ("gpt-4o", "claude-sonnet")


def _export(log_db: Path) -> tuple[list[str], list[dict[str, Any]]]:
    db = sqlite3.connect(log_db)
    db.row_factory = sqlite3.Row
    rows = [dict(r) for r in db.execute(
        "SELECT l.*, f.score FROM request_log l LEFT JOIN request_feedback f USING (request_id)")]
    db.close()
    return list(rows[0]), rows


def _close(a: Any, b: Any, where: str) -> None:
    if isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-9), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in ("overview", "cost", "pareto", "savings", "latency", "best", "readiness", "series"):
        _close(a[key], b[key], key)


def test_csv_export_gives_the_same_figures(report: dict[str, Any], log_db: Path, tmp_path: Path) -> None:
    header, rows = _export(log_db)
    path = tmp_path / "export.csv"
    with path.open("w", newline="") as f:
        # another system's names: `key` for key_name, `cost` in currency units instead of micro-units
        names = ["key" if h == "key_name" else "cost" if h == "cost_micro" else h for h in header]
        w = csv.writer(f)
        w.writerow(names)
        for r in rows:
            cost = r["cost_micro"]
            w.writerow(["" if v is None else (str(Decimal(cost) / 1_000_000) if h == "cost_micro" else v)
                        for h, v in r.items()])
    db, source = load(str(path))
    _same(assess(db, source), report)


def test_jsonl_export_gives_the_same_figures(report: dict[str, Any], log_db: Path, tmp_path: Path) -> None:
    _, rows = _export(log_db)
    path = tmp_path / "export.jsonl"
    with path.open("wb") as f:
        for r in rows:
            r["attempts"] = json.loads(r["attempts"])  # a real array, as another system would write it
            r["ts"] = __import__("datetime").datetime.fromtimestamp(r["ts"], __import__("datetime").timezone.utc).isoformat()
            f.write(msgspec.json.encode(r) + b"\n")
    db, source = load(str(path))
    _same(assess(db, source), report)


def test_a_file_without_the_required_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("ts,model\n1,a\n")
    with pytest.raises(SourceError, match="provider, status, latency_ms, cost"):
        load(str(path))
    path.write_text("ts,model,provider,status,latency_ms,cost\nyesterday,a,p,200,1,0.1\n")
    with pytest.raises(SourceError, match="line 2.*timestamp"):
        load(str(path))


def test_prompts_get_fingerprints(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(
        '{"ts": 1, "model": "m", "provider": "p", "status": 200, "latency_ms": 5, "cost": 0.5, "prompt": "Order 12"}\n'
        '{"ts": 2, "model": "m", "provider": "p", "status": 200, "latency_ms": 5, "cost": 0.5, "prompt": "Order  9"}\n'
        '{"ts": 3, "model": "m", "provider": "p", "status": 500, "latency_ms": 5, "cost": 0.25, "prompt": "Other"}\n')
    db, source = load(str(path))
    r = assess(db, source)
    assert r["pareto"]["fingerprint"]["groups"] == 2 and r["pareto"]["fingerprint"]["top"][0]["requests"] == 2
    assert r["overview"]["failed_micro"] == 250_000 and r["overview"]["answer_micro"] == 1_000_000


def test_readiness_from_a_config() -> None:
    config = Config.model_validate({
        "deployments": [{"name": "a1", "provider": "openai", "model": "x"},
                        {"name": "a2", "provider": "openai", "model": "y"},
                        {"name": "b1", "provider": "anthropic", "model": "z"}],
        "models": [{"name": "m1", "deployments": ["a1"], "fallbacks": ["m3"]},
                   {"name": "m2", "deployments": ["a2"]},
                   {"name": "m3", "deployments": ["b1"], "fallbacks": ["m1"]}],
    })
    assert fallback_coverage(config) == {"openai": {"m1": True, "m2": False}, "anthropic": {"m3": True}}


def test_cli_table_json_html(log_db: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["assess", "--log", f"sqlite:///{log_db}"], terminal_width=160)
    assert result.exit_code == 0, result.output
    for text in ("Cost per successful response, by provider", "Spend Pareto by prompt fingerprint",
                 "Provider-switch readiness", "Savings versus the baseline", "Which model does best"):
        assert text in result.output
    assert "█" in result.output and any(c in result.output for c in "▁▂▃▄▅▆▇")  # sparklines and bars
    out = tmp_path / "r.json"
    assert runner.invoke(main, ["assess", "--log", str(log_db), "--format", "json", "--out", str(out),
                                "--since", "1760100000"]).exit_code == 0
    data = json.loads(out.read_text())
    assert data["overview"]["first_ts"] >= 1_760_100_000 and data["overview"]["requests"] < 30_000
    html = tmp_path / "r.html"
    assert runner.invoke(main, ["assess", "--log", str(log_db), "--format", "html", "--out", str(html)]).exit_code == 0
    page = html.read_text()
    assert page.count("<svg") >= 8 and "<script" not in page and "http://" not in page and "https://" not in page
    bad = runner.invoke(main, ["assess", "--log", str(tmp_path / "missing.db")])
    assert bad.exit_code == 2 and "no such file" in bad.output


def test_postgres_source_gives_the_same_figures(log_db: Path, tmp_path: Path) -> None:
    import os
    import uuid

    import asyncpg  # type: ignore[import-untyped]

    from modelplex.observability.requestlog_row import Feedback, Row
    from modelplex.observability.requestlog_store import PostgresLogStore

    dsn = os.environ.get("MODELPLEX_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    schema = f"mpx_as_{uuid.uuid4().hex[:12]}"
    db = sqlite3.connect(log_db)
    db.row_factory = sqlite3.Row
    records = [dict(r) for r in db.execute("SELECT * FROM request_log LIMIT 3000")]
    scores = [dict(r) for r in db.execute("SELECT * FROM request_feedback")]
    db.close()
    small = tmp_path / "small.db"
    src = sqlite3.connect(log_db)
    src.execute("ATTACH ? AS d", (str(small),))
    src.execute("CREATE TABLE d.request_log AS SELECT * FROM request_log LIMIT 3000")
    src.execute("CREATE TABLE d.request_feedback AS SELECT * FROM request_feedback")
    src.commit()
    src.close()
    rows = [msgspec.convert({**r, "tags": json.loads(r["tags"]), "attempts": json.loads(r["attempts"]),
                             **{b: bool(r[b]) for b in ("stream", "aborted", "hedged", "usage_estimated", "unpriced")}},
                            Row) for r in records]

    async def put() -> None:
        try:
            admin = await asyncio.wait_for(asyncpg.connect(dsn), 5)
        except (OSError, TimeoutError) as exc:
            if os.environ.get("CI") == "true":
                pytest.fail(f"PostgreSQL unreachable: {exc}")
            pytest.skip(f"PostgreSQL unreachable: {exc}")
        await admin.close()
        store = PostgresLogStore(dsn, schema)
        await store.insert(rows)
        await store.put_feedback([Feedback(request_id=s["request_id"], score=s["score"], ts=s["ts"]) for s in scores])
        await store.close()

    async def drop() -> None:
        admin = await asyncpg.connect(dsn)
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()

    asyncio.run(put())
    try:
        pg, source = load(f"{dsn}?search_path={schema}")
        lite, lite_source = load(str(small))
        assert "PostgreSQL" in source
        _same(assess(pg, source), assess(lite, lite_source))
    finally:
        asyncio.run(drop())
