// The colour scales of bits, activations and differences, and the legend that explains one.

import {el} from "./dom.js";

const BITS_MIN = 0.1;  // the surprisal colour scale is logarithmic, clamped to [BITS_MIN, BITS_MAX]
const BITS_MAX = 16;
export const DIFF_MAX = 4;  // compare: differences beyond 4 bits get the deepest colour

export const REDS = [
  "#fff5f0", "#fee0d2", "#fcbba1", "#fc9272", "#fb6a4a", "#ef3b2c", "#cb181d", "#a50f15", "#67000d",
];
export const BLUE_RED = [
  "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d", "#b2182b",
];
export const BLUE_ORANGE = [
  "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fee0b6", "#fdb863", "#e08214", "#b35806",
];

function hexToRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

// Why this character: lowered (purple) to raised (green), white at no effect.
export const PURPLE_GREEN = [
  "#762a83", "#9970ab", "#c2a5cf", "#e7d4e8", "#f7f7f7", "#d9f0d3", "#a6dba0", "#5aae61", "#1b7837",
];

const PALETTES = new Map([REDS, BLUE_RED, BLUE_ORANGE, PURPLE_GREEN].map((p) => [p, p.map(hexToRgb)]));

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

export function bitsPosition(bits) {
  const b = Math.min(Math.max(bits, BITS_MIN), BITS_MAX);
  return Math.log(b / BITS_MIN) / Math.log(BITS_MAX / BITS_MIN);
}

// A gamma above 1 keeps the well-predicted majority (around 1-2 bits) pale, so that surprises stand out.
export const bitsColour = (bits) => paint(REDS, bitsPosition(bits) ** 1.4);

export const activationColour = (v) => paint(BLUE_RED, (v + 1) / 2);
export const SHARE_MAX = 2;  // why: shares beyond 2 bits either way get the deepest colour
export const shareColour = (s) => paint(PURPLE_GREEN, (Math.max(-SHARE_MAX, Math.min(SHARE_MAX, s)) / SHARE_MAX + 1) / 2);
export const diffColour = (d) => paint(BLUE_ORANGE, (Math.max(-DIFF_MAX, Math.min(DIFF_MAX, d)) / DIFF_MAX + 1) / 2);

// A horizontal colour bar with labelled ticks; `at(value)` gives a tick's place in [0, 1].
export function legend(host, {palette, ticks, at, left, right, title}) {
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
