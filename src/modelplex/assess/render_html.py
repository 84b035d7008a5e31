"""The assessment as one self-contained HTML page: tables and inline SVG charts, no script, no
network."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from html import escape
from typing import Any

from modelplex.assess.fmt import count, money, ms, pct

COLORS = ("#2f6fde", "#e0912f", "#d64545", "#2e9c63", "#8a63d2")
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2530;
background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:20px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}h3{font-size:14px;margin:16px 0 6px}
.muted{color:#66717f}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(190px,1fr));gap:10px;margin:14px 0}
.card{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:10px 12px}
.card b{display:block;font-size:19px}.card span{color:#66717f;font-size:12px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dde1e6;font-size:13px}
th,td{padding:4px 8px;border-bottom:1px solid #eceff2;text-align:left}th{background:#f0f2f5;font-weight:600}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}tr.in td:first-child{font-weight:600}
svg{background:#fff;border:1px solid #dde1e6;border-radius:6px;display:block;margin:6px 0;max-width:100%}
svg text{font-size:11px;fill:#4a5561}.grid{display:grid;grid-template-columns:1fr 1fr;gap:14px}
.yes{color:#2e9c63;font-weight:600}.no{color:#d64545;font-weight:600}
"""


def _when(ts: float | None) -> str:
    if ts is None:
        return "–"
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")  # noqa: UP017


def _table(head: Sequence[tuple[str, bool]], rows: Sequence[Sequence[str]], marked: int = 0) -> str:
    out = ["<table><tr>", *(f'<th class="{"n" if n else ""}">{escape(h)}</th>' for h, n in head), "</tr>"]
    for i, row in enumerate(rows):
        out.append(f'<tr class="{"in" if i < marked else ""}">')
        out += [f'<td class="{"n" if head[j][1] else ""}">{escape(c)}</td>' for j, c in enumerate(row)]
        out.append("</tr>")
    out.append("</table>")
    return "".join(out)


def _hbars(rows: Sequence[tuple[str, Sequence[float | None]]], names: Sequence[str],
           fmt: Callable[[float], str], width: int = 520) -> str:
    rows = [r for r in rows if any(v is not None for v in r[1])]
    if not rows:
        return '<p class="muted">no data</p>'
    bar, gap = 12, 2
    group = len(names) * (bar + gap) + 10
    left, right = 150, 90
    height = len(rows) * group + 24
    top = max((v for _, vs in rows for v in vs if v is not None), default=0) or 1
    out = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">']
    for i, (label, values) in enumerate(rows):
        y0 = 4 + i * group
        short = label if len(label) <= 22 else label[:21] + "…"
        out.append(f'<text x="{left - 6}" y="{y0 + len(names) * (bar + gap) / 2 + 4:.1f}" '
                   f'text-anchor="end">{escape(short)}</text>')
        for j, v in enumerate(values):
            if v is None:
                continue
            w = max(v / top * (width - left - right), 1)
            y = y0 + j * (bar + gap)
            out.append(f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar}" rx="2" '
                       f'fill="{COLORS[j % len(COLORS)]}"/>')
            out.append(f'<text x="{left + w + 4:.1f}" y="{y + bar - 2}">{escape(fmt(v))}</text>')
    for j, name in enumerate(names):
        x = left + j * 130
        color = COLORS[j % len(COLORS)]
        out.append(f'<rect x="{x}" y="{height - 14}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{x + 14}" y="{height - 5}">{escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def _pareto_svg(p: dict[str, Any], width: int = 1060, height: int = 240) -> str:
    groups = p["top"]
    if not groups or not p["spend_micro"]:
        return '<p class="muted">no spend</p>'
    left, right, top_pad, bottom = 70, 44, 10, 60
    plot_h = height - top_pad - bottom
    vmax = max(g["spend_micro"] for g in groups) or 1
    step = (width - left - right) / len(groups)
    bw = step * 0.7

    def y_of(v: float) -> float:
        return top_pad + (1 - v / vmax) * plot_h

    def y_cum(c: float) -> float:
        return top_pad + (1 - c) * plot_h

    out = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">']
    for i in range(5):
        yc = y_cum(i / 4)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{yc:.1f}" y2="{yc:.1f}" stroke="#eceff2"/>'
                   f'<text x="{width - right + 4}" y="{yc + 4:.1f}">{i * 25}%</text>'
                   f'<text x="{left - 6}" y="{y_of(vmax * i / 4) + 4:.1f}" text-anchor="end">'
                   f'{escape(money(vmax * i / 4))}</text>')
    out.append(f'<line x1="{left}" x2="{width - right}" y1="{y_cum(0.8):.1f}" y2="{y_cum(0.8):.1f}" '
               f'stroke="{COLORS[2]}" stroke-dasharray="4 3"/>')
    path = []
    for i, g in enumerate(groups):
        x = left + i * step + (step - bw) / 2
        fill = COLORS[0] if i < p["set_size"] else "#9db7e8"
        out.append(f'<rect x="{x:.1f}" y="{y_of(g["spend_micro"]):.1f}" width="{bw:.1f}" '
                   f'height="{height - bottom - y_of(g["spend_micro"]):.1f}" fill="{fill}"/>')
        path.append(f'{"L" if i else "M"}{x + bw / 2:.1f} {y_cum(g["cum_share"]):.1f}')
        label = g["group"] if len(g["group"]) <= 14 else g["group"][:13] + "…"
        cx, ly = x + bw / 2, height - bottom + 12
        out.append(f'<text x="{cx:.1f}" y="{ly}" text-anchor="end" transform="rotate(-30 {cx:.1f} {ly})">'
                   f'{escape(label)}</text>')
    out.append(f'<path d="{" ".join(path)}" fill="none" stroke="{COLORS[1]}" stroke-width="2"/></svg>')
    return "".join(out)


