// What the page holds between requests: the runs, the run and view chosen, and each view's last
// answer. One object that every view reads, so that choosing a run can reset them all.

export const state = {
  runs: [], limits: {}, presets: [], run: null, view: "read",
  read: null,        // the last /api/analyze answer shown, with the run and the text it came from
  why: null,         // the last /api/attribute answer drawn over it, with its tokens
  neuron: null,      // {run, text, tokens, values, top, layer, kind, unit, mask}
  hold: null,        // the last /api/clamp answer: the text read with a unit held
  compare: null,
  gen: null,         // {controller, samples:[{probs:[]}]} while generating
  pick: null,        // {text, history:[], base}
  metrics: {run: null, key: ""},
  tokenCache: new Map(),
};

export function currentRun() {
  return state.runs.find((r) => r.id === state.run) || null;
}

export function unitName(run) {
  return run && run.token === "word" ? "word" : "character";
}

export function cacheKey(run, text) {
  return `${run}\u0000${text}`;
}
