// The view tabs: a click, or the arrow keys, Home and End on the tab list (the ARIA tabs pattern).

import {$} from "./dom.js";
import {state} from "./state.js";
import {hideTip} from "./tips.js";
import {refreshMetrics} from "./training.js";

export const VIEWS = ["read", "write", "neurons", "compare", "training"];

export function selectView(view, focus = false) {
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

export function setupTabs() {
  for (const name of VIEWS) $(`tab-${name}`).addEventListener("click", () => selectView(name));
  document.querySelector(".tabs").addEventListener("keydown", (event) => {
    const i = VIEWS.indexOf(state.view);
    const next = {ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: VIEWS.length - 1}[event.key];
    if (next === undefined) return;
    event.preventDefault();
    selectView(VIEWS[(next + VIEWS.length) % VIEWS.length], true);
  });
}
