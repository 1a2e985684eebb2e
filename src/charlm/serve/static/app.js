// The explorer's page: draws what the server's /api answers. No framework, no build step.
// Every piece of user or model text goes into the page through textContent, never as HTML.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const DEFAULT_TEXT = "The Time Traveller (for so it will be convenient to speak of him) was expounding a " +
  "recondite matter to us. His grey eyes shone and twinkled, and his usually pale face was flushed " +
  "and animated.\n\"You must follow me carefully,\" he said.";
const BITS_MIN = 0.1;   // the surprisal colour scale is logarithmic, clamped to [BITS_MIN, BITS_MAX]
const BITS_MAX = 16;
const DIFF_MAX = 4;     // compare: differences beyond 4 bits get the deepest colour
const POLL_MS = 5000;   // training curves refresh this often while the Training view is shown
const VIEWS = ["read", "write", "neurons", "compare", "training"];

const state = {
  runs: [], limits: {}, presets: [], run: null, view: "read",
  read: null,        // the last /api/analyze answer shown, with the run it came from
  neuron: null,      // {run, text, tokens, values, top, layer, kind, unit, mask}
  compare: null,
  gen: null,         // {controller, samples:[{probs:[]}]} while generating
  pick: null,        // {text, history:[], base}
  metrics: {run: null, key: ""},
  tokenCache: new Map(),
};

const $ = (id) => document.getElementById(id);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function currentRun() {
  return state.runs.find((r) => r.id === state.run) || null;
}

function unitName(run) {
  return run && run.token === "word" ? "word" : "character";
}

// ---- errors -----------------------------------------------------------------------------------

class ApiError extends Error {}

function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error-text").textContent = "";
}

// Runs an event handler; any failure ends up in the error bar, never as an unhandled rejection.
function guard(fn) {
  return async (...args) => {
    try {
      await fn(...args);
    } catch (err) {
      if (err && err.name === "AbortError") return;
      if (!(err instanceof ApiError)) showError(String(err && err.message ? err.message : err));
    }
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function errorOf(response) {
  if (response.status === 429) return "The server is busy with other requests; try again in a moment.";
  try {
    const body = await response.json();
    if (body && body.error) return body.error;
  } catch (_) { /* not JSON: fall through to the status line */ }
  return `The server answered ${response.status} ${response.statusText}`;
}

// One request; a 429 (busy) is retried a few times with a growing pause before it is reported.
async function request(path, body, signal) {
  const init = body === undefined ? {signal} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body), signal,
  };
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(path, init);
    if (response.ok) return response;
    if (response.status === 429 && attempt < 4) {
      await sleep(250 * 2 ** attempt);
      continue;
    }
    const message = await errorOf(response);
    showError(message);
    throw new ApiError(message);
  }
}

async function api(path, body, signal) {
  const response = await request(path, body, signal);
  return response.json();
}

// ---- colours ----------------------------------------------------------------------------------

const REDS = ["#fff5f0", "#fee0d2", "#fcbba1", "#fc9272", "#fb6a4a", "#ef3b2c", "#cb181d", "#a50f15", "#67000d"];
const BLUE_RED = ["#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d", "#b2182b"];
const BLUE_ORANGE = ["#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fee0b6", "#fdb863", "#e08214", "#b35806"];

function hexToRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

const PALETTES = new Map([REDS, BLUE_RED, BLUE_ORANGE].map((p) => [p, p.map(hexToRgb)]));

// The colour at t in [0, 1] along a palette, and a text colour that stays readable on it.
function paint(palette, t) {
  const stops = PALETTES.get(palette);
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i;
  const rgb = stops[i].map((c, k) => Math.round(c + (stops[i + 1][k] - c) * f));
  const luminance = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255;
  return {bg: `rgb(${rgb.join(",")})`, fg: luminance < 0.55 ? "#fff" : "#1b1f24"};
}

function bitsPosition(bits) {
  const b = Math.min(Math.max(bits, BITS_MIN), BITS_MAX);
  return Math.log(b / BITS_MIN) / Math.log(BITS_MAX / BITS_MIN);
}

// A gamma above 1 keeps the well-predicted majority (around 1-2 bits) pale, so that surprises stand out.
const bitsColour = (bits) => paint(REDS, bitsPosition(bits) ** 1.4);
const activationColour = (v) => paint(BLUE_RED, (v + 1) / 2);
const diffColour = (d) => paint(BLUE_ORANGE, (Math.max(-DIFF_MAX, Math.min(DIFF_MAX, d)) / DIFF_MAX + 1) / 2);

// A horizontal colour bar with labelled ticks; `at(value)` gives a tick's place in [0, 1].
function legend(host, {palette, ticks, at, left, right, title}) {
  host.replaceChildren();
  if (title) host.append(el("span", "legend-title", title));
  const wrap = el("div", "legend-scale");
  const bar = el("div", "legend-bar");
  const stops = palette.map((c, i) => `${c} ${(100 * i / (palette.length - 1)).toFixed(1)}%`);
  bar.style.background = `linear-gradient(to right, ${stops.join(", ")})`;
  wrap.append(bar);
  const marks = el("div", "legend-ticks");
  for (const [value, label] of ticks) {
    const tick = el("span", "legend-tick", label);
    const place = at(value);
    tick.style.left = `${(100 * place).toFixed(1)}%`;
    if (place < 0.03) tick.classList.add("first");  // the end labels stay within the bar
    if (place > 0.97) tick.classList.add("last");
    marks.append(tick);
  }
  wrap.append(marks);
  if (left) host.append(el("span", "legend-end", left));
  host.append(wrap);
  if (right) host.append(el("span", "legend-end", right));
}

// ---- tokens: one span per token, coloured, with a shared tooltip ------------------------------

// How a token reads in a tooltip or a list, where a bare space or newline would be invisible.
function tokenLabel(tok) {
  if (tok === " ") return "␣ space";
  if (tok === "\n") return "↵ newline";
  if (tok === "\t") return "⇥ tab";
  if (tok === "") return "(nothing)";
  return tok;
}

function tokenGlyph(tok) {
  if (tok === " ") return "␣";
  if (tok === "\n") return "↵";
  if (tok === "\t") return "⇥";
  return tok;
}

function tokenSpan(tok, i) {
  const span = el("span", "tok", tok);
  span.dataset.i = String(i);
  span.tabIndex = -1;
  if (tok === "\n") span.classList.add("nl");
  else if (tok === "\t") span.classList.add("tab");
  else if (tok === " ") span.classList.add("sp");
  return span;
}

// Builds every span in one fragment: thousands of tokens cost one reflow.
function renderTokens(container, tokens, {word = false, colour = null} = {}) {
  const fragment = document.createDocumentFragment();
  tokens.forEach((tok, i) => {
    if (word && i > 0) fragment.append(document.createTextNode(" "));
    const span = tokenSpan(tok, i);
    const c = colour ? colour(i) : null;
    if (c) {
      span.style.backgroundColor = c.bg;
      span.style.color = c.fg;
    } else if (colour) {
      span.classList.add("unscored");
    }
    fragment.append(span);
  });
  container.replaceChildren(fragment);
}

