// An SVG line chart, drawn at the width it has (no chart library: nothing comes from elsewhere).

import {el, svg} from "./dom.js";

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
export function lineChart(host, {series, width = host.clientWidth || 720, height = 220, xLabel = "", yLabel = "",
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
