// Neurons, the other way round: mark places (a preset, a regex or a selection) and find the units
// that tell them apart.

import {$, el} from "./dom.js";
import {ApiError, clearError, guard, showError} from "./errors.js";
import {api} from "./api.js";
import {currentRun, state} from "./state.js";
import {kindLabel, renderNeuron, showUnit, syncUnitMax} from "./neurons.js";

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

export function wireUnitSearch() {
  $("neuron-out").addEventListener("mouseup", noteSelection);
  $("find-regex").addEventListener("input", () => {
    document.querySelector('input[name="find-by"][value="regex"]').checked = true;
  });
  $("find-preset").addEventListener("change", () => {
    document.querySelector('input[name="find-by"][value="preset"]').checked = true;
  });
  $("find-go").addEventListener("click", guard(findUnits));
}
