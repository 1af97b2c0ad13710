"""The dashboard's page, stylesheet and script: the stream's tiled layout, no external assets.

Kept in Python strings so the page ships inside the package (no package-data rules) and
works offline; the script is served from `/app.js` so the CSP can forbid inline scripts.
Layout (seed 000): cinematic camera top-left and large, with the model and its creation
time in its lower-right corner; hood camera and Convcam on the right; loss curve and
driving score (per version, with its interval, the NPC at 1.0, the baseline, `best` and the
version each player drives) stacked bottom-left, Server/Trainer console and Player console
beside them.
"""

from __future__ import annotations

INDEX_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Charles — live</title>
<link rel="stylesheet" href="/app.css">
<script src="/app.js" defer></script>
</head>
<body>
<header>
  <h1>Charles</h1>
  <span class="dim">run</span> <span id="run">-</span>
  <span class="dim">trainer</span> <span id="trainer-state">-</span>
  <span class="spacer"></span>
  <label for="player-picker" class="dim">player</label>
  <select id="player-picker" aria-label="player"><option value="">waiting for players</option></select>
  <span id="status" class="status down" title="connection">connecting</span>
</header>
<main id="layout">
  <section class="tile" id="tile-cinematic" data-camera="cinematic">
    <h2>Cinematic camera</h2>
    <div class="screen">
      <div class="placeholder">waiting for frames</div>
      <img id="cam-cinematic" alt="cinematic camera">
      <div id="model-badge" class="badge">no model yet</div>
    </div>
  </section>
  <section class="tile" id="tile-hood" data-camera="hood">
    <h2>Hood camera <span class="dim">(the model's input)</span></h2>
    <div class="screen">
      <div class="placeholder">waiting for frames</div>
      <img id="cam-hood" alt="hood camera">
    </div>
  </section>
  <section class="tile" id="tile-convcam" data-camera="convcam">
    <h2>Convcam</h2>
    <div class="screen">
      <div class="placeholder">waiting for frames</div>
      <img id="cam-convcam" alt="convcam" class="pixelated">
    </div>
  </section>
  <section class="tile" id="tile-loss">
    <h2>Loss <span class="dim">(TensorBoard: loss/total)</span></h2>
    <div class="body"><canvas id="loss-chart" aria-label="loss curve"></canvas></div>
  </section>
  <section class="tile" id="tile-score">
    <h2>Driving score <span class="dim">(ratio to NPC per version, evaluator)</span></h2>
    <div class="body"><canvas id="score-chart" aria-label="driving score per version"></canvas></div>
  </section>
  <section class="tile" id="tile-server">
    <h2>Server / Trainer console</h2>
    <div class="body console-box" id="server-console"></div>
  </section>
  <section class="tile" id="tile-player">
    <h2>Player console</h2>
    <div class="body console-box" id="player-console"></div>
  </section>
</main>
</body>
</html>
"""

APP_CSS = """
:root { --bg: #0b0d10; --tile: #12161b; --edge: #263040; --fg: #e6e6e6; --dim: #8a94a3; --accent: #4fc3f7; }
* { box-sizing: border-box; }
html, body { margin: 0; height: 100%; background: var(--bg); color: var(--fg);
  font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; }
header { display: flex; align-items: center; gap: .6rem; height: 40px; padding: 0 12px;
  border-bottom: 1px solid var(--edge); font-size: 14px; }
header h1 { font-size: 18px; margin: 0 .8rem 0 0; letter-spacing: .05em; color: var(--accent); }
.spacer { flex: 1; }
.dim { color: var(--dim); }
select { background: var(--tile); color: var(--fg); border: 1px solid var(--edge); padding: 2px 6px; }
.status { padding: 2px 8px; border-radius: 10px; font-size: 12px; }
.status.up { background: #1b5e20; }
.status.down { background: #7f1d1d; }
#layout { display: grid; height: calc(100vh - 40px); gap: 6px; padding: 6px;
  grid-template-columns: 1fr 1fr 1fr; grid-template-rows: 1fr 1fr .55fr .75fr;
  grid-template-areas: "cin cin hood" "cin cin conv" "loss server player" "score server player"; }
#tile-cinematic { grid-area: cin; } #tile-hood { grid-area: hood; } #tile-convcam { grid-area: conv; }
#tile-loss { grid-area: loss; } #tile-score { grid-area: score; } #tile-server { grid-area: server; } #tile-player { grid-area: player; }
.tile { position: relative; display: flex; flex-direction: column; min-width: 0; min-height: 0;
  background: var(--tile); border: 1px solid var(--edge); border-radius: 4px; overflow: hidden; }
.tile h2 { margin: 0; padding: 3px 8px; font-size: 12px; font-weight: 600; text-transform: uppercase;
  letter-spacing: .06em; color: var(--dim); border-bottom: 1px solid var(--edge); }
.screen, .body { position: relative; flex: 1; min-height: 0; }
.screen { background: #000; }
.screen img { position: absolute; inset: 0; width: 100%; height: 100%; object-fit: contain; }
.screen img:not([src]) { display: none; }
.screen img.pixelated { image-rendering: pixelated; }
.placeholder { position: absolute; inset: 0; display: flex; align-items: center; justify-content: center;
  color: var(--dim); font-size: 13px; }
.tile.live .placeholder { display: none; }
.badge { position: absolute; right: 10px; bottom: 10px; padding: 4px 10px; border-radius: 4px;
  background: rgba(0, 0, 0, .65); font: 600 14px "DejaVu Sans Mono", monospace; color: #fff; }
.console-box { overflow: hidden; background: #0c0c0c; }
pre.console { margin: 0; padding: 4px 6px; color: #e5e5e5; background: transparent; line-height: 1.2;
  font-family: "DejaVu Sans Mono", "Cascadia Mono", Menlo, Consolas, monospace; white-space: pre; }
canvas { position: absolute; inset: 0; width: 100%; height: 100%; }
"""

APP_JS = r"""
"use strict";
const CAMERAS = ["cinematic", "hood", "convcam"];
const $ = (id) => document.getElementById(id);
let source = null;
let shown = null;            // player id whose cameras the <img>s show
let wanted = new URLSearchParams(location.search).get("player") || "";
let loss = [];               // [batch, loss]
let last = null;             // last payload, for redraws on resize

function setStatus(up, text) {
  const el = $("status");
  el.className = "status " + (up ? "up" : "down");
  el.textContent = text;
}

function connect() {
  if (source) source.close();
  source = new EventSource("/events" + (wanted ? "?player=" + encodeURIComponent(wanted) : ""));
  source.onmessage = (ev) => render(JSON.parse(ev.data));
  source.onerror = () => setStatus(false, "reconnecting");
}

function fmtTime(ts) {
  if (!ts) return "-";
  const d = new Date(ts * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function showPlayer(p) {
  const id = p ? p.id : null;
  if (id === shown) return;
  shown = id;
  for (const cam of CAMERAS) {
    const img = $("cam-" + cam);
    img.closest(".tile").classList.remove("live");
    if (id) img.src = `/stream/${encodeURIComponent(id)}/${cam}`;
    else img.removeAttribute("src");
  }
}

function updatePicker(players, chosen) {
  const sel = $("player-picker");
  const ids = players.map((p) => p.id);
  const have = Array.from(sel.options).map((o) => o.value);
  if (ids.join("|") !== have.join("|")) {
    sel.replaceChildren(...(ids.length ? ids : [""]).map((id) => {
      const o = document.createElement("option");
      o.value = id; o.textContent = id || "no player connected";
      return o;
    }));
  }
  sel.value = chosen ? chosen.id : "";
}

function fit(box) {
  const pre = box.querySelector("pre");
  if (!pre) return;
  const lines = pre.textContent.replace(/\n+$/, "").split("\n");
  const cols = Math.max(...lines.map((l) => l.length), 20);
  const size = Math.min((box.clientWidth - 12) / (cols * 0.602), (box.clientHeight - 8) / (lines.length * 1.2), 18);
  pre.style.fontSize = Math.max(6, size).toFixed(2) + "px";
}

function render(s) {
  last = s;
  if (!s.ok) { setStatus(false, s.error || "Redis unreachable"); return; }
  setStatus(true, "live");
  $("run").textContent = s.run || "-";
  $("trainer-state").textContent = `${s.trainer.state || "-"} · batch ${s.trainer.batches} · weights v${s.weights.version}`;
  updatePicker(s.players, s.player);
  showPlayer(s.player);
  const p = s.player;
  const model = p ? (p.model || s.weights.model || "model") : (s.weights.model || null);
  const version = p ? p.model_version : s.weights.version;
  const created = p ? (p.model_created || (p.model_version === s.weights.version ? s.weights.created : null)) : s.weights.created;
  $("model-badge").textContent = model ? `${model} v${version} · created ${fmtTime(created)}` : "no model yet";
  $("server-console").innerHTML = s.server_console;   // rich's HTML export: text is escaped
  $("player-console").innerHTML = s.player_console;
  fit($("server-console")); fit($("player-console"));
  if (s.loss.reset) loss = [];
  for (const pt of s.loss.points) loss.push(pt);
  if (loss.length > 20000) loss = loss.slice(-20000);
  drawLoss();
  drawScore();
}

function niceTicks(lo, hi, n) {
  const span = hi - lo || 1;
  const step0 = Math.pow(10, Math.floor(Math.log10(span / n)));
  const step = [1, 2, 5, 10].map((m) => m * step0).find((s) => span / s <= n) || step0 * 10;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-12; v += step) ticks.push(v);
  return ticks;
}

// a canvas sized to its box at the device's pixel ratio, cleared; null while it has no size
function chart(id) {
  const canvas = $(id);
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (!w || !h) return null;
  canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  const g = canvas.getContext("2d");
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  g.font = "11px DejaVu Sans Mono, monospace";
  return {g, w, h};
}

function drawLoss() {
  const c = chart("loss-chart");
  if (!c) return;
  const {g, w, h} = c;
  if (!loss.length) {
    g.fillStyle = "#8a94a3"; g.textAlign = "center";
    g.fillText("no training yet (buffers filling)", w / 2, h / 2);
    return;
  }
  // TensorBoard's smoothing: a debiased exponential moving average
  const k = loss.length > 200 ? 0.9 : 0.6;
  const smooth = []; let ema = 0, weight = 0;
  for (const [, l] of loss) { ema = k * ema + (1 - k) * l; weight = k * weight + (1 - k); smooth.push(ema / weight); }
  const xs = loss.map((p) => p[0]);
  const ys = loss.map((p) => p[1]).filter(Number.isFinite);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const sorted = ys.slice().sort((a, b) => a - b);
  // a few early spikes must not flatten the curve: above 200 points the top is the 99th percentile
  const top = sorted.length > 200 ? sorted[Math.floor(0.99 * (sorted.length - 1))] : sorted[sorted.length - 1];
  const pad = (top - sorted[0]) * 0.08 || Math.abs(top) * 0.1 || 1;
  const y0 = Math.max(Math.min(0, sorted[0]), sorted[0] - pad), y1 = top + pad;
  const L = 46, R = 10, T = 8, B = 22;
  const px = (x) => L + (x - x0) / (x1 - x0) * (w - L - R);
  const py = (y) => T + (1 - (Math.min(y, y1) - y0) / (y1 - y0 || 1)) * (h - T - B);
  g.strokeStyle = "#263040"; g.fillStyle = "#8a94a3"; g.lineWidth = 1;
  g.textAlign = "right"; g.textBaseline = "middle";
  for (const t of niceTicks(y0, y1, 5)) {
    g.beginPath(); g.moveTo(L, py(t)); g.lineTo(w - R, py(t)); g.stroke();
    g.fillText(t.toPrecision(3).replace(/\.?0+$/, ""), L - 4, py(t));
  }
  g.textAlign = "center"; g.textBaseline = "top";
  for (const t of niceTicks(x0, x1, 5)) g.fillText(String(Math.round(t)), px(t), h - B + 4);
  const line = (vals, colour, width) => {
    g.strokeStyle = colour; g.lineWidth = width; g.beginPath();
    vals.forEach((v, i) => { const X = px(xs[i]), Y = py(v); i ? g.lineTo(X, Y) : g.moveTo(X, Y); });
    g.stroke();
  };
  line(loss.map((p) => p[1]), "rgba(255,112,67,0.35)", 1);
  line(smooth, "#ff7043", 2);
  g.textAlign = "right"; g.textBaseline = "top"; g.fillStyle = "#e6e6e6";
  g.fillText(`batch ${xs[xs.length - 1]}  loss ${loss[loss.length - 1][1].toFixed(4)}`, w - R, T);
}

function drawScore() {
  const c = chart("score-chart");
  if (!c) return;
  const {g, w, h} = c;
  const sc = last && last.ok ? last.scores : null;
  const pts = sc ? sc.points : [];
  if (!pts.length) {
    g.fillStyle = "#8a94a3"; g.textAlign = "center"; g.textBaseline = "middle";
    g.fillText("no version scored yet", w / 2, h / 2);
    return;
  }
  const vs = pts.map((p) => p.version);
  const x0 = Math.min(...vs) - 0.5, x1 = Math.max(...vs) + 0.5;
  const top = Math.max(1.2, ...pts.map((p) => (p.high != null ? p.high : p.ratio))) * 1.05;
  const L = 34, R = 8, T = 14, B = 16;
  const px = (v) => L + (v - x0) / (x1 - x0) * (w - L - R);
  const py = (y) => T + (1 - Math.min(y, top) / top) * (h - T - B);
  g.strokeStyle = "#263040"; g.fillStyle = "#8a94a3"; g.lineWidth = 1;
  g.textAlign = "right"; g.textBaseline = "middle";
  for (const t of niceTicks(0, top, 4)) {
    g.beginPath(); g.moveTo(L, py(t)); g.lineTo(w - R, py(t)); g.stroke();
    g.fillText(t.toFixed(1), L - 4, py(t));
  }
  g.textAlign = "center"; g.textBaseline = "top";
  for (const t of niceTicks(x0, x1, 6)) if (Number.isInteger(t)) g.fillText("v" + t, px(t), h - B + 3);
  const hline = (y, colour, dash, label) => {
    g.strokeStyle = colour; g.setLineDash(dash); g.beginPath(); g.moveTo(L, py(y)); g.lineTo(w - R, py(y)); g.stroke();
    g.setLineDash([]); g.fillStyle = colour; g.textAlign = "left"; g.textBaseline = "bottom";
    g.fillText(label, L + 3, py(y) - 1);
  };
  const base = sc.baseline;
  if (base) {
    if (base.low != null) {
      g.fillStyle = "rgba(138,148,163,0.15)";
      g.fillRect(L, py(base.high), w - L - R, py(base.low) - py(base.high));
    }
    hline(base.ratio, "#8a94a3", [2, 3], "baseline " + base.ratio.toFixed(2));
  }
  hline(1.0, "#e6e6e6", [6, 4], "NPC 1.0");
  // each player's version: a vertical marker with its id
  const players = sc.players || [];
  players.forEach((pl, i) => {
    if (pl.version < x0 || pl.version > x1) return;
    g.strokeStyle = "#ce93d8"; g.setLineDash([3, 3]); g.beginPath();
    g.moveTo(px(pl.version), T); g.lineTo(px(pl.version), h - B); g.stroke(); g.setLineDash([]);
    g.fillStyle = "#ce93d8"; g.textAlign = "right"; g.textBaseline = "top";
    g.fillText(pl.id + " ▸", px(pl.version) - 2, T + 1 + 11 * i);
  });
  const capW = Math.max(2, Math.min(6, (w - L - R) / pts.length / 3));
  g.strokeStyle = "#4fc3f7"; g.lineWidth = 1.5; g.beginPath();
  pts.forEach((p, i) => { const X = px(p.version), Y = py(p.ratio); i ? g.lineTo(X, Y) : g.moveTo(X, Y); });
  g.globalAlpha = 0.35; g.stroke(); g.globalAlpha = 1;
  for (const p of pts) {
    const X = px(p.version), best = p.version === sc.best;
    g.strokeStyle = g.fillStyle = best ? "#66bb6a" : "#4fc3f7";
    if (p.low != null && p.high != null) {
      g.lineWidth = 1.2; g.beginPath();
      g.moveTo(X, py(p.low)); g.lineTo(X, py(p.high));
      g.moveTo(X - capW, py(p.low)); g.lineTo(X + capW, py(p.low));
      g.moveTo(X - capW, py(p.high)); g.lineTo(X + capW, py(p.high)); g.stroke();
    }
    g.beginPath(); g.arc(X, py(p.ratio), best ? 4.5 : 2.5, 0, 2 * Math.PI); g.fill();
    if (best) {
      g.textAlign = "center"; g.textBaseline = "bottom";
      g.fillText("best", X, py(p.high != null ? p.high : p.ratio) - 3);
    }
  }
  const lastPt = pts[pts.length - 1];
  g.fillStyle = "#e6e6e6"; g.textAlign = "right"; g.textBaseline = "top";
  const ci = lastPt.low != null ? ` [${lastPt.low.toFixed(2)}, ${lastPt.high.toFixed(2)}]` : "";
  g.fillText(`v${lastPt.version} ${lastPt.ratio.toFixed(2)}${ci}` + (sc.best ? `  best v${sc.best}` : ""), w - R, 1);
}

window.addEventListener("DOMContentLoaded", () => {
  for (const cam of CAMERAS) {
    const img = $("cam-" + cam);
    img.addEventListener("load", () => img.closest(".tile").classList.add("live"));
    img.addEventListener("error", () => img.closest(".tile").classList.remove("live"));
  }
  $("player-picker").addEventListener("change", (ev) => {
    wanted = ev.target.value;
    history.replaceState(null, "", wanted ? "?player=" + encodeURIComponent(wanted) : location.pathname);
    connect();
  });
  window.addEventListener("resize", () => { if (last && last.ok) { fit($("server-console")); fit($("player-console")); } drawLoss(); drawScore(); });
  connect();
});
"""
