"""The assessment as a terminal report: rich tables, sparklines and bars."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from modelplex.assess.fmt import bar, count, money, ms, pct, sparkline

ROWS = 10


def _when(ts: float | None) -> str:
    if ts is None:
        return "–"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")  # noqa: UP017


def render(report: dict[str, Any], console: Console) -> None:
    cur = report["currency"]
    o = report["overview"]
    s = report["series"]
    head = Table.grid(padding=(0, 2))
    head.add_column(style="dim")
    head.add_column()
    head.add_row("source", report["source"])
    head.add_row("period", f"{_when(o['first_ts'])} → {_when(o['last_ts'])}")
    head.add_row("requests", f"{count(o['requests'])}  ({count(o['ok'])} ok, {count(o['failed'])} failed, "
                             f"error rate {pct(o['error_rate'])})")
    head.add_row("avg cost / successful response", f"[bold]{money(o['avg_cost_per_success_micro'], cur)}[/]"
                 f"   all-in (with waste and failures): {money(o['all_in_per_success_micro'], cur)}")
    head.add_row("spend", f"{money(o['spend_micro'], cur)} = answers {money(o['answer_micro'], cur)}"
                          f" + wasted {money(o['wasted_micro'], cur)}"
                          f" + failed {money(o['failed_micro'], cur)}")
    sv = report["savings"]["total"]
    head.add_row("savings vs baseline", f"{money(sv['savings_micro'], cur)} ({pct(sv['savings_share'])} of "
                                        f"{money(sv['counterfactual_micro'], cur)})")
    if o["unpriced_successes"]:
        head.add_row("unpriced",
                     f"[yellow]{count(o['unpriced_successes'])} successful request(s) had no price[/]")
    if s["t"]:
        every = _bucket(s["bucket_s"])
        head.add_row(f"requests / {every}", Text(sparkline(s["requests"]), style="cyan"))
        head.add_row(f"errors / {every}", Text(sparkline(s["errors"]), style="red"))
        head.add_row(f"spend / {every}", Text(sparkline(s["spend_micro"]), style="yellow"))
    console.print(Panel(head, title="modelplex assess", title_align="left"))
    for dim in ("provider", "model", "route"):
        console.print(_cost_table(report["cost"][dim], dim, cur))
    for dim, title in (("route", "route"), ("task", "task label"), ("team", "team / key"),
                       ("fingerprint", "prompt fingerprint")):
        console.print(_pareto_table(report["pareto"][dim], title, cur))
    console.print(_readiness_table(report["readiness"]))
    console.print(_savings_table(report["savings"]["by_route"], cur))
    console.print(_latency_table(report["latency"]))
    console.print(_best_table(report["best"]))
    console.print(Text(f"computed in {report['seconds']:.2f} s", style="dim"))


def _bucket(seconds: int) -> str:
    for n, name in ((86400, "day"), (3600, "hour"), (60, "min")):
        if seconds % n == 0:
            return name if seconds == n else f"{seconds // n} {name}s"
    return f"{seconds} s"


def _cost_table(rows: list[dict[str, Any]], dim: str, cur: str | None) -> Table:
    t = Table(title=f"Cost per successful response, by {dim}", title_justify="left")
    t.add_column(dim)
    for name in ("requests", "error rate", "avg / success", "all-in / success", "answers", "wasted",
                 "failed"):
        t.add_column(name, justify="right")
    t.add_column("")
    top = max((r["avg_cost_per_success_micro"] or 0 for r in rows), default=0)
    for r in rows[:ROWS]:
        t.add_row(r[dim], count(r["requests"]), pct(r["error_rate"]), money(r["avg_cost_per_success_micro"]),
                  money(r["all_in_per_success_micro"]), money(r["answer_micro"]), money(r["wasted_micro"]),
                  money(r["failed_micro"]), Text(bar(r["avg_cost_per_success_micro"], top, 16), style="cyan"))
    if len(rows) > ROWS:
        t.caption = f"{len(rows) - ROWS} more (JSON or HTML output has them all); money in {cur}"
    else:
        t.caption = f"money in {cur}"
    return t


def _pareto_table(p: dict[str, Any], title: str, cur: str | None) -> Group:
    summary = Text.from_markup(
        f"[bold]Spend Pareto by {title}[/]: {count(p['set_size'])} of {count(p['groups'])} groups "
        f"({pct(p['set_group_share'])}) make 80 % of spend, with {pct(p['set_request_share'])} of requests.")
    t = Table(show_edge=False)
    t.add_column(title, overflow="fold", max_width=40)
    for name in ("spend", "share", "cumulative", "requests", "of requests"):
        t.add_column(name, justify="right")
    t.add_column("")
    top = max((g["spend_micro"] for g in p["top"]), default=0)
    for i, g in enumerate(p["top"][:ROWS]):
        style = "bold" if i < p["set_size"] else "dim"
        t.add_row(Text(g["group"], style=style), money(g["spend_micro"], cur), pct(g["spend_share"]),
                  pct(g["cum_share"]), count(g["requests"]), pct(g["request_share"]),
                  Text(bar(g["spend_micro"], top, 16), style="yellow"))
    return Group(summary, t)


def _readiness_table(r: dict[str, Any]) -> Table:
    t = Table(title="Provider-switch readiness: measured failover (first failure → first byte of the answer)",
              title_justify="left")
    t.add_column("provider")
    for name in ("failovers", "p50", "p99", "max", "unrecovered"):
        t.add_column(name, justify="right")
    t.add_column("models without a fallback on another provider")
    t.add_column("ready")
    for p in r["providers"]:
        missing = p["models_without_fallback"]
        cover = "(pass --config)" if missing is None else (", ".join(missing) or "none")
        ready = {True: "[green]yes[/]", False: "[red]no[/]", None: "?"}[p["ready"]]
        t.add_row(p["provider"], count(p["failovers"]), ms(p["p50_ms"]), ms(p["p99_ms"]), ms(p["max_ms"]),
                  count(p["unrecovered"]), cover, ready)
    t.caption = (f"ready: every model has a fallback on another provider and failover p99 ≤ "
                 f"{ms(r['target_ms'])}")
    return t


def _savings_table(rows: list[dict[str, Any]], cur: str | None) -> Table:
    t = Table(title="Savings versus the baseline model, by route", title_justify="left")
    t.add_column("route")
    t.add_column("baseline")
    for name in ("requests", "actual", "on baseline", "saved", "saved %"):
        t.add_column(name, justify="right")
    for r in rows[:ROWS]:
        t.add_row(r["route"], r["baseline"] or "–", count(r["requests"]), money(r["cost_micro"], cur),
                  money(r["counterfactual_micro"], cur), money(r["savings_micro"], cur),
                  pct(r["savings_share"]))
    return t


def _latency_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="Latency of successful requests, by provider", title_justify="left")
    t.add_column("provider")
    for name in ("requests", "p50", "p90", "p95", "p99", "TTFT p50", "TTFT p99"):
        t.add_column(name, justify="right")
    t.add_column("p50 ▏ p99")
    top = max((r["p99_ms"] or 0 for r in rows), default=0)
    for r in rows:
        t.add_row(r["provider"], count(r["n"]), ms(r["p50_ms"]), ms(r["p90_ms"]), ms(r["p95_ms"]),
                  ms(r["p99_ms"]),
                  ms(r["ttft_p50_ms"]), ms(r["ttft_p99_ms"]),
                  Text(bar(r["p50_ms"], top, 12), style="green") + Text(" ") +
                  Text(bar(r["p99_ms"], top, 12), style="red"))
    return t


def _best_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title="Which model does best, per query type (task label, else route)", title_justify="left")
    t.add_column("query type", overflow="fold", max_width=30)
    t.add_column("model")
    for name in ("requests", "error rate", "p50", "p95", "quality"):
        t.add_column(name, justify="right")
    for b in rows[:ROWS]:
        for i, m in enumerate(b["models"][:5]):
            mark = "★ " if m["model"] == b["best"] else "  "
            quality = f"{m['quality']:.3g} ({m['scores']})" if m["quality"] is not None else "–"
            t.add_row(b["query_type"] if i == 0 else "", mark + m["model"], count(m["requests"]),
                      pct(m["error_rate"]), ms(m["p50_ms"]), ms(m["p95_ms"]), quality,
                      end_section=i == min(len(b["models"]), 5) - 1)
    t.caption = ("★ best: highest feedback score where callers send scores, else lowest error rate, "
                 "then latency")
    return t
