// Read: the text coloured by how surprised the model is at each token, with a tooltip per token.

import {$, el} from "./dom.js";
import {fmtBits, fmtP, tokenLabel} from "./format.js";
import {clearError, guard, showError} from "./errors.js";
import {api} from "./api.js";
import {cacheKey, currentRun, state, unitName} from "./state.js";
import {bitsColour, bitsPosition, legend, REDS} from "./colours.js";
import {renderTokens} from "./tokens.js";
import {attachTips, tipHead, tipRows} from "./tips.js";
import {setSharedText} from "./shared-text.js";
import {renderSummary} from "./read-summary.js";
import {clearWhy, whyRow, wireWhy} from "./why.js";

export function resetRead() {
  clearWhy();
  state.read = null;
  $("read-result").hidden = true;
  $("read-out").replaceChildren();
}

async function readText() {
  const run = currentRun();
  const text = $("read-text").value;
  clearError();
  $("read-go").disabled = true;
  try {
    const res = await api("/api/analyze", {run: run.id, text, top: 5});
    state.read = {...res, run, text};
    state.tokenCache.set(cacheKey(run.id, text), res.tokens);
    renderRead();
  } finally {
    $("read-go").disabled = false;
  }
}

function renderRead() {
  clearWhy();
  const res = state.read;
  const run = res.run;
  const unit = unitName(run);
  const bpc = $("read-bpc");
  bpc.dataset.bpc = String(res.bpc);
  bpc.textContent = `${res.bpc.toFixed(3)}`;
  bpc.title = `${res.bpc} bits per ${unit}`;
  bpc.parentElement.querySelector(".stat-label").textContent = `Bits per ${unit}`;
  $("read-ppl").textContent = (2 ** res.bpc).toFixed(2);
  $("read-count").textContent = `${res.num_predicted.toLocaleString("en-US")} ${unit}s`;
  renderReadNotes(res, run);
  legend($("read-legend"), {palette: REDS, at: (b) => bitsPosition(b) ** 1.4, title: `bits per ${unit}`,
    ticks: [[0.1, "≤0.1"], [0.5, "0.5"], [1, "1"], [2, "2"], [4, "4"], [8, "8"], [16, "16+"]]});
  renderTokens($("read-out"), res.tokens, {word: run.token === "word",
    colour: (i) => (res.bits[i] === null || res.bits[i] === undefined ? null : bitsColour(res.bits[i]))});
  renderSummary(res, run);
  $("read-result").hidden = false;
}

function renderReadNotes(res, run) {
  const notes = [];
  if (res.cleaned) {
    notes.push(`The text was read as this run reads its corpus (cleaning “${run.clean}”, ${run.token} ` +
      "tokens), so what is shown differs from what was pasted.");
  }
  if (res.unknown) {
    notes.push(`${res.unknown} ${unitName(run)}${res.unknown === 1 ? " is" : "s are"} not in the run's ` +
      "vocabulary and count as <unk>.");
  }
  if (res.left_out) {
    notes.push(`${res.left_out.toLocaleString("en")} characters of Project Gutenberg's header and licence ` +
      "were left out: the book alone is read.");
  }
  $("read-notes").textContent = notes.join(" ");
  $("read-notes").hidden = !notes.length;
}

function describeReadToken(span, node) {
  const res = state.read;
  if (!res) return false;
  const i = Number(span.dataset.i);
  const vocab = res.run.vocab;
  tipHead(node, res.tokens[i]);
  if (res.bits[i] === null || res.bits[i] === undefined) {
    node.append(el("p", "tip-note", "The first token has no score: nothing comes before it."));
    return true;
  }
  const why = whyRow(i);
  tipRows(node, [["probability", fmtP(res.probs[i])], ["surprisal", fmtBits(res.bits[i])],
    ["rank", `${res.ranks[i]} of ${vocab.length}`], ...(why ? [why] : [])]);
  const alts = el("ol", "tip-alts");
  alts.setAttribute("aria-label", "The model's top choices here");
  (res.top_ids[i] || []).forEach((id, k) => {
    const p = res.top_probs[i][k];
    const item = el("li", "alt");
    if (vocab[id] === res.tokens[i]) item.classList.add("actual");
    item.dataset.tok = vocab[id];
    item.dataset.p = String(p);
    const bar = el("span", "alt-bar");
    bar.style.setProperty("--p", String(p));
    item.append(el("span", "alt-tok", tokenLabel(vocab[id])), bar, el("span", "alt-p", fmtP(p)));
    alts.append(item);
  });
  node.append(alts);
  return true;
}

function readFile(event) {
  const file = event.target.files && event.target.files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.addEventListener("load", guard(async () => {
    setSharedText(String(reader.result));
    $("read-file-name").textContent = file.name;
    await readText();
  }));
  reader.addEventListener("error", () => showError(`Could not read ${file.name}`));
  reader.readAsText(file);
}

export function wireRead() {
  $("read-go").addEventListener("click", guard(readText));
  $("read-file").addEventListener("change", readFile);
  attachTips($("read-out"), describeReadToken);
  wireWhy(renderRead);
}
