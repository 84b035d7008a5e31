// The modelplex dashboard: fetch /dashboard/api/live and draw every panel; repeat.
// The browser sends the admin credential (HTTP Basic) it was asked for when the page loaded.
"use strict";
(function () {
  const state = { timer: null, renders: 0, lastError: null, data: null };
  window.__dashboard = state;
  const $ = function (id) { return document.getElementById(id); };

  function money(micro, currency) {
    if (micro == null) return "–";
    const v = micro / 1e6;
    const s = Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(3);
    return s + " " + (currency || "");
  }
  function ms(v) { return v == null ? "–" : v >= 1000 ? (v / 1000).toFixed(2) + " s" : Math.round(v) + " ms"; }
  function pct(v) { return v == null ? "–" : (v * 100).toFixed(1) + "%"; }
  function clock(t) { const d = new Date(t * 1000); return d.toTimeString().slice(0, 8); }

  function table(node, head, rows) {
    node.replaceChildren();
    const tr = document.createElement("tr");
    head.forEach(function (h) {
      const th = document.createElement("th");
      th.textContent = h.label;
      if (h.num) th.className = "num";
      tr.appendChild(th);
    });
    node.appendChild(tr);
    rows.forEach(function (r) {
      const row = document.createElement("tr");
      r.forEach(function (cell, i) {
        const td = document.createElement("td");
        if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell == null ? "–" : String(cell);
        if (head[i].num) td.className = "num";
        row.appendChild(td);
      });
      node.appendChild(row);
    });
  }

  function kpis(d) {
    const t = d.traffic, last60 = t.requests.slice(-60), err60 = t.errors.slice(-60);
    const req = last60.reduce(function (a, b) { return a + b; }, 0);
    const err = err60.reduce(function (a, b) { return a + b; }, 0);
    const items = [
      ["requests / s (1 min)", (req / 60).toFixed(2)],
      ["error rate (1 min)", req ? pct(err / req) : "–"],
      ["p50 latency (5 min)", ms(d.latency.p50)],
      ["p99 latency (5 min)", ms(d.latency.p99)],
      ["cost per success", money(d.totals.avg_cost_micro, d.currency)],
      ["savings vs baseline", money(d.savings.total.savings_micro, d.currency)],
    ];
    const box = $("kpis");
    box.replaceChildren();
    items.forEach(function (it) {
      const div = document.createElement("div");
      div.className = "kpi";
      const v = document.createElement("div"); v.className = "v"; v.textContent = it[1];
      const k = document.createElement("div"); k.className = "k"; k.textContent = it[0];
      div.appendChild(v); div.appendChild(k);
      box.appendChild(div);
    });
  }

  function render(d) {
    const C = window.Charts;
    kpis(d);
    C.line($("traffic"), { x: d.traffic.t, xFormat: clock, series: [
      { name: "requests/s", values: d.traffic.requests, color: C.COLORS[0] },
      { name: "errors/s", values: d.traffic.errors, color: C.COLORS[2] }] });
    C.line($("latency"), { x: d.latency.t, xFormat: clock, yFormat: function (v) { return Math.round(v) + ""; }, series: [
      { name: "p50", values: d.latency.series.p50, color: C.COLORS[0] },
      { name: "p95", values: d.latency.series.p95, color: C.COLORS[1] },
      { name: "p99", values: d.latency.series.p99, color: C.COLORS[2] }] });
    C.hbars($("latency-providers"), { format: ms,
      series: [{ name: "p50", color: C.COLORS[0] }, { name: "p90", color: C.COLORS[1] }, { name: "p99", color: C.COLORS[2] }],
      rows: d.latency.by_provider.map(function (p) { return { label: p.provider, values: [p.p50, p.p90, p.p99] }; }) });
    C.hbars($("errors"), { format: pct, series: [{ name: "error rate", color: C.COLORS[2] }],
      rows: d.errors_by_provider.map(function (p) { return { label: p.provider, values: [p.error_rate] }; }) });
    table($("errors-table"), [{ label: "provider" }, { label: "requests", num: true }, { label: "errors", num: true }, { label: "classes" }],
      d.errors_by_provider.map(function (p) {
        return [p.provider, p.requests, p.errors, Object.entries(p.classes).map(function (kv) { return kv[0] + " ×" + kv[1]; }).join(", ")];
      }));
    C.hbars($("cost"), { format: function (v) { return money(v, d.currency); },
      series: [{ name: "answer", color: C.COLORS[0] }, { name: "all-in (with waste and failures)", color: C.COLORS[1] }],
      rows: d.cost.map(function (m) { return { label: m.model, values: [m.avg_cost_micro, m.all_in_per_ok_micro] }; }) });
    C.hbars($("savings"), { format: function (v) { return money(v, d.currency); },
      series: [{ name: "actual", color: C.COLORS[0] }, { name: "on the baseline", color: C.COLORS[4] }],
      rows: d.savings.by_route.filter(function (r) { return r.counterfactual_micro > 0; })
        .map(function (r) { return { label: r.route + " (" + pct(r.savings_share) + " saved)", values: [r.cost_micro, r.counterfactual_micro] }; }) });
    const dim = $("pareto-dim").value, p = d.pareto[dim];
    C.pareto($("pareto"), { labels: p.top.map(function (g) { return g.group; }), values: p.top.map(function (g) { return g.spend_micro; }),
      cum: p.top.map(function (g) { return g.cum_share; }), format: function (v) { return money(v, ""); } });
    $("pareto-note").textContent = p.groups ? p.set_size + " of " + p.groups + " groups make 80 % of spend (" +
      money(p.spend_micro, d.currency) + ") with " + pct(p.set_request_share) + " of requests." : "";
    table($("breakers"), [{ label: "deployment" }, { label: "provider" }, { label: "state" }, { label: "cooldown", num: true }, { label: "in flight", num: true }],
      d.breakers.map(function (b) {
        const chip = document.createElement("span");
        chip.className = "state " + b.state;
        chip.textContent = b.state.replace("_", "-") + (b.state === "open" ? " " + b.open_for_s.toFixed(0) + "s" : "");
        return [b.deployment, b.provider, chip, b.cooldown_s > 0 ? b.cooldown_s.toFixed(1) + " s" : "–", b.inflight];
      }));
    const budgets = $("budgets");
    if (!d.budgets || !d.budgets.length) {
      budgets.replaceChildren(document.createTextNode("No budgets configured."));
      budgets.className = "muted";
    } else {
      const t = document.createElement("table");
      table(t, [{ label: "scope" }, { label: "period" }, { label: "spent", num: true }, { label: "limit", num: true }, { label: "used", num: true }],
        d.budgets.map(function (b) { return [b.scope, b.period, money(b.spent_micro, d.currency), money(b.limit_micro, d.currency), pct(b.spent_micro / b.limit_micro)]; }));
      budgets.className = "";
      budgets.replaceChildren(t);
    }
    const rl = d.request_log;
    table($("requestlog"), [{ label: "" }, { label: "", num: true }], rl ? [
      ["store", rl.store_up ? "up" : "down" + (rl.last_error ? " (" + rl.last_error.slice(0, 60) + ")" : "")],
      ["rows spooled", rl.rows_spooled], ["rows shipped", rl.rows_shipped], ["backlog rows", rl.backlog_rows],
      ["backlog bytes", rl.backlog_bytes], ["dead-lettered", rl.rows_dead_lettered], ["lost", rl.rows_lost]] : [["request log", "disabled"]]);
    $("status").textContent = "updated " + clock(d.now) + " · up since " + new Date(d.started * 1000).toLocaleString();
  }

  async function refresh() {
    try {
      const r = await fetch("/dashboard/api/live", { credentials: "same-origin", cache: "no-store" });
      if (!r.ok) throw new Error("HTTP " + r.status);
      const d = await r.json();
      state.data = d;
      render(d);
      state.renders++;
      state.lastError = null;
    } catch (e) {
      state.lastError = String(e);
      $("status").textContent = "refresh failed: " + e;
    }
    schedule();
  }

  function schedule() {
    clearTimeout(state.timer);
    const every = Number($("refresh").value);
    if (every > 0) state.timer = setTimeout(refresh, every);
  }

  document.addEventListener("DOMContentLoaded", function () {
    $("refresh").addEventListener("change", refresh);
    $("pareto-dim").addEventListener("change", function () { if (state.data) render(state.data); });
    refresh();
  });
})();