const tip = {node: null, owner: null};

function hideTip() {
  if (tip.node) tip.node.hidden = true;
  tip.owner = null;
}

function placeTip(target) {
  const node = tip.node;
  const rect = target.getBoundingClientRect();
  node.hidden = false;
  const width = node.offsetWidth;
  const height = node.offsetHeight;
  let left = Math.min(Math.max(8, rect.left + rect.width / 2 - width / 2), window.innerWidth - width - 8);
  let top = rect.bottom + 8;
  if (top + height > window.innerHeight - 8) top = Math.max(8, rect.top - height - 8);
  node.style.left = `${Math.round(left)}px`;
  node.style.top = `${Math.round(top)}px`;
}

// One listener per container (delegation): `describe(span)` fills the tooltip or returns false.
function attachTips(container, describe) {
  const show = (event) => {
    const span = event.target.closest ? event.target.closest(".tok") : null;
    if (!span || !container.contains(span)) return;
    if (tip.owner === span && !tip.node.hidden) return;
    tip.node.replaceChildren();
    if (describe(span, tip.node) === false) {
      hideTip();
      return;
    }
    tip.owner = span;
    placeTip(span);
  };
  container.addEventListener("mouseover", show);
  container.addEventListener("focusin", show);
  container.addEventListener("mouseleave", hideTip);
  container.addEventListener("focusout", (event) => {
    if (!container.contains(event.relatedTarget)) hideTip();
  });
  container.addEventListener("keydown", (event) => moveFocus(container, event));
}

// Arrow keys walk the characters of a token container (the spans are focusable but not tab stops).
function moveFocus(container, event) {
  if (event.key === "Escape") {
    hideTip();
    return;
  }
  const steps = {ArrowRight: 1, ArrowLeft: -1, ArrowDown: 40, ArrowUp: -40};
  const spans = container.querySelectorAll(".tok");
  if (!spans.length) return;
  const current = event.target.closest(".tok");
  let index = current ? Number(current.dataset.i) : -1;
  if (event.key in steps) index = index < 0 ? 0 : index + steps[event.key];
  else if (event.key === "Home") index = 0;
  else if (event.key === "End") index = spans.length - 1;
  else return;
  event.preventDefault();
  spans[Math.min(Math.max(index, 0), spans.length - 1)].focus();
}

function tipHead(node, tok) {
  node.append(el("div", "tip-token", tokenLabel(tok)));
}

function tipRows(node, rows) {
  const table = el("dl", "tip-stats");
  for (const [label, value] of rows) {
    table.append(el("dt", null, label), el("dd", null, value));
  }
  node.append(table);
}

const fmtP = (p) => (p >= 0.001 ? `${(100 * p).toFixed(1)}%` : p.toExponential(1));
const fmtBits = (b) => `${b.toFixed(2)} bits`;

function focusToken(container, i) {
  const span = container.querySelector(`.tok[data-i="${i}"]`);
  if (!span) return;
  span.scrollIntoView({block: "center", behavior: "smooth"});
  span.focus({preventScroll: true});
  span.classList.remove("flash");
  void span.offsetWidth; // restart the flash animation
  span.classList.add("flash");
}

// The ~20 characters around position `pos`, as a line with that token marked.
function contextLine(tokens, pos, {word = false, radius = 10} = {}) {
  const line = el("span", "context");
  const sep = word ? " " : "";
  const flat = (t) => t.replace(/\n/g, "↵").replace(/\t/g, "⇥");
  const before = tokens.slice(Math.max(0, pos - radius), pos).join(sep);
  const after = tokens.slice(pos + 1, pos + 1 + radius).join(sep);
  line.append(el("span", "context-side", (pos - radius > 0 ? "…" : "") + flat(before) + (word && before ? " " : "")));
  line.append(el("mark", null, tokenGlyph(tokens[pos])));
  line.append(el("span", "context-side", (word && after ? " " : "") + flat(after) +
    (pos + 1 + radius < tokens.length ? "…" : "")));
  return line;
}

// ---- SVG line chart ---------------------------------------------------------------------------

function niceTicks(lo, hi, count) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(+v.toPrecision(12));
  return ticks;
}

function fmtTick(v) {
  if (Math.abs(v) >= 1000) return v.toLocaleString("en-US", {maximumFractionDigits: 0});
  return String(+v.toPrecision(3));
}

