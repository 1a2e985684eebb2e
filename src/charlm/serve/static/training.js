// Training: the curves and samples of a run's metrics.jsonl, polled while the view is shown.

import {$, el} from "./dom.js";
import {compact, duration} from "./format.js";
import {guard} from "./errors.js";
import {api} from "./api.js";
import {currentRun, state, unitName} from "./state.js";
import {lineChart} from "./chart.js";

const POLL_MS = 5000;  // training curves refresh this often while the Training view is shown

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

export const refreshMetrics = guard(loadMetrics);

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

export function renderTraining(run, records) {
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

export function wireTraining() {
  $("scale-bits").addEventListener("click", () => setScale("bits"));
  $("scale-ppl").addEventListener("click", () => setScale("ppl"));
  setInterval(() => {
    if (state.view === "training" && !document.hidden) refreshMetrics();
  }, POLL_MS);
}
