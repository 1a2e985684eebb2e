// The runs the server shows, and the run picker: choosing a run resets every view for it.

import {$, el} from "./dom.js";
import {compact} from "./format.js";
import {clearError, showError} from "./errors.js";
import {api} from "./api.js";
import {currentRun, state} from "./state.js";
import {resetRead} from "./read.js";
import {setupWrite, stopGenerating} from "./write.js";
import {setupNeurons} from "./neurons.js";
import {resetHolding} from "./holding.js";
import {setupCompare} from "./compare.js";
import {refreshMetrics} from "./training.js";

function describeRun(run) {
  const cell = run.cell.toUpperCase();
  const bi = run.bidirectional ? "bidirectional " : "";
  const params = run.num_params ? ` · ${compact(run.num_params)} parameters` : "";
  return `${bi}${cell} ${run.num_layers}×${run.num_hiddens} · ${run.token} tokens · ` +
    `clean ${run.clean} · ${run.vocab.length} in vocabulary${params}`;
}

function fillRunSelect(select, chosen) {
  select.replaceChildren(...state.runs.map((run) => {
    const option = el("option", null, `${run.name} (${run.id})`);
    option.value = run.id;
    return option;
  }));
  select.value = chosen;
}

export function setRun(id) {
  state.run = id;
  const run = currentRun();
  $("run").value = id;
  $("run-desc").textContent = describeRun(run);
  stopGenerating();
  clearError();
  resetRead();
  setupWrite(run);
  setupNeurons(run);
  resetHolding();
  setupCompare();
  state.metrics = {run: null, key: ""};
  if (state.view === "training") refreshMetrics(true);
}

export async function loadRuns() {
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