// series: [{name, cls, points: [[x, y]...], dots}], drawn into `host` as one responsive <svg>.
function lineChart(host, {series, width = host.clientWidth || 720, height = 220, xLabel = "", yLabel = "",
  yRange = null, xRange = null, marks = [], zero = false}) {
  const pad = {left: 52, right: 16, top: 12, bottom: 36};
  const all = series.flatMap((s) => s.points);
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const [x0, x1] = xRange || [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = yRange || [Math.min(...ys), Math.max(...ys)];
  if (!yRange) {
    const margin = (y1 - y0) * 0.08 || 0.5;
    y0 -= margin;
    y1 += margin;
  }
  const W = width - pad.left - pad.right;
  const H = height - pad.top - pad.bottom;
  const sx = (x) => pad.left + (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5) * W;
  const sy = (y) => pad.top + (1 - (y - y0) / (y1 - y0)) * H;
  const root = svg("svg", {viewBox: `0 0 ${width} ${height}`, class: "chart-svg", role: "img",
    "aria-label": `${yLabel} by ${xLabel}`});
  for (const t of niceTicks(y0, y1, 4)) {
    root.append(svg("line", {x1: pad.left, x2: pad.left + W, y1: sy(t), y2: sy(t), class: "grid"}));
    const label = svg("text", {x: pad.left - 8, y: sy(t) + 4, class: "tick", "text-anchor": "end"});
    label.textContent = fmtTick(t);
    root.append(label);
  }
  const xTicks = niceTicks(x0, x1, 6).filter((t) => Number.isInteger(t) || x1 - x0 > 10);
  for (const t of xTicks) {
    const label = svg("text", {x: sx(t), y: pad.top + H + 18, class: "tick", "text-anchor": "middle"});
    label.textContent = fmtTick(t);
    root.append(label);
  }
  if (zero && y0 < 0 && y1 > 0) {
    root.append(svg("line", {x1: pad.left, x2: pad.left + W, y1: sy(0), y2: sy(0), class: "zero"}));
  }
  root.append(svg("line", {x1: pad.left, x2: pad.left + W, y1: pad.top + H, y2: pad.top + H, class: "axis"}));
  for (const m of marks) {
    root.append(svg("line", {x1: sx(m), x2: sx(m), y1: pad.top, y2: pad.top + H, class: "mark"}));
  }
  for (const s of series) {
    if (!s.points.length) continue;
    const points = s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
    root.append(svg("polyline", {points, class: `line ${s.cls}`}));
    if (s.dots) {
      for (const [x, y] of s.points) {
        const dot = svg("circle", {cx: sx(x), cy: sy(y), r: 3.2, class: `dot ${s.cls}`});
        const title = svg("title");
        title.textContent = `${s.name}, ${xLabel} ${fmtTick(x)}: ${y.toFixed(3)}`;
        dot.append(title);
        root.append(dot);
      }
    }
  }
  const xl = svg("text", {x: pad.left + W / 2, y: height - 4, class: "axis-label", "text-anchor": "middle"});
  xl.textContent = xLabel;
  const yl = svg("text", {x: 12, y: pad.top + H / 2, class: "axis-label", "text-anchor": "middle",
    transform: `rotate(-90 12 ${pad.top + H / 2})`});
  yl.textContent = yLabel;
  root.append(xl, yl);
  host.replaceChildren(root);
  if (series.length > 1) {
    const key = el("div", "chart-key");
    for (const s of series) {
      const item = el("span", "key-item");
      item.append(el("span", `swatch ${s.cls}`), document.createTextNode(s.name));
      key.append(item);
    }
    host.append(key);
  }
}

// ---- runs and tabs ----------------------------------------------------------------------------

function describeRun(run) {
  const cell = run.cell.toUpperCase();
  const bi = run.bidirectional ? "bidirectional " : "";
  const params = run.num_params ? ` · ${compact(run.num_params)} parameters` : "";
  return `${bi}${cell} ${run.num_layers}×${run.num_hiddens} · ${run.token} tokens · ` +
    `clean ${run.clean} · ${run.vocab.length} in vocabulary${params}`;
}

function compact(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e7 ? 0 : 1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(n >= 1e4 ? 0 : 1)}k`;
  return String(n);
}

function fillRunSelect(select, chosen) {
  select.replaceChildren(...state.runs.map((run) => {
    const option = el("option", null, `${run.name} (${run.id})`);
    option.value = run.id;
    return option;
  }));
  select.value = chosen;
}

function selectView(view, focus = false) {
  state.view = view;
  for (const name of VIEWS) {
    const tab = $(`tab-${name}`);
    const on = name === view;
    tab.setAttribute("aria-selected", String(on));
    tab.tabIndex = on ? 0 : -1;
    $(`view-${name}`).hidden = !on;
    if (on && focus) tab.focus();
  }
  hideTip();
  if (history.replaceState) history.replaceState(null, "", `#${view}`);
  if (view === "training") refreshMetrics(true);
}

function setupTabs() {
  for (const name of VIEWS) $(`tab-${name}`).addEventListener("click", () => selectView(name));
  document.querySelector(".tabs").addEventListener("keydown", (event) => {
    const i = VIEWS.indexOf(state.view);
    const next = {ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: VIEWS.length - 1}[event.key];
    if (next === undefined) return;
    event.preventDefault();
    selectView(VIEWS[(next + VIEWS.length) % VIEWS.length], true);
  });
}

function setRun(id) {
  state.run = id;
  const run = currentRun();
  $("run").value = id;
  $("run-desc").textContent = describeRun(run);
  stopGenerating();
  clearError();
  resetRead();
  setupWrite(run);
  setupNeurons(run);
  setupCompare();
  state.metrics = {run: null, key: ""};
  if (state.view === "training") refreshMetrics(true);
}

async function loadRuns() {
  const data = await api("/api/runs");
  state.runs = data.runs || [];
  state.limits = data.limits || {};
  state.presets = data.presets || (state.runs[0] && state.runs[0].presets) || [];
  const select = $("run");
  fillRunSelect(select, state.runs.length ? state.runs[0].id : "");
  select.disabled = state.runs.length < 2;
  if (!state.runs.length) {
    showError("The server has no runs to show.");
    return;
  }
  fillRunSelect($("compare-a"), state.runs[0].id);
  fillRunSelect($("compare-b"), (state.runs[1] || state.runs[0]).id);
  applyLimits();
  setRun(state.runs[0].id);
}

function applyLimits() {
  const {max_preds: maxPreds, max_samples: maxSamples, max_text: maxText} = state.limits;
  if (maxPreds) $("write-num-preds").max = String(maxPreds);
  if (maxSamples) $("write-num-samples").max = String(maxSamples);
  if (maxText) {
    for (const id of ["read-text", "neuron-text", "compare-text", "write-prefix"]) $(id).maxLength = maxText;
  }
}

// ---- shared text: Read, Neurons and Compare look at the same text unless changed --------------

const TEXT_IDS = ["read-text", "neuron-text", "compare-text"];

function setupSharedText() {
  for (const id of TEXT_IDS) {
    $(id).value = DEFAULT_TEXT;
    $(id).addEventListener("input", () => {
      for (const other of TEXT_IDS) if (other !== id) $(other).value = $(id).value;
    });
  }
}

function setSharedText(text) {
  for (const id of TEXT_IDS) $(id).value = text;
}

// ---- Read -------------------------------------------------------------------------------------

function resetRead() {
  state.read = null;
  $("read-result").hidden = true;
  $("read-out").replaceChildren();
}

async function readText() {
  const run = currentRun();
  const text = $("read-text").value;
  clearError();
  $("read-go").disabled = true;
  try {
    const res = await api("/api/analyze", {run: run.id, text, top: 5});
    state.read = {...res, run};
    state.tokenCache.set(cacheKey(run.id, text), res.tokens);
    renderRead();
  } finally {
    $("read-go").disabled = false;
  }
}

function renderRead() {
  const res = state.read;
  const run = res.run;
  const unit = unitName(run);
  const bpc = $("read-bpc");
  bpc.dataset.bpc = String(res.bpc);
  bpc.textContent = `${res.bpc.toFixed(3)}`;
  bpc.title = `${res.bpc} bits per ${unit}`;
  bpc.parentElement.querySelector(".stat-label").textContent = `Bits per ${unit}`;
  $("read-ppl").textContent = (2 ** res.bpc).toFixed(2);
  $("read-count").textContent = `${res.num_predicted.toLocaleString("en-US")} ${unit}s`;
  renderReadNotes(res, run);
  legend($("read-legend"), {palette: REDS, at: (b) => bitsPosition(b) ** 1.4, title: `bits per ${unit}`,
    ticks: [[0.1, "≤0.1"], [0.5, "0.5"], [1, "1"], [2, "2"], [4, "4"], [8, "8"], [16, "16+"]]});
  renderTokens($("read-out"), res.tokens, {word: run.token === "word",
    colour: (i) => (res.bits[i] === null || res.bits[i] === undefined ? null : bitsColour(res.bits[i]))});
  renderSummary(res, run);
  $("read-result").hidden = false;
}