def _area(ts: Sequence[float], values: Sequence[float], color: str, label: str, fmt: Callable[[float], str],
          width: int = 520, height: int = 110) -> str:
    if not values:
        return ""
    top = max(values) or 1
    n = max(len(values) - 1, 1)
    pts = [(4 + i / n * (width - 8), height - 18 - v / top * (height - 34)) for i, v in enumerate(values)]
    line = " ".join(f"{'L' if i else 'M'}{x:.1f} {y:.1f}" for i, (x, y) in enumerate(pts))
    area = f"{line} L{pts[-1][0]:.1f} {height - 18} L{pts[0][0]:.1f} {height - 18} Z"
    return (f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">'
            f'<path d="{area}" fill="{color}" fill-opacity="0.18"/>'
            f'<path d="{line}" fill="none" stroke="{color}" stroke-width="1.6"/>'
            f'<text x="6" y="14">{escape(label)} (max {escape(fmt(top))})</text>'
            f'<text x="6" y="{height - 4}">{escape(_when(ts[0]))}</text>'
            f'<text x="{width - 6}" y="{height - 4}" text-anchor="end">{escape(_when(ts[-1]))}</text></svg>')


def render(report: dict[str, Any]) -> str:
    cur = report["currency"] or ""
    o, sv, s = report["overview"], report["savings"]["total"], report["series"]
    cards = [
        (money(o["avg_cost_per_success_micro"], cur), "average cost per successful response"),
        (money(o["all_in_per_success_micro"], cur), "all-in per success (with waste and failures)"),
        (money(o["spend_micro"], cur), "total spend"),
        (money(o["wasted_micro"], cur), "wasted (successful requests)"),
        (money(o["failed_micro"], cur), "failed requests"),
        (f"{money(sv['savings_micro'], cur)} ({pct(sv['savings_share'])})", "savings vs baseline"),
        (count(o["requests"]), f"requests, error rate {pct(o['error_rate'])}"),
    ]
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>modelplex assess</title>"
        f"<style>{_CSS}</style></head><body><main>",
        "<h1>modelplex assess</h1>",
        f'<p class="muted">{escape(report["source"])} · {escape(_when(o["first_ts"]))} → '
        f'{escape(_when(o["last_ts"]))} · computed in {report["seconds"]:.2f} s</p>',
        '<div class="cards">',
        *(f"<div class=card><b>{escape(v)}</b><span>{escape(k)}</span></div>" for v, k in cards),
        "</div>",
    ]
    if s["t"]:
        parts += ["<div class=grid>",
                  _area(s["t"], s["requests"], COLORS[0], "requests", lambda v: count(int(v))),
                  _area(s["t"], s["spend_micro"], COLORS[1], "spend", lambda v: money(v, cur)), "</div>"]
    parts.append("<h2>1. Cost per successful response</h2>")
    for dim in ("provider", "model", "route"):
        rows = report["cost"][dim]
        parts.append(f"<h3>by {dim}</h3>")
        bars = [(r[dim], (r["avg_cost_per_success_micro"], r["all_in_per_success_micro"])) for r in rows[:12]]
        parts.append(_hbars(bars, ("per success", "all-in per success"), lambda v: money(v, cur)))
        parts.append(_table(
            [(dim, False), ("requests", True), ("error rate", True), ("avg / success", True),
             ("all-in / success", True), ("answers", True), ("wasted", True), ("failed", True)],
            [[r[dim], count(r["requests"]), pct(r["error_rate"]), money(r["avg_cost_per_success_micro"], cur),
              money(r["all_in_per_success_micro"], cur), money(r["answer_micro"], cur),
              money(r["wasted_micro"], cur), money(r["failed_micro"], cur)] for r in rows]))
    parts.append("<h2>2. The Pareto of spend: the groups that make 80 % of it</h2>")
    for dim, title in (("route", "route"), ("task", "task label"), ("team", "team / key"),
                       ("fingerprint", "prompt fingerprint")):
        p = report["pareto"][dim]
        parts.append(f"<h3>by {escape(title)}: {count(p['set_size'])} of {count(p['groups'])} groups "
                     f"({pct(p['set_group_share'])}) make 80 % of spend, with {pct(p['set_request_share'])} "
                     f"of requests</h3>")
        parts.append(_pareto_svg(p))
        parts.append(_table(
            [(title, False), ("spend", True), ("share", True), ("cumulative", True), ("requests", True),
             ("of requests", True)],
            [[g["group"], money(g["spend_micro"], cur), pct(g["spend_share"]), pct(g["cum_share"]),
              count(g["requests"]), pct(g["request_share"])] for g in p["top"]], marked=p["set_size"]))
    parts.append(_readiness(report["readiness"]))
    parts.append("<h2>Savings versus the baseline model</h2>")
    by_route = report["savings"]["by_route"]
    parts.append(_hbars([(r["route"], (r["cost_micro"], r["counterfactual_micro"])) for r in by_route[:12]],
                        ("actual", "on the baseline"), lambda v: money(v, cur)))
    parts.append(_table(
        [("route", False), ("baseline", False), ("requests", True), ("actual", True), ("on baseline", True),
         ("saved", True), ("saved %", True)],
        [[r["route"], r["baseline"] or "–", count(r["requests"]), money(r["cost_micro"], cur),
          money(r["counterfactual_micro"], cur), money(r["savings_micro"], cur), pct(r["savings_share"])]
         for r in by_route]))
    parts.append("<h2>Latency by provider (successful requests)</h2>")
    lat = report["latency"]
    parts.append(_hbars([(r["provider"], (r["p50_ms"], r["p90_ms"], r["p99_ms"])) for r in lat],
                        ("p50", "p90", "p99"), ms))
    parts.append(_table(
        [("provider", False), ("requests", True), ("p50", True), ("p90", True), ("p95", True), ("p99", True),
         ("TTFT p50", True), ("TTFT p99", True)],
        [[r["provider"], count(r["n"]), ms(r["p50_ms"]), ms(r["p90_ms"]), ms(r["p95_ms"]), ms(r["p99_ms"]),
          ms(r["ttft_p50_ms"]), ms(r["ttft_p99_ms"])] for r in lat]))
    parts.append("<h2>Which model does best, per query type</h2>")
    rows = []
    for b in report["best"][:30]:
        for m in b["models"][:6]:
            quality = f"{m['quality']:.3g} ({m['scores']})" if m["quality"] is not None else "–"
            name = ("★ " if m["model"] == b["best"] else "") + m["model"]
            rows.append([b["query_type"], name, count(m["requests"]), pct(m["error_rate"]), ms(m["p50_ms"]),
                         ms(m["p95_ms"]), quality])
    parts.append(_table([("query type", False), ("model", False), ("requests", True), ("error rate", True),
                         ("p50", True), ("p95", True), ("quality", True)], rows))
    parts.append('<p class="muted">★ best: highest feedback score where callers send scores, else lowest '
                 "error rate, then latency.</p></main></body></html>")
    return "".join(parts)


def _readiness(r: dict[str, Any]) -> str:
    rows = []
    for p in r["providers"]:
        missing = p["models_without_fallback"]
        rows.append([p["provider"], count(p["failovers"]), ms(p["p50_ms"]), ms(p["p99_ms"]), ms(p["max_ms"]),
                     count(p["unrecovered"]),
                     "(pass --config)" if missing is None else (", ".join(missing) or "none"),
                     {True: "yes", False: "no", None: "?"}[p["ready"]]])
    head = [("provider", False), ("failovers", True), ("p50", True), ("p99", True), ("max", True),
            ("unrecovered", True), ("models without a fallback elsewhere", False), ("ready", False)]
    bars = [(p["provider"], (p["p50_ms"], p["p99_ms"])) for p in r["providers"]]
    return ("<h2>3. Provider-switch readiness</h2><p class=muted>Measured failover: first failure → first "
            "byte of the answer, from real traffic. Ready: every model has a fallback on another provider "
            f"and failover p99 ≤ {escape(ms(r['target_ms']))}.</p>"
            + _hbars(bars, ("p50", "p99"), ms) + _table(head, rows))
