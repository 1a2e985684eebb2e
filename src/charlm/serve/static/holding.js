// What this unit does: hold the unit chosen in Neurons at a value (0 switches it off), then read the
// text again (each character coloured by the bits it gains or loses) and write with it held beside
// the same seed without it; or rank every unit by what switching it off costs the text.

import {$, el} from "./dom.js";
import {clearError, guard} from "./errors.js";
import {api} from "./api.js";
import {currentRun, state} from "./state.js";
import {BLUE_ORANGE, DIFF_MAX, diffColour, legend} from "./colours.js";
import {renderTokens} from "./tokens.js";
import {attachTips, tipHead, tipRows} from "./tips.js";
import {kindLabel, showUnit, syncUnitMax} from "./neurons.js";

function heldUnit() {
  const [layer, kind] = $("neuron-layer").value.split(":");
  return {layer: Number(layer), kind, unit: parseInt($("neuron-unit").value, 10) || 0,
    value: Number($("hold-value").value) || 0};
}

function describe(u) {
  return `layer ${u.layer} · ${u.kind} · unit ${u.unit} held at ${u.value}`;
}

async function readHeld() {
  const run = currentRun();
  const held = heldUnit();
  clearError();
  const res = await api("/api/clamp", {run: run.id, text: $("neuron-text").value, clamps: [held]});
  state.hold = {...res, held};
  const [free, with_] = res.bits;
  const diff = free.map((b, i) => (b === null ? null : with_[i] - b));
  renderTokens($("hold-out"), res.tokens, {word: run.token === "word",
    colour: (i) => (diff[i] === null ? null : diffColour(diff[i]))});
  const change = res.bpc[1] - res.bpc[0];
  const summary = $("hold-summary");
  summary.dataset.free = String(res.bpc[0]);
  summary.dataset.held = String(res.bpc[1]);
  summary.textContent = `With ${describe(held)}: ${res.bpc[1].toFixed(3)} bits per character, against ` +
    `${res.bpc[0].toFixed(3)} as the model is (${change >= 0 ? "+" : ""}${change.toFixed(3)}).`;
  legend($("hold-legend"), {palette: BLUE_ORANGE, at: (v) => (v / DIFF_MAX + 1) / 2,
    title: "bits gained with it held", ticks: [[-DIFF_MAX, `−${DIFF_MAX}`], [0, "0"], [DIFF_MAX, `+${DIFF_MAX}`]]});
  $("hold-read-result").hidden = false;
}

async function writeHeld() {
  const run = currentRun();
  const held = heldUnit();
  clearError();
  const res = await api("/api/clamp/generate", {run: run.id, prefix: $("hold-prefix").value, clamps: [held],
    num_preds: 200, temperature: 0.8, seed: 1});
  $("hold-held-title").textContent = `With ${describe(held)}`;
  $("hold-held").textContent = res.held;
  $("hold-free").textContent = res.free;
  $("hold-write-result").hidden = false;
}

async function rankUnits() {
  const run = currentRun();
  clearError();
  $("hold-rank").disabled = true;
  try {
    const [layer, kind] = $("neuron-layer").value.split(":");  // the units of the layer chosen above
    const res = await api("/api/ablation", {run: run.id, text: $("neuron-text").value, limit: 12,
      layer: Number(layer), kind});
    $("hold-ranking").replaceChildren(...res.units.map((u) => {
      const item = el("li");
      const button = el("button", "unit-btn");
      button.type = "button";
      Object.assign(button.dataset, {layer: String(u.layer), kind: u.kind, unit: String(u.unit),
        cost: String(u.cost)});
      button.append(el("span", "unit-name", `L${u.layer} ${kindLabel(u.kind)} #${u.unit}`),
        el("span", "unit-score", `+${u.cost.toFixed(3)} bits`));
      button.title = "bits per character the text costs more with this unit switched off";
      button.addEventListener("click", guard(async () => {
        $("neuron-layer").value = `${u.layer}:${u.kind}`;
        syncUnitMax();
        $("neuron-unit").value = String(u.unit);
        $("hold-value").value = "0";
        await showUnit();
        await readHeld();
      }));
      item.append(button);
      return item;
    }));
  } finally {
    $("hold-rank").disabled = false;
  }
}

function describeHeldToken(span, node) {
  const h = state.hold;
  if (!h) return false;
  const i = Number(span.dataset.i);
  tipHead(node, h.tokens[i]);
  if (h.bits[0][i] === null) return true;
  tipRows(node, [["as it is", `${h.bits[0][i].toFixed(2)} bits`], ["held", `${h.bits[1][i].toFixed(2)} bits`]]);
  return true;
}

export function resetHolding() {
  state.hold = null;
  $("hold-read-result").hidden = true;
  $("hold-write-result").hidden = true;
  $("hold-ranking").replaceChildren();
}

export function wireHolding() {
  $("hold-read").addEventListener("click", guard(readHeld));
  $("hold-write").addEventListener("click", guard(writeHeld));
  $("hold-rank").addEventListener("click", guard(rankUnits));
  attachTips($("hold-out"), describeHeldToken);
}