function renderReadNotes(res, run) {
  const notes = [];
  if (res.cleaned) {
    notes.push(`The text was read as this run reads its corpus (cleaning “${run.clean}”, ${run.token} ` +
      "tokens), so what is shown differs from what was pasted.");
  }
  if (res.unknown) {
    notes.push(`${res.unknown} ${unitName(run)}${res.unknown === 1 ? " is" : "s are"} not in the run's ` +
      "vocabulary and count as <unk>.");
  }
  $("read-notes").textContent = notes.join(" ");
  $("read-notes").hidden = !notes.length;
}

function describeReadToken(span, node) {
  const res = state.read;
  if (!res) return false;
  const i = Number(span.dataset.i);
  const vocab = res.run.vocab;
  tipHead(node, res.tokens[i]);
  if (res.bits[i] === null || res.bits[i] === undefined) {
    node.append(el("p", "tip-note", "The first token has no score: nothing comes before it."));
    return true;
  }
  tipRows(node, [["probability", fmtP(res.probs[i])], ["surprisal", fmtBits(res.bits[i])],
    ["rank", `${res.ranks[i]} of ${vocab.length}`]]);
  const alts = el("ol", "tip-alts");
  alts.setAttribute("aria-label", "The model's top choices here");
  (res.top_ids[i] || []).forEach((id, k) => {
    const p = res.top_probs[i][k];
    const item = el("li", "alt");
    if (vocab[id] === res.tokens[i]) item.classList.add("actual");
    item.dataset.tok = vocab[id];
    item.dataset.p = String(p);
    const bar = el("span", "alt-bar");
    bar.style.setProperty("--p", String(p));
    item.append(el("span", "alt-tok", tokenLabel(vocab[id])), bar, el("span", "alt-p", fmtP(p)));
    alts.append(item);
  });
  node.append(alts);
  return true;
}

function renderSummary(res, run) {
  const host = $("read-summary");
  host.replaceChildren();
  const summary = res.summary || {};
  renderBaselines(host, res.bpc, summary.baselines, run);
  renderByClass(host, summary.by_class, run);
  renderByPlace(host, summary.by_place);
  renderCostliest(host, summary.costliest, res, run);
}

function barRow(label, value, max, cls, text) {
  const row = el("div", `bar-row ${cls || ""}`);
  const track = el("span", "bar-track");
  const fill = el("span", "bar-fill");
  fill.style.width = `${Math.max(1, Math.min(100, (100 * value) / max)).toFixed(1)}%`;
  track.append(fill);
  row.append(el("span", "bar-label", label), track, el("span", "bar-value", text));
  return row;
}

function renderBaselines(host, bpc, baselines, run) {
  if (!baselines) return;
  host.append(el("h3", null, "Against general compressors"));
  const rows = [["this model", bpc, "model"], ...Object.entries(baselines).map(([k, v]) => [k, v, ""])];
  const finite = rows.filter(([, v]) => typeof v === "number" && isFinite(v));
  const max = Math.max(...finite.map(([, v]) => v), 1);
  const box = el("div", "bars");
  for (const [label, value, cls] of finite) box.append(barRow(label, value, max, cls, value.toFixed(2)));
  host.append(box);
  host.append(el("p", "muted small", `bits per ${unitName(run)}; fewer is better`));
}

// by_class is {class: {bpc, count}} (or a bare number per class).
function renderByClass(host, byClass, run) {
  if (!byClass || !Object.keys(byClass).length) return;
  host.append(el("h3", null, `Bits by kind of ${unitName(run)}`));
  const entries = Object.entries(byClass).map(([name, v]) => {
    const bits = typeof v === "number" ? v : (v.bpc ?? v.bits ?? v.mean);
    const count = typeof v === "number" ? null : (v.count ?? v.n ?? null);
    return [name, bits, count];
  }).filter(([, bits]) => typeof bits === "number");
  const max = Math.max(...entries.map(([, b]) => b), 1);
  const box = el("div", "bars");
  for (const [name, bits, count] of entries) {
    const row = barRow(name, bits, max, "class", bits.toFixed(2));
    if (count !== null) row.title = `${count} ${unitName(run)}s`;
    box.append(row);
  }
  host.append(box);
}

// by_place is {"1": {bpc, count}, ..., "6+": ...}: a letter's bits by its place in its word.
function renderByPlace(host, byPlace) {
  if (!byPlace || !Object.keys(byPlace).length) return;
  host.append(el("h3", null, "Bits by a letter's place in its word"));
  const entries = Object.entries(byPlace);
  const max = Math.max(...entries.map(([, g]) => g.bpc), 1);
  const box = el("div", "bars by-place");
  for (const [place, g] of entries) {
    const label = place === "1" ? "1st letter" : place === "2" ? "2nd" : place === "3" ? "3rd" :
      place === "6+" ? "6th and on" : `${place}th`;
    const row = barRow(label, g.bpc, max, "class", g.bpc.toFixed(2));
    row.dataset.place = place;
    row.title = `${g.count} letters`;
    box.append(row);
  }
  host.append(box);
}

function renderCostliest(host, costliest, res, run) {
  if (!costliest || !costliest.length) return;
  host.append(el("h3", null, "Costliest"));
  const list = el("ol", "contexts clickable");
  for (const pos of costliest.slice(0, 8)) {
    const item = el("li");
    const button = el("button", "context-btn");
    button.type = "button";
    button.append(contextLine(res.tokens, pos, {word: run.token === "word", radius: 8}),
      el("span", "context-value", fmtBits(res.bits[pos])));
    button.addEventListener("click", () => focusToken($("read-out"), pos));
    item.append(button);
    list.append(item);
  }
  host.append(list);
}

function readFile(event) {
  const file = event.target.files && event.target.files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.addEventListener("load", guard(async () => {
    setSharedText(String(reader.result));
    $("read-file-name").textContent = file.name;
    await readText();
  }));
  reader.addEventListener("error", () => showError(`Could not read ${file.name}`));
  reader.readAsText(file);
}

// ---- Write: streamed samples ------------------------------------------------------------------

function setupWrite(run) {
  const blocked = !run.can_generate;
  $("write-form").disabled = blocked;
  $("tab-write").classList.toggle("tab-off", blocked);
  const banner = $("write-banner");
  banner.hidden = !blocked;
  banner.textContent = blocked ? `${run.name} is a bidirectional model: its prediction at each position has ` +
    "already seen the next token, so it cannot write text left to right. Read, Neurons and Compare " +
    "still work; pick a unidirectional run to write." : "";
  $("write-out").replaceChildren();
  resetPick();
  setStatus("idle", "");
}

function numberField(id, parse) {
  const raw = $(id).value.trim();
  return raw === "" ? null : parse(raw);
}

