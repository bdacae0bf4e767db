"""The self-contained live chart page served at ``/memstress/memory``.

Plain HTML, inline CSS and JS, SVG drawing: no CDN, no build step (the suite
runs on machines without internet). The page polls ``samples?since=<elapsed>``
relative to its own URL, keeps the points in the browser, and redraws RSS (MB,
left axis) and pressure (%, right axis) over elapsed time, with one shaded band
per stage. Values of the head cards carry ids (``rss-now``, ``peak-now``,
``pressure-now``, ``strategy-now``, ``slope-now``, ``verdict-now``,
``stage-now``) so a test can find them in the rendered DOM.
"""

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>memstress: memory</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 16px 24px;
         color: #1b1f24; background: #fafbfc; }
  h1 { font-size: 20px; margin: 0 0 4px; }
  #sub { color: #57606a; margin-bottom: 12px; }
  #cards { display: flex; flex-wrap: wrap; gap: 8px; margin-bottom: 12px; }
  .card { background: #fff; border: 1px solid #d0d7de; border-radius: 6px;
          padding: 6px 12px; min-width: 110px; }
  .card .k { color: #57606a; font-size: 12px; }
  .card .v { font-size: 18px; font-weight: 600; font-variant-numeric: tabular-nums; }
  .leak { color: #cf222e; }
  #chart { background: #fff; border: 1px solid #d0d7de; border-radius: 6px;
           width: 100%; height: 420px; }
  #chart text { font-size: 11px; fill: #57606a; }
  #legend span { margin-right: 16px; }
  #stopped { color: #cf222e; font-weight: 600; }
</style>
</head>
<body>
<h1>Memory of the target</h1>
<div id="sub"><span id="scenario"></span> <span id="status">waiting for samples...</span></div>
<div id="stopped"></div>
<div id="cards">
  <div class="card"><div class="k">Stage</div><div class="v" id="stage-now">-</div></div>
  <div class="card"><div class="k">RSS</div><div class="v" id="rss-now">-</div></div>
  <div class="card"><div class="k">Peak RSS</div><div class="v" id="peak-now">-</div></div>
  <div class="card"><div class="k">Pressure</div><div class="v" id="pressure-now">-</div></div>
  <div class="card"><div class="k">Strategy</div><div class="v" id="strategy-now">-</div></div>
  <div class="card"><div class="k">Leak slope</div><div class="v" id="slope-now">-</div></div>
  <div class="card"><div class="k">Leak verdict</div><div class="v" id="verdict-now">-</div></div>
  <div class="card"><div class="k">Host memory</div><div class="v" id="host-now">-</div></div>
</div>
<svg id="chart" viewBox="0 0 1000 420" preserveAspectRatio="none" role="img"
     aria-label="target RSS and pressure over time, with stage bands"></svg>
<div id="legend">
  <span style="color:#0969da">&#9473; RSS (MB, left)</span>
  <span style="color:#bf8700">&#9476; pressure (%, right)</span>
  <span style="color:#57606a">shaded: stages</span>
</div>
<script>
"use strict";
const NS = "http://www.w3.org/2000/svg";
const W = 1000, H = 420, L = 60, R = 50, T = 28, B = 30;
let points = [], stages = [], last = -1, interval = 1;

function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function mb(b) { return b == null ? "-" : (b / 1048576).toFixed(1) + " MB"; }
function set(id, text, cls) {
  const e = document.getElementById(id);
  e.textContent = text;
  if (cls !== undefined) e.className = "v " + cls;
}

function draw() {
  const svg = document.getElementById("chart");
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  if (!points.length) return;
  const x0 = points[0][0], x1 = Math.max(points[points.length - 1][0], x0 + 1);
  const rss = points.map(p => p[1]).filter(v => v != null);
  let y0 = Math.min(...rss), y1 = Math.max(...rss);
  if (!isFinite(y0)) { y0 = 0; y1 = 1; }
  const pad = Math.max((y1 - y0) * 0.1, 1); y0 = Math.max(0, y0 - pad); y1 += pad;
  const X = t => L + (t - x0) / (x1 - x0) * (W - L - R);
  const Y = v => H - B - (v - y0) / (y1 - y0) * (H - T - B);
  const P = v => H - B - v / 100 * (H - T - B);
  stages.forEach((s, i) => {
    const a = X(Math.max(s.start, x0)), b = X(Math.min(s.end + interval, x1));
    if (b <= a) return;
    svg.appendChild(el("rect", {x: a, y: T, width: b - a, height: H - T - B,
      fill: i % 2 ? "#eef2f7" : "#f6f8fa"}));
    if (b - a > 40) svg.appendChild(el("text", {x: a + 4, y: T - 8}, s.name || "(before)"));
  });
  for (let i = 0; i <= 4; i++) {
    const v = y0 + (y1 - y0) * i / 4, y = Y(v);
    svg.appendChild(el("line", {x1: L, x2: W - R, y1: y, y2: y, stroke: "#d0d7de"}));
    svg.appendChild(el("text", {x: 4, y: y + 4}, v.toFixed(0) + " MB"));
    svg.appendChild(el("text", {x: W - R + 6, y: P(25 * i) + 4}, (25 * i) + "%"));
  }
  for (let i = 0; i <= 5; i++) {
    const t = x0 + (x1 - x0) * i / 5;
    svg.appendChild(el("text", {x: X(t) - 10, y: H - 10}, t.toFixed(0) + " s"));
  }
  const path = (col, f) => {
    let d = "", pen = "M";
    for (const p of points) {
      const v = p[col];
      if (v == null) { pen = "M"; continue; }
      d += pen + X(p[0]).toFixed(1) + "," + f(v).toFixed(1) + " "; pen = "L";
    }
    return d;
  };
  svg.appendChild(el("path", {d: path(2, P), fill: "none", stroke: "#bf8700",
    "stroke-width": 1.5, "stroke-dasharray": "4 3", id: "pressure-line"}));
  svg.appendChild(el("path", {d: path(1, Y), fill: "none", stroke: "#0969da",
    "stroke-width": 2, id: "rss-line"}));
}

function show(s) {
  const sc = document.getElementById("scenario");
  sc.textContent = s.scenario ? "scenario " + s.scenario + ":" : "";
  document.getElementById("status").textContent = s.samples + " samples";
  set("stage-now", s.stage || "-");
  set("rss-now", mb(s.rss_bytes));
  set("peak-now", mb(s.peak_rss_bytes));
  set("pressure-now", s.pressure == null ? "-" : s.pressure.toFixed(1) + " %");
  set("strategy-now", s.strategy || "-");
  set("slope-now", s.leak_slope_mb_min == null ? "-" :
      (s.leak_slope_mb_min >= 0 ? "+" : "") + s.leak_slope_mb_min.toFixed(2) + " MB/min");
  const names = {warmup: "warming up", clear: "no leak", leak: "LEAK"};
  const verdict = names[s.leak_state] || s.leak_state;
  set("verdict-now", verdict, s.leak_state === "leak" ? "leak" : "");
  set("host-now", s.host_percent == null ? "-" : s.host_percent.toFixed(1) + " %");
  document.getElementById("stopped").textContent = s.stop_reason ? "Stopped: " + s.stop_reason : "";
}

async function poll() {
  try {
    const r = await fetch("samples?since=" + last, {cache: "no-store"});
    if (r.ok) {
      const data = await r.json();
      interval = data.interval_s || interval;
      points = points.concat(data.points);
      if (points.length > 20000) points = points.slice(points.length - 20000);
      if (points.length) last = points[points.length - 1][0];
      stages = data.stages;
      show(data.summary);
      draw();
    } else {
      document.getElementById("status").textContent = "HTTP " + r.status;
    }
  } catch (e) {
    document.getElementById("status").textContent = "no answer from Locust";
  }
  setTimeout(poll, Math.max(1000, interval * 1000));
}
poll();
</script>
</body>
</html>
"""
