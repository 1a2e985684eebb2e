// Why this character: click a character in Read, and the characters before it are coloured by how
// much each raised (green) or lowered (purple) its probability (charlm.attribute, /api/attribute).

import {$, el} from "./dom.js";
import {fmtBits, tokenLabel} from "./format.js";
import {guard} from "./errors.js";
import {api} from "./api.js";
import {state} from "./state.js";
import {legend, shareColour, SHARE_MAX, PURPLE_GREEN} from "./colours.js";

export const WINDOW = 200;  // characters before the clicked one that are scored

// The clicked token's attribution, drawn over the Read view's text; another click replaces it.
async function explain(i) {
  const res = state.read;
  if (!res || i < 1 || i >= res.tokens.length) return;
  const answer = await api("/api/attribute", {run: res.run.id, text: res.text, position: i, window: WINDOW});
  if (state.read !== res) return;  // the text was read again meanwhile
  state.why = {...answer, tokens: res.tokens};
  drawWhy();
}

function drawWhy() {
  const why = state.why;
  const out = $("read-out");
  out.classList.add("why-mode");
  for (const span of out.querySelectorAll(".tok")) {
    const i = Number(span.dataset.i);
    const share = i >= why.start && i < why.position ? why.scores[i - why.start] : null;
    span.classList.toggle("why-target", i === why.position);
    span.classList.toggle("why-off", share === null && i !== why.position);
    if (share === null) {
      delete span.dataset.share;
      span.style.backgroundColor = "";
      span.style.color = "";
    } else {
      const c = shareColour(share);
      span.dataset.share = String(share);
      span.style.backgroundColor = c.bg;
      span.style.color = c.fg;
    }
  }
  const ranked = why.scores.map((s, k) => [s, why.start + k]);
  const quote = (pairs) => pairs.map(([s, j]) => `“${tokenLabel(why.tokens[j])}” ${s > 0 ? "+" : ""}${s.toFixed(2)}`)
    .join(", ");
  const raised = ranked.filter(([s]) => s > 0).sort((a, b) => b[0] - a[0]).slice(0, 5);
  const lowered = ranked.filter(([s]) => s < 0).sort((a, b) => a[0] - b[0]).slice(0, 3);
  $("why-head").textContent = `Why “${tokenLabel(why.tokens[why.position])}” at position ` +
    `${why.position.toLocaleString("en-US")} (${fmtBits(why.bits)})`;
  $("why-raised").textContent = raised.length ? `Raised it most: ${quote(raised)}.` : "";
  $("why-lowered").textContent = lowered.length ? `Lowered it most: ${quote(lowered)}.` : "";
  legend($("why-legend"), {palette: PURPLE_GREEN, at: (v) => (v / SHARE_MAX + 1) / 2,
    title: "bits each character added", ticks: [[-SHARE_MAX, `−${SHARE_MAX}`], [0, "0"], [SHARE_MAX, `+${SHARE_MAX}`]]});
  $("read-why").hidden = false;
}

// Back to the surprisal colours: Read draws them again from its last answer.
export function clearWhy(redraw) {
  state.why = null;
  $("read-why").hidden = true;
  $("read-out").classList.remove("why-mode");
  if (redraw) redraw();
}

// A row for the tooltip of a token while an attribution is shown.
export function whyRow(i) {
  const why = state.why;
  if (!why || i < why.start || i >= why.position) return null;
  const s = why.scores[i - why.start];
  return [`share in “${tokenLabel(why.tokens[why.position])}”`, `${s > 0 ? "+" : ""}${s.toFixed(3)} bits`];
}

export function wireWhy(redraw) {
  const out = $("read-out");
  const pick = (event) => {
    const span = event.target.closest(".tok");
    if (span && out.contains(span)) return Number(span.dataset.i);
    return null;
  };
  out.addEventListener("click", guard(async (event) => {
    const i = pick(event);
    if (i !== null) await explain(i);
  }));
  out.addEventListener("keydown", guard(async (event) => {
    if (event.key !== "Enter") return;
    const i = pick(event);
    if (i !== null) await explain(i);
  }));
  $("why-clear").addEventListener("click", () => clearWhy(redraw));
}