function generateBody() {
  const seed = numberField("write-seed-input", (v) => parseInt(v, 10));
  return {
    run: state.run,
    prefix: $("write-prefix").value,
    num_preds: numberField("write-num-preds", (v) => parseInt(v, 10)) ?? 100,
    temperature: numberField("write-temperature", parseFloat) ?? 1,
    top_k: numberField("write-top-k", (v) => parseInt(v, 10)) ?? 0,
    top_p: numberField("write-top-p", parseFloat) ?? 1,
    greedy: $("write-greedy").checked,
    seed,
    num_samples: numberField("write-num-samples", (v) => parseInt(v, 10)) ?? 1,
  };
}

function setStatus(kind, text) {
  const status = $("write-status");
  status.dataset.state = kind;
  status.textContent = text;
}

function sampleBoxes(prefix, count) {
  const host = $("write-out");
  host.replaceChildren();
  const boxes = [];
  for (let s = 0; s < count; s++) {
    const card = el("div", "card sample");
    if (count > 1) card.append(el("div", "sample-head", `sample ${s + 1}`));
    const body = el("div", "tokens sample-text");
    body.dataset.s = String(s);
    body.append(el("span", "prefix", prefix));
    card.append(body);
    host.append(card);
    boxes.push({body, probs: [], count: 0, text: prefix});
  }
  return boxes;
}

// Appends one sample's new tokens; word tokens are joined by spaces, as charlm.generate joins them.
function appendTokens(box, tokens, probs, word) {
  const fragment = document.createDocumentFragment();
  tokens.forEach((tok, k) => {
    if (tok === "") return; // a sample that has stopped sends nothing
    if (word && (box.count > 0 || !/\s$/.test(box.text))) fragment.append(document.createTextNode(" "));
    const span = tokenSpan(tok, box.count);
    const p = probs ? probs[k] : null;
    box.probs.push(p);
    box.count += 1;
    box.text += tok;
    fragment.append(span);
  });
  box.body.append(fragment);
}

async function generate() {
  const run = currentRun();
  const body = generateBody();
  clearError();
  stopGenerating();
  const controller = new AbortController();
  const boxes = sampleBoxes(body.prefix, Math.max(1, body.num_samples));
  state.gen = {controller, boxes, run};
  $("write-go").disabled = true;
  $("write-stop").disabled = false;
  $("write-seed").textContent = "…";
  $("write-notes").hidden = true;
  setStatus("running", "generating…");
  const started = performance.now();
  let produced = 0;
  try {
    const response = await request("/api/generate", body, controller.signal);
    await readLines(response, (msg) => {
      if (msg.error) throw new ApiError(msg.error);
      if ("seed" in msg) showSeed(msg.seed, msg.notes);
      if (msg.tokens) {
        msg.tokens.forEach((toks, s) => appendTokens(boxes[s], toks, msg.probs && msg.probs[s],
          run.token === "word"));
        produced += msg.tokens[0] ? msg.tokens[0].length : 0;
        setStatus("running", `generating… ${produced} ${unitName(run)}s`);
      }
      if (msg.done) {
        const seconds = ((performance.now() - started) / 1000).toFixed(1);
        setStatus("done", `done: ${produced} ${unitName(run)}s in ${seconds} s`);
      }
    });
    if ($("write-status").dataset.state === "running") setStatus("done", `ended after ${produced}`);
  } catch (err) {
    if (err && err.name === "AbortError") {
      setStatus("stopped", `stopped after ${produced} ${unitName(run)}s`);
    } else {
      setStatus("error", "failed");
      if (err instanceof ApiError) showError(err.message);
      throw err;
    }
  } finally {
    if (state.gen && state.gen.controller === controller) {
      $("write-go").disabled = false;
      $("write-stop").disabled = true;
    }
  }
}

// Reads an NDJSON body as it arrives and hands each parsed line to `onLine`.
async function readLines(response, onLine) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 1);
      if (line) onLine(JSON.parse(line));
    }
  }
  buffer += decoder.decode();
  if (buffer.trim()) onLine(JSON.parse(buffer));
}

function showSeed(seed, notes) {
  $("write-notes").textContent = (notes || []).join(" ");
  $("write-notes").hidden = !(notes && notes.length);
  const out = $("write-seed");
  out.textContent = String(seed);
  out.dataset.seed = String(seed);
  $("write-replay").disabled = false;
}

function stopGenerating() {
  if (state.gen) state.gen.controller.abort();
}

function describeWriteToken(span, node) {
  const body = span.closest(".sample-text");
  if (!state.gen || !body) return false;
  const box = state.gen.boxes[Number(body.dataset.s)];
  const p = box ? box.probs[Number(span.dataset.i)] : null;
  tipHead(node, span.textContent);
  if (p === null || p === undefined) return true;
  tipRows(node, [["probability", fmtP(p)], ["surprisal", fmtBits(-Math.log2(p))]]);
  node.append(el("p", "tip-note", "the chance it had of being drawn"));
  return true;
}

// ---- Write: picking the next token by hand ----------------------------------------------------

function setMode(pick) {
  $("mode-sample").setAttribute("aria-pressed", String(!pick));
  $("mode-pick").setAttribute("aria-pressed", String(pick));
  $("sample-controls").hidden = pick;
  $("pick-controls").hidden = !pick;
  $("write-out").hidden = pick;
  $("pick-out").hidden = !pick || !state.pick;
  if (pick) stopGenerating();
}

function resetPick() {
  state.pick = null;
  $("pick-out").hidden = true;
  $("pick-undo").disabled = true;
  $("pick-text").replaceChildren();
  $("pick-choices").replaceChildren();
}

async function startPick() {
  clearError();
  state.pick = {base: $("write-prefix").value, text: $("write-prefix").value, history: []};
  await showChoices();
}

async function showChoices() {
  const run = currentRun();
  const pick = state.pick;
  const top = Math.min(10, state.limits.max_top || 10);
  const res = await api("/api/next", {run: run.id, text: pick.text, top});
  if (state.pick !== pick) return; // restarted meanwhile
  const text = $("pick-text");
  text.replaceChildren(el("span", "prefix", pick.base), el("span", "picked", pick.text.slice(pick.base.length)),
    el("span", "caret", ""));
  const choices = $("pick-choices");
  choices.replaceChildren(...res.tokens.map((tok, k) => choiceButton(tok, res.probs[k], run)));
  $("pick-undo").disabled = !pick.history.length;
  $("pick-out").hidden = false;
}

function choiceButton(tok, p, run) {
  const button = el("button", "choice");
  button.type = "button";
  button.dataset.tok = tok;
  button.dataset.p = String(p);
  const bar = el("span", "choice-bar");
  bar.style.setProperty("--p", String(p));
  button.append(bar, el("span", "choice-tok", tokenLabel(tok)), el("span", "choice-p", fmtP(p)));
  button.addEventListener("click", guard(async () => {
    const pick = state.pick;
    pick.history.push(pick.text);
    const sep = run.token === "word" && pick.text && !/\s$/.test(pick.text) ? " " : "";
    pick.text += sep + tok;
    await showChoices();
  }));
  return button;
}

