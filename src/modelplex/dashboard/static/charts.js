// Small SVG charts for the modelplex dashboard: line, grouped horizontal bars, Pareto.
// No dependencies and no build step. Each chart sets data-points on its container to the number
// of data marks it drew (the browser test reads it).
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#4ea1ff", "#f5a623", "#e5484d", "#30a46c", "#a78bfa", "#14b8a6", "#f472b6"];

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (parent) parent.appendChild(node);
    return node;
  }

  function text(parent, x, y, s, anchor) {
    const t = el("text", { x: x, y: y, "text-anchor": anchor || "start" }, parent);
    t.textContent = s;
    return t;
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function empty(container, message) {
    container.replaceChildren();
    const d = document.createElement("div");
    d.className = "empty";
    d.textContent = message || "no data yet";
    container.appendChild(d);
    container.dataset.points = "0";
  }

  function legend(container, series) {
    const box = document.createElement("div");
    box.className = "legend";
    series.forEach(function (s, i) {
      const span = document.createElement("span");
      const sw = document.createElement("i");
      sw.style.background = s.color || COLORS[i % COLORS.length];
      span.appendChild(sw);
      span.appendChild(document.createTextNode(s.name));
      box.appendChild(span);
    });
    container.appendChild(box);
  }

  // opts: {x: [numbers], series: [{name, values: [number|null], color}], yFormat, xFormat, height}
  function line(container, opts) {
    const xs = opts.x || [];
    const series = (opts.series || []).filter(function (s) { return s.values.some(function (v) { return v != null; }); });
    if (!xs.length || !series.length) return empty(container);
    const W = Math.max(container.clientWidth || 600, 300), H = opts.height || 180;
    const L = 48, R = 10, T = 8, B = 22;
    const ymax = niceMax(Math.max.apply(null, series.flatMap(function (s) { return s.values.filter(function (v) { return v != null; }); })));
    const x0 = xs[0], x1 = xs[xs.length - 1] === x0 ? x0 + 1 : xs[xs.length - 1];
    const sx = function (x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
    const sy = function (y) { return T + (1 - y / ymax) * (H - T - B); };
    const svg = el("svg", { viewBox: "0 0 " + W + " " + H, role: "img" });
    const fy = opts.yFormat || function (v) { return String(Math.round(v * 100) / 100); };
    const fx = opts.xFormat || function (v) { return String(v); };
    for (let i = 0; i <= 4; i++) {
      const y = ymax * i / 4;
      el("line", { x1: L, x2: W - R, y1: sy(y), y2: sy(y), class: "grid" }, svg);
      text(svg, L - 6, sy(y) + 4, fy(y), "end");
    }
    for (let i = 0; i <= 4; i++) {
      const x = x0 + (x1 - x0) * i / 4;
      text(svg, sx(x), H - 6, fx(x), i === 0 ? "start" : i === 4 ? "end" : "middle");
    }
    let points = 0;
    series.forEach(function (s, i) {
      let d = "", pen = false;
      s.values.forEach(function (v, j) {
        if (v == null) { pen = false; return; }
        d += (pen ? "L" : "M") + sx(xs[j]).toFixed(1) + " " + sy(v).toFixed(1);
        pen = true;
        points++;
      });
      const color = s.color || COLORS[i % COLORS.length];
      el("path", { d: d, fill: "none", stroke: color, "stroke-width": 1.8, class: "series" }, svg);
      if (xs.length <= 120) {  // sparse series: a dot per point, so a lone point still shows
        s.values.forEach(function (v, j) {
          if (v != null) el("circle", { cx: sx(xs[j]).toFixed(1), cy: sy(v).toFixed(1), r: 2.5, fill: color }, svg);
        });
      }
    });
    container.replaceChildren(svg);
    legend(container, series);
    container.dataset.points = String(points);
  }

  // opts: {rows: [{label, values: [number|null]}], series: [{name, color}], format}
  function hbars(container, opts) {
    const rows = (opts.rows || []).filter(function (r) { return r.values.some(function (v) { return v != null; }); });
    if (!rows.length) return empty(container);
    const series = opts.series || [{ name: "" }];
    const W = Math.max(container.clientWidth || 500, 280);
    const bar = 12, gap = 2, group = series.length * (bar + gap) + 10;
    const L = Math.min(170, Math.max(70, 7 * Math.max.apply(null, rows.map(function (r) { return r.label.length; })))), R = 80;
    const H = rows.length * group + 6;
    const vmax = niceMax(Math.max.apply(null, rows.flatMap(function (r) { return r.values.filter(function (v) { return v != null; }); })));
    const fmt = opts.format || function (v) { return String(v); };
    const svg = el("svg", { viewBox: "0 0 " + W + " " + H, role: "img" });
    let points = 0;
    rows.forEach(function (r, i) {
      const y0 = 4 + i * group;
      const label = r.label.length > 26 ? r.label.slice(0, 25) + "…" : r.label;
      text(svg, L - 6, y0 + (series.length * (bar + gap)) / 2 + 4, label, "end");
      r.values.forEach(function (v, j) {
        if (v == null) return;
        const y = y0 + j * (bar + gap);
        const w = Math.max(v / vmax * (W - L - R), 1);
        el("rect", { x: L, y: y, width: w.toFixed(1), height: bar, rx: 2, class: "bar",
                     fill: series[j].color || COLORS[j % COLORS.length] }, svg);
        text(svg, L + w + 4, y + bar - 2, fmt(v));
        points++;
      });
    });
    container.replaceChildren(svg);
    if (series.length > 1 || series[0].name) legend(container, series);
    container.dataset.points = String(points);
  }

  // opts: {labels, values, cum (0..1), format, share (e.g. 0.8)}
  function pareto(container, opts) {
    const labels = opts.labels || [];
    if (!labels.length || !opts.values.some(function (v) { return v > 0; })) return empty(container);
    const W = Math.max(container.clientWidth || 600, 300), H = 220, L = 56, R = 40, T = 8, B = 48;
    const vmax = niceMax(Math.max.apply(null, opts.values));
    const n = labels.length, step = (W - L - R) / n, bw = Math.max(step * 0.7, 2);
    const sy = function (v) { return T + (1 - v / vmax) * (H - T - B); };
    const sc = function (c) { return T + (1 - c) * (H - T - B); };
    const fmt = opts.format || function (v) { return String(v); };
    const svg = el("svg", { viewBox: "0 0 " + W + " " + H, role: "img" });
    for (let i = 0; i <= 4; i++) {
      el("line", { x1: L, x2: W - R, y1: sy(vmax * i / 4), y2: sy(vmax * i / 4), class: "grid" }, svg);
      text(svg, L - 6, sy(vmax * i / 4) + 4, fmt(vmax * i / 4), "end");
      text(svg, W - R + 4, sc(i / 4) + 4, (i * 25) + "%");
    }
    const share = opts.share || 0.8;
    el("line", { x1: L, x2: W - R, y1: sc(share), y2: sc(share), stroke: COLORS[2], "stroke-dasharray": "4 3" }, svg);
    let d = "";
    opts.values.forEach(function (v, i) {
      const x = L + i * step + (step - bw) / 2;
      el("rect", { x: x.toFixed(1), y: sy(v).toFixed(1), width: bw.toFixed(1), height: Math.max(H - B - sy(v), 0).toFixed(1),
                   fill: COLORS[0], class: "bar" }, svg);
      d += (i ? "L" : "M") + (x + bw / 2).toFixed(1) + " " + sc(opts.cum[i]).toFixed(1);
      const label = labels[i].length > 12 ? labels[i].slice(0, 11) + "…" : labels[i];
      const t = text(svg, x + bw / 2, H - B + 14, label, "end");
      t.setAttribute("transform", "rotate(-30 " + (x + bw / 2).toFixed(1) + " " + (H - B + 14) + ")");
    });
    el("path", { d: d, fill: "none", stroke: COLORS[1], "stroke-width": 2, class: "series" }, svg);
    container.replaceChildren(svg);
    legend(container, [{ name: "spend", color: COLORS[0] }, { name: "cumulative share", color: COLORS[1] },
                       { name: Math.round(share * 100) + "% of spend", color: COLORS[2] }]);
    container.dataset.points = String(labels.length);
  }

  window.Charts = { line: line, hbars: hbars, pareto: pareto, COLORS: COLORS };
})();
