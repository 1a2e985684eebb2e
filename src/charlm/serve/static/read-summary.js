// Read's summary: where the bits go (against general compressors, by kind of token, by a letter's
// place in its word) and the costliest places.

import {$, el} from "./dom.js";
import {fmtBits} from "./format.js";
import {unitName} from "./state.js";
import {contextLine, focusToken} from "./tokens.js";

export function renderSummary(res, run) {
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