async function undoPick() {
  const pick = state.pick;
  if (!pick || !pick.history.length) return;
  pick.text = pick.history.pop();
  await showChoices();
}

// ---- Neurons ----------------------------------------------------------------------------------

function kindLabel(kind) {
  return kind === "c" ? "tanh(c)" : "h";
}

function setupNeurons(run) {
  const select = $("neuron-layer");
  select.replaceChildren(...run.layers.map((b) => {
    const option = el("option", null, `layer ${b.layer} · ${kindLabel(b.kind)} (${b.size})`);
    option.value = `${b.layer}:${b.kind}`;
    return option;
  }));
  const presets = run.presets || state.presets;
  const presetSelect = $("find-preset");
  const previous = presetSelect.value;
  presetSelect.replaceChildren(...presets.map((name) => {
    const option = el("option", null, name);
    option.value = name;
    return option;
  }));
  if (presets.includes(previous)) presetSelect.value = previous;
  const hasC = run.layers.some((b) => b.kind === "c");
  const cBox = $("find-kinds").querySelector('input[value="c"]');
  cBox.disabled = !hasC;
  cBox.parentElement.hidden = !hasC;
  syncUnitMax();
  state.neuron = null;
  state.selection = null;
  $("find-selection").textContent = "none yet";
  $("neuron-out").replaceChildren(el("p", "empty", "Show a unit, or find units by what they fire on: " +
    "the text appears here coloured by the unit's value."));
  $("neuron-chart").replaceChildren();
  $("neuron-contexts").replaceChildren();
  $("find-results").replaceChildren();
  $("find-info").textContent = "";
  $("neuron-title").textContent = "";
  legend($("neuron-legend"), {palette: BLUE_RED, at: (v) => (v + 1) / 2, title: "activation",
    ticks: [[-1, "−1"], [0, "0"], [1, "+1"]]});
}

function chosenBlock() {
  const [layer, kind] = $("neuron-layer").value.split(":");
  const run = currentRun();
  const block = run.layers.find((b) => String(b.layer) === layer && b.kind === kind);
  return {layer: Number(layer), kind, size: block ? block.size : 0};
}

function syncUnitMax() {
  const {size} = chosenBlock();
  const input = $("neuron-unit");
  input.max = String(Math.max(0, size - 1));
  if (Number(input.value) > size - 1) input.value = String(Math.max(0, size - 1));
}

function cacheKey(run, text) {
  return `${run}\u0000${text}`;
}

// The tokens of `text` as the run reads it: from the answer when it has them, else from /api/analyze.
async function tokensOf(run, text, answer) {
  const key = cacheKey(run, text);
  if (answer && answer.tokens) state.tokenCache.set(key, answer.tokens);
  if (!state.tokenCache.has(key)) {
    // states: the server keeps this text's hidden states, so the unit request after it is cheap
    const res = await api("/api/analyze", {run, text, top: 1, states: true});
    state.tokenCache.set(key, res.tokens);
  }
  return state.tokenCache.get(key);
}

async function showUnit() {
  const run = currentRun();
  const text = $("neuron-text").value;
  const {layer, kind} = chosenBlock();
  const unit = parseInt($("neuron-unit").value, 10) || 0;
  clearError();
  const res = await api("/api/units", {run: run.id, text, layer, kind, unit});
  const tokens = await tokensOf(run.id, text, res);
  const keepMask = state.neuron && state.neuron.text === text && state.neuron.run === run.id;
  state.neuron = {run: run.id, text, tokens, values: res.values, top: res.top, layer, kind, unit,
    mask: keepMask ? state.neuron.mask : null};
  renderNeuron();
}

function renderNeuron() {
  const n = state.neuron;
  const run = currentRun();
  const out = $("neuron-out");
  renderTokens(out, n.tokens, {word: run.token === "word", colour: (i) => activationColour(n.values[i])});
  if (n.mask) {
    out.querySelectorAll(".tok").forEach((span, i) => span.classList.toggle("marked", n.mask[i] === 1));
  }
  const title = $("neuron-title");
  title.textContent = `layer ${n.layer} · ${kindLabel(n.kind)} · unit ${n.unit}`;
  title.dataset.layer = String(n.layer);
  title.dataset.kind = n.kind;
  title.dataset.unit = String(n.unit);
  lineChart($("neuron-chart"), {
    series: [{name: "activation", cls: "s-unit", points: n.values.map((v, i) => [i, v])}],
    yRange: [-1, 1], zero: true, xLabel: "position", yLabel: kindLabel(n.kind), height: 170,
    marks: n.top.slice(0, 10), xRange: [0, Math.max(1, n.values.length - 1)],
  });
  renderContexts(n, run);
  for (const item of $("find-results").querySelectorAll(".unit-btn")) {
    const same = item.dataset.layer === String(n.layer) && item.dataset.kind === n.kind &&
      item.dataset.unit === String(n.unit);
    item.setAttribute("aria-current", String(same));
  }
}

function renderContexts(n, run) {
  const list = $("neuron-contexts");
  list.replaceChildren(...n.top.slice(0, 10).map((pos) => {
    const item = el("li");
    const button = el("button", "context-btn");
    button.type = "button";
    button.append(contextLine(n.tokens, pos, {word: run.token === "word"}),
      el("span", "context-value", n.values[pos].toFixed(2)));
    button.addEventListener("click", () => focusToken($("neuron-out"), pos));
    item.append(button);
    return item;
  }));
}

function describeNeuronToken(span, node) {
  const n = state.neuron;
  if (!n) return false;
  const i = Number(span.dataset.i);
  tipHead(node, n.tokens[i]);
  tipRows(node, [[`unit ${n.unit}`, n.values[i].toFixed(3)], ["position", String(i)]]);
  return true;
}

// Maps the mouse selection inside the neuron text to token positions [start, end).
function selectionSpan(container) {
  const selection = window.getSelection();
  if (!selection || selection.isCollapsed || !selection.rangeCount) return null;
  const range = selection.getRangeAt(0);
  if (!container.contains(range.commonAncestorContainer)) return null;
  const spans = [...container.querySelectorAll(".tok")].filter((span) => range.intersectsNode(span));
  const inside = spans.filter((span) => {
    if (span.contains(range.startContainer) && range.startOffset >= span.textContent.length) return false;
    if (span.contains(range.endContainer) && range.endOffset === 0) return false;
    return true;
  });
  if (!inside.length) return null;
  const first = Number(inside[0].dataset.i);
  const last = Number(inside[inside.length - 1].dataset.i);
  return [first, last + 1];
}

