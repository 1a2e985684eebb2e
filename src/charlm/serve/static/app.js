// The explorer's page, its entry module: draws what the server's /api answers. No framework, no
// build step: the browser loads these ES modules as they are, and each view is a module of its own.

import {$, debounce} from "./dom.js";
import {clearError, guard} from "./errors.js";
import {currentRun, state} from "./state.js";
import {hideTip, useTipNode} from "./tips.js";
import {setupSharedText} from "./shared-text.js";
import {selectView, setupTabs, VIEWS} from "./tabs.js";
import {loadRuns, setRun} from "./runs.js";
import {wireRead} from "./read.js";
import {wireWrite} from "./write.js";
import {wirePick} from "./pick.js";
import {renderNeuron, wireNeurons} from "./neurons.js";
import {wireUnitSearch} from "./unit-search.js";
import {wireHolding} from "./holding.js";
import {wireSave} from "./save.js";
import {wireCompare} from "./compare.js";
import {renderTraining, wireTraining} from "./training.js";

// The charts are drawn at the width they have, so that their text keeps its size: redraw on resize.
function redrawCharts() {
  const run = currentRun();
  if (state.neuron && state.view === "neurons") renderNeuron();
  if (run && state.metrics.records && state.view === "training") renderTraining(run, state.metrics.records);
}

function wire() {
  $("error-close").addEventListener("click", clearError);
  $("run").addEventListener("change", (event) => setRun(event.target.value));
  setupTabs();
  setupSharedText();
  wireRead();
  wireWrite();
  wirePick();
  wireNeurons();
  wireUnitSearch();
  wireHolding();
  wireSave();
  wireCompare();
  wireTraining();
  window.addEventListener("scroll", hideTip, {passive: true});
  window.addEventListener("resize", debounce(redrawCharts, 150));
}

async function main() {
  useTipNode($("tip"));
  wire();
  const wanted = location.hash.slice(1);
  await loadRuns();
  selectView(VIEWS.includes(wanted) ? wanted : "read");
  document.body.dataset.ready = "true";
}

// A module runs before DOMContentLoaded, as the deferred classic script did: the page is parsed by then.
document.addEventListener("DOMContentLoaded", guard(main));
