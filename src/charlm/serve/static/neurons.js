// Neurons: one unit (h, or tanh(c) of an LSTM) over the text, its curve and where it fires most.

import {$, el} from "./dom.js";
import {clearError, guard} from "./errors.js";
import {api} from "./api.js";
import {cacheKey, currentRun, state} from "./state.js";
import {activationColour, BLUE_RED, legend} from "./colours.js";
import {contextLine, focusToken, renderTokens} from "./tokens.js";
import {attachTips, tipHead, tipRows} from "./tips.js";
import {lineChart} from "./chart.js";

export function kindLabel(kind) {
  return kind === "c" ? "tanh(c)" : "h";
}

export function setupNeurons(run) {
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

export function syncUnitMax() {
  const {size} = chosenBlock();
  const input = $("neuron-unit");
  input.max = String(Math.max(0, size - 1));
  if (Number(input.value) > size - 1) input.value = String(Math.max(0, size - 1));
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

export async function showUnit() {
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

export function renderNeuron() {
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

export function wireNeurons() {
  $("neuron-layer").addEventListener("change", syncUnitMax);
  $("neuron-go").addEventListener("click", guard(showUnit));
  $("neuron-unit").addEventListener("keydown", (event) => {
    if (event.key === "Enter") guard(showUnit)();
  });
  attachTips($("neuron-out"), describeNeuronToken);
}