function noteSelection() {
  const n = state.neuron;
  const span = selectionSpan($("neuron-out"));
  if (!span || !n) return;
  state.selection = {run: n.run, text: n.text, spans: [span]};
  const sep = currentRun().token === "word" ? " " : "";
  const shown = n.tokens.slice(span[0], span[1]).join(sep).replace(/\n/g, "↵");
  $("find-selection").textContent = `“${shown.length > 40 ? shown.slice(0, 40) + "…" : shown}” ` +
    `(${span[1] - span[0]} at ${span[0]})`;
  document.querySelector('input[name="find-by"][value="spans"]').checked = true;
}

function searchMask() {
  const by = document.querySelector('input[name="find-by"]:checked').value;
  if (by === "regex") return {regex: $("find-regex").value};
  if (by === "spans") {
    const sel = state.selection;
    if (!sel || sel.run !== state.run || sel.text !== $("neuron-text").value) {
      throw new ApiError(showAndReturn("Select part of the coloured text first (show a unit to see it)."));
    }
    return {spans: sel.spans};
  }
  return {preset: $("find-preset").value};
}

function showAndReturn(message) {
  showError(message);
  return message;
}

async function findUnits() {
  const run = currentRun();
  const text = $("neuron-text").value;
  clearError();
  const kinds = [...$("find-kinds").querySelectorAll("input:checked:not(:disabled)")].map((box) => box.value);
  const mask = searchMask();
  $("find-go").disabled = true;
  try {
    const res = await api("/api/units/search", {run: run.id, text, kinds, mask});
    if (res.units.length) { // the best unit is shown first, so the list appears with it, all at once
      const best = res.units[0];
      $("neuron-layer").value = `${best.layer}:${best.kind}`;
      syncUnitMax();
      $("neuron-unit").value = String(best.unit);
      await showUnit();
      state.neuron.mask = res.mask;
    }
    $("find-info").textContent = `${res.marked} of ${res.mask.length} positions marked; ` +
      "units ranked by how well they tell them apart (correlation).";
    renderUnitList(res.units);
    if (state.neuron) renderNeuron();
  } finally {
    $("find-go").disabled = false;
  }
}

function renderUnitList(units) {
  $("find-results").replaceChildren(...units.map((u) => {
    const item = el("li");
    const button = el("button", "unit-btn");
    button.type = "button";
    button.dataset.layer = String(u.layer);
    button.dataset.kind = u.kind;
    button.dataset.unit = String(u.unit);
    const bar = el("span", "score-bar");
    bar.style.setProperty("--p", String(Math.max(0, Math.min(1, Math.abs(u.score)))));
    button.append(el("span", "unit-name", `L${u.layer} ${kindLabel(u.kind)} #${u.unit}`), bar,
      el("span", "unit-score", u.score.toFixed(2)));
    button.title = `mean ${u.mean_in.toFixed(2)} where marked, ${u.mean_out.toFixed(2)} elsewhere`;
    button.addEventListener("click", guard(async () => {
      $("neuron-layer").value = `${u.layer}:${u.kind}`;
      syncUnitMax();
      $("neuron-unit").value = String(u.unit);
      const mask = state.neuron ? state.neuron.mask : null;
      await showUnit();
      state.neuron.mask = mask;
      renderNeuron();
    }));
    item.append(button);
    return item;
  }));
}

// ---- Compare ----------------------------------------------------------------------------------

function setupCompare() {
  const one = state.runs.length < 2;
  $("compare-note").textContent = one ? "The server has one run: start it with two to compare them." : "";
  state.compare = null;
  $("compare-result").hidden = true;
}

async function compareRuns() {
  const a = $("compare-a").value;
  const b = $("compare-b").value;
  const text = $("compare-text").value;
  clearError();
  $("compare-go").disabled = true;
  try {
    const res = await api("/api/compare", {runs: [a, b], text});
    state.compare = {...res, a: state.runs.find((r) => r.id === a), b: state.runs.find((r) => r.id === b)};
    renderCompare();
  } finally {
    $("compare-go").disabled = false;
  }
}

function renderCompare() {
  const c = state.compare;
  const [bitsA, bitsB] = c.bits;
  const diff = (i) => (bitsA[i] === null || bitsB[i] === null ? null : bitsA[i] - bitsB[i]);
  $("compare-a-name").textContent = `A: ${c.a.name} · bits per ${unitName(c.a)}`;
  $("compare-b-name").textContent = `B: ${c.b.name} · bits per ${unitName(c.b)}`;
  for (const [id, v] of [["compare-bpc-a", c.bpc[0]], ["compare-bpc-b", c.bpc[1]]]) {
    $(id).textContent = v.toFixed(3);
    $(id).dataset.bpc = String(v);
  }
  legend($("compare-legend"), {palette: BLUE_ORANGE, at: (d) => (d / DIFF_MAX + 1) / 2,
    title: "bits of A minus bits of B", left: "A better", right: "B better",
    ticks: [[-DIFF_MAX, `−${DIFF_MAX}`], [0, "0"], [DIFF_MAX, `+${DIFF_MAX}`]]});
  const word = c.a.token === "word";
  renderTokens($("compare-out"), c.tokens, {word, colour: (i) => {
    const d = diff(i);
    return d === null ? null : diffColour(d);
  }});
  $("compare-largest").replaceChildren(...c.largest.slice(0, 15).map((pos) => {
    const item = el("li");
    const button = el("button", "context-btn");
    button.type = "button";
    const d = diff(pos);
    const value = el("span", `context-value ${d < 0 ? "a-better" : "b-better"}`,
      `${d < 0 ? "A" : "B"} better by ${Math.abs(d).toFixed(1)}`);
    button.append(contextLine(c.tokens, pos, {word, radius: 8}), value);
    button.dataset.i = String(pos);
    button.addEventListener("click", () => focusToken($("compare-out"), pos));
    item.append(button);
    return item;
  }));
  $("compare-result").hidden = false;
}

function describeCompareToken(span, node) {
  const c = state.compare;
  if (!c) return false;
  const i = Number(span.dataset.i);
  tipHead(node, c.tokens[i]);
  const [a, b] = [c.bits[0][i], c.bits[1][i]];
  if (a === null || b === null) {
    node.append(el("p", "tip-note", "The first token has no score."));
    return true;
  }
  tipRows(node, [[`A ${c.a.name}`, fmtBits(a)], [`B ${c.b.name}`, fmtBits(b)],
    ["A − B", `${(a - b).toFixed(2)} bits`]]);
  return true;
}

// ---- Training ---------------------------------------------------------------------------------

let trainingScale = "bits";

function bitsOf(ppl) {
  return typeof ppl === "number" && ppl > 0 ? Math.log2(ppl) : null;
}

