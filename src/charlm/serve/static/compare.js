// Compare: two runs on one text, the difference in bits position by position.

import {$, el} from "./dom.js";
import {fmtBits} from "./format.js";
import {clearError, guard} from "./errors.js";
import {api} from "./api.js";
import {state, unitName} from "./state.js";
import {BLUE_ORANGE, DIFF_MAX, diffColour, legend} from "./colours.js";
import {contextLine, focusToken, renderTokens} from "./tokens.js";
import {attachTips, tipHead, tipRows} from "./tips.js";

export function setupCompare() {
  const one = state.runs.length < 2;
  $("compare-note").textContent = one ? "The server has one run: start it with two to compare them." : "";
  state.compare = null;
  $("compare-result").hidden = true;
}

async function compareRuns() {
  const a = $("compare-a").value;
  const b = $("compare-b").value;
  const text = $("compare-text").value;
  clearError();
  $("compare-go").disabled = true;
  try {
    const res = await api("/api/compare", {runs: [a, b], text});
    state.compare = {...res, a: state.runs.find((r) => r.id === a), b: state.runs.find((r) => r.id === b)};
    renderCompare();
  } finally {
    $("compare-go").disabled = false;
  }
}

function renderCompare() {
  const c = state.compare;
  const [bitsA, bitsB] = c.bits;
  const diff = (i) => (bitsA[i] === null || bitsB[i] === null ? null : bitsA[i] - bitsB[i]);
  $("compare-a-name").textContent = `A: ${c.a.name} · bits per ${unitName(c.a)}`;
  $("compare-b-name").textContent = `B: ${c.b.name} · bits per ${unitName(c.b)}`;
  for (const [id, v] of [["compare-bpc-a", c.bpc[0]], ["compare-bpc-b", c.bpc[1]]]) {
    $(id).textContent = v.toFixed(3);
    $(id).dataset.bpc = String(v);
  }
  legend($("compare-legend"), {palette: BLUE_ORANGE, at: (d) => (d / DIFF_MAX + 1) / 2,
    title: "bits of A minus bits of B", left: "A better", right: "B better",
    ticks: [[-DIFF_MAX, `−${DIFF_MAX}`], [0, "0"], [DIFF_MAX, `+${DIFF_MAX}`]]});
  const word = c.a.token === "word";
  renderTokens($("compare-out"), c.tokens, {word, colour: (i) => {
    const d = diff(i);
    return d === null ? null : diffColour(d);
  }});
  $("compare-largest").replaceChildren(...c.largest.slice(0, 15).map((pos) => {
    const item = el("li");
    const button = el("button", "context-btn");
    button.type = "button";
    const d = diff(pos);
    const value = el("span", `context-value ${d < 0 ? "a-better" : "b-better"}`,
      `${d < 0 ? "A" : "B"} better by ${Math.abs(d).toFixed(1)}`);
    button.append(contextLine(c.tokens, pos, {word, radius: 8}), value);
    button.dataset.i = String(pos);
    button.addEventListener("click", () => focusToken($("compare-out"), pos));
    item.append(button);
    return item;
  }));
  $("compare-result").hidden = false;
}

function describeCompareToken(span, node) {
  const c = state.compare;
  if (!c) return false;
  const i = Number(span.dataset.i);
  tipHead(node, c.tokens[i]);
  const [a, b] = [c.bits[0][i], c.bits[1][i]];
  if (a === null || b === null) {
    node.append(el("p", "tip-note", "The first token has no score."));
    return true;
  }
  tipRows(node, [[`A ${c.a.name}`, fmtBits(a)], [`B ${c.b.name}`, fmtBits(b)],
    ["A − B", `${(a - b).toFixed(2)} bits`]]);
  return true;
}

export function wireCompare() {
  $("compare-go").addEventListener("click", guard(compareRuns));
  attachTips($("compare-out"), describeCompareToken);
}
