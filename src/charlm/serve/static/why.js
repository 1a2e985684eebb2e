// Why this character: click a character in Read, and the characters before it are coloured by how
// much each raised (green) or lowered (purple) its probability (charlm.attribute, /api/attribute).
// In Write, clicking a written character does the same in a card of its own, over the text up to it.

import {$, el} from "./dom.js";
import {fmtBits, tokenLabel} from "./format.js";
import {guard} from "./errors.js";
import {api} from "./api.js";
import {state} from "./state.js";
import {renderTokens} from "./tokens.js";
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
  summarise(why, (j) => why.tokens[j], "");
  $("read-why").hidden = false;
}

// The card's words: which token, its bits, the characters that raised and lowered it most, the
// legend. `ids`: "" for Read's card, "write-" for Write's; `tokenAt(j)`: the text's token j.
function summarise(why, tokenAt, ids) {
  const ranked = why.scores.map((s, k) => [s, why.start + k]);
  const quote = (pairs) => pairs.map(([s, j]) => `“${tokenLabel(tokenAt(j))}” ${s > 0 ? "+" : ""}${s.toFixed(2)}`)
    .join(", ");
  const raised = ranked.filter(([s]) => s > 0).sort((a, b) => b[0] - a[0]).slice(0, 5);
  const lowered = ranked.filter(([s]) => s < 0).sort((a, b) => a[0] - b[0]).slice(0, 3);
  $(`${ids}why-head`).textContent = `Why “${tokenLabel(tokenAt(why.position))}” at position ` +
    `${why.position.toLocaleString("en-US")} (${fmtBits(why.bits)})`;
  $(`${ids}why-raised`).textContent = raised.length ? `Raised it most: ${quote(raised)}.` : "";
  $(`${ids}why-lowered`).textContent = lowered.length ? `Lowered it most: ${quote(lowered)}.` : "";
  legend($(`${ids}why-legend`), {palette: PURPLE_GREEN, at: (v) => (v / SHARE_MAX + 1) / 2,
    title: "bits each character added", ticks: [[-SHARE_MAX, `−${SHARE_MAX}`], [0, "0"], [SHARE_MAX, `+${SHARE_MAX}`]]});
}

// Why the written token `i` of a Write sample: the text up to it (the prefix and what was written
// before it) is attributed, and the window before it drawn in Write's card, coloured by share.
export async function explainWritten(run, box, i) {
  if (i < 0 || i >= box.ends.length) return;
  const answer = await api("/api/attribute", {run: run.id, text: box.text.slice(0, box.ends[i]), position: -1,
    window: WINDOW});
  const at = (j) => answer.tokens[j - answer.start];
  const out = $("write-why-text");
  renderTokens(out, answer.tokens, {word: run.token === "word", colour: (k) => {
    const j = answer.start + k;
    return j < answer.position ? shareColour(answer.scores[k]) : null;
  }});
  out.querySelectorAll(".tok").forEach((span) => {
    const j = answer.start + Number(span.dataset.i);
    span.dataset.i = String(j);  // the token's place in the whole text, as Read numbers it
    if (j < answer.position) span.dataset.share = String(answer.scores[j - answer.start]);
    span.classList.toggle("why-target", j === answer.position);
    span.classList.remove("unscored");
  });
  summarise(answer, at, "write-");
  $("write-why").hidden = false;
}

export function clearWrittenWhy() {
  $("write-why").hidden = true;
  $("write-why-text").replaceChildren();
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