async function loadMetrics(force = false) {
  const run = currentRun();
  if (!run || state.metrics.busy) return;
  state.metrics.busy = true;
  try {
    const data = await api(`/api/runs/${encodeURIComponent(run.id)}/metrics`);
    if (state.run !== run.id) return;
    const records = data.records || [];
    const key = `${records.length}:${JSON.stringify(records[records.length - 1] || null)}`;
    if (!force && state.metrics.run === run.id && state.metrics.key === key) return;
    state.metrics = {run: run.id, key, records};
    renderTraining(run, records);
  } finally {
    state.metrics.busy = false;
  }
}

const refreshMetrics = guard(loadMetrics);

// Epochs done when a record was made: a record from the middle of an epoch (a huge text reports by
// steps or by the clock) carries its batch, so batch 250 of 1,000 in epoch 3 is at 2.25.
function epochsDone(r) {
  return typeof r.batch === "number" && r.batches ? r.epoch - 1 + r.batch / r.batches : r.epoch;
}

function epochLabel(r) {
  return typeof r.batch === "number" && r.batches ?
    `epoch ${r.epoch} (${Math.round(100 * r.batch / r.batches)}%)` : `epoch ${r.epoch}`;
}

function curve(records, field) {
  const points = [];
  for (const r of records) {
    const value = trainingScale === "bits" ? bitsOf(r[field]) : r[field];
    if (typeof r.epoch === "number" && typeof value === "number" && isFinite(value)) {
      points.push([epochsDone(r), value]);
    }
  }
  return points;
}

function renderTraining(run, records) {
  const ended = records.filter((r) => typeof r.batch !== "number").length;
  $("training-status").textContent = `${ended} epoch${ended === 1 ? "" : "s"} · ` +
    `updated ${new Date().toLocaleTimeString()}`;
  const series = [{name: "train", cls: "s-train", points: curve(records, "train_ppl"), dots: true},
    {name: "validation", cls: "s-val", points: curve(records, "val_ppl"), dots: true}]
    .filter((s) => s.points.length);
  const chart = $("training-chart");
  if (!series.length) {
    chart.replaceChildren(el("p", "muted", "No epochs recorded yet: the curves appear as the run trains."));
  } else {
    const label = trainingScale === "bits" ? `bits per ${unitName(run)}` : "perplexity";
    lineChart(chart, {series, xLabel: "epoch", yLabel: label, height: 260});
  }
  renderTrainingStats(run, records);
  renderSamples(records);
}

function renderTrainingStats(run, records) {
  const host = $("training-stats");
  host.replaceChildren();
  if (!records.length) return;
  const last = records[records.length - 1];
  const vals = records.filter((r) => typeof r.val_ppl === "number");
  const best = vals.reduce((a, r) => (a === null || r.val_ppl < a.val_ppl ? r : a), null);
  const stat = (label, value) => {
    const box = el("div", "stat");
    box.append(el("span", "stat-label", label), el("span", "stat-value", value));
    host.append(box);
  };
  stat("epochs", String(last.epoch ?? records.length));
  if (best) stat("best validation", `${bitsOf(best.val_ppl).toFixed(3)} bits (${epochLabel(best)})`);
  if (typeof last.train_ppl === "number") stat("last train", `${bitsOf(last.train_ppl).toFixed(3)} bits`);
  if (typeof last.tokens_per_sec === "number") stat("speed", `${compact(Math.round(last.tokens_per_sec))} tokens/s`);
  if (typeof last.elapsed === "number") stat("training time", duration(last.elapsed));
  if (typeof last.lr === "number") stat("learning rate", String(+last.lr.toPrecision(3)));
}

function duration(seconds) {
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function renderSamples(records) {
  const withSamples = records.filter((r) => typeof r.sample === "string").reverse();
  const list = $("training-samples");
  if (!withSamples.length) {
    list.replaceChildren(el("li", "muted", "This run recorded no samples."));
    return;
  }
  list.replaceChildren(...withSamples.map((r) => {
    const item = el("li");
    item.append(el("span", "epoch-tag", epochLabel(r)), el("span", "sample-line", r.sample));
    return item;
  }));
}

function setScale(scale) {
  trainingScale = scale;
  $("scale-bits").setAttribute("aria-pressed", String(scale === "bits"));
  $("scale-ppl").setAttribute("aria-pressed", String(scale === "ppl"));
  const run = currentRun();
  if (run && state.metrics.records) renderTraining(run, state.metrics.records);
}

function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

// The charts are drawn at the width they have, so that their text keeps its size: redraw on resize.
function redrawCharts() {
  const run = currentRun();
  if (state.neuron && state.view === "neurons") renderNeuron();
  if (run && state.metrics.records && state.view === "training") renderTraining(run, state.metrics.records);
}

// ---- wiring -----------------------------------------------------------------------------------

function wire() {
  $("error-close").addEventListener("click", clearError);
  $("run").addEventListener("change", (event) => setRun(event.target.value));
  setupTabs();
  setupSharedText();
  $("read-go").addEventListener("click", guard(readText));
  $("read-file").addEventListener("change", readFile);
  attachTips($("read-out"), describeReadToken);
  $("write-go").addEventListener("click", guard(generate));
  $("write-stop").addEventListener("click", stopGenerating);
  $("write-replay").addEventListener("click", () => {
    $("write-seed-input").value = $("write-seed").dataset.seed || "";
  });
  $("mode-sample").addEventListener("click", () => setMode(false));
  $("mode-pick").addEventListener("click", () => setMode(true));
  $("pick-start").addEventListener("click", guard(startPick));
  $("pick-undo").addEventListener("click", guard(undoPick));
  attachTips($("write-out"), describeWriteToken);
  $("neuron-layer").addEventListener("change", syncUnitMax);
  $("neuron-go").addEventListener("click", guard(showUnit));
  $("neuron-unit").addEventListener("keydown", (event) => {
    if (event.key === "Enter") guard(showUnit)();
  });
  $("neuron-out").addEventListener("mouseup", noteSelection);
  $("find-regex").addEventListener("input", () => {
    document.querySelector('input[name="find-by"][value="regex"]').checked = true;
  });
  $("find-preset").addEventListener("change", () => {
    document.querySelector('input[name="find-by"][value="preset"]').checked = true;
  });
  $("find-go").addEventListener("click", guard(findUnits));
  attachTips($("neuron-out"), describeNeuronToken);
  $("compare-go").addEventListener("click", guard(compareRuns));
  attachTips($("compare-out"), describeCompareToken);
  $("scale-bits").addEventListener("click", () => setScale("bits"));
  $("scale-ppl").addEventListener("click", () => setScale("ppl"));
  window.addEventListener("scroll", hideTip, {passive: true});
  window.addEventListener("resize", debounce(redrawCharts, 150));
  setInterval(() => {
    if (state.view === "training" && !document.hidden) refreshMetrics();
  }, POLL_MS);
}

async function main() {
  tip.node = $("tip");
  wire();
  const wanted = location.hash.slice(1);
  await loadRuns();
  selectView(VIEWS.includes(wanted) ? wanted : "read");
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", guard(main));
