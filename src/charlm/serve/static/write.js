// Write: samples streamed from a prefix as they are made, and the switch to picking by hand.

import {$, el} from "./dom.js";
import {fmtBits, fmtP} from "./format.js";
import {ApiError, clearError, guard, showError} from "./errors.js";
import {readLines, request} from "./api.js";
import {currentRun, state, unitName} from "./state.js";
import {tokenSpan} from "./tokens.js";
import {attachTips, tipHead, tipRows} from "./tips.js";
import {resetPick} from "./pick.js";
import {clearWrittenWhy, explainWritten} from "./why.js";

export function setupWrite(run) {
  const blocked = !run.can_generate;
  $("write-form").disabled = blocked;
  $("tab-write").classList.toggle("tab-off", blocked);
  const banner = $("write-banner");
  banner.hidden = !blocked;
  banner.textContent = blocked ? `${run.name} is a bidirectional model: its prediction at each position has ` +
    "already seen the next token, so it cannot write text left to right. Read, Neurons and Compare " +
    "still work; pick a unidirectional run to write." : "";
  $("write-out").replaceChildren();
  resetPick();
  setStatus("idle", "");
}

function numberField(id, parse) {
  const raw = $(id).value.trim();
  return raw === "" ? null : parse(raw);
}

function generateBody() {
  const seed = numberField("write-seed-input", (v) => parseInt(v, 10));
  return {
    run: state.run,
    prefix: $("write-prefix").value,
    num_preds: numberField("write-num-preds", (v) => parseInt(v, 10)) ?? 100,
    temperature: numberField("write-temperature", parseFloat) ?? 1,
    top_k: numberField("write-top-k", (v) => parseInt(v, 10)) ?? 0,
    top_p: numberField("write-top-p", parseFloat) ?? 1,
    greedy: $("write-greedy").checked,
    seed,
    num_samples: numberField("write-num-samples", (v) => parseInt(v, 10)) ?? 1,
  };
}

function setStatus(kind, text) {
  const status = $("write-status");
  status.dataset.state = kind;
  status.textContent = text;
}

function sampleBoxes(prefix, count) {
  const host = $("write-out");
  host.replaceChildren();
  const boxes = [];
  for (let s = 0; s < count; s++) {
    const card = el("div", "card sample");
    if (count > 1) card.append(el("div", "sample-head", `sample ${s + 1}`));
    const body = el("div", "tokens sample-text");
    body.dataset.s = String(s);
    body.append(el("span", "prefix", prefix));
    card.append(body);
    host.append(card);
    boxes.push({body, probs: [], count: 0, text: prefix, ends: []});  // ends: the text's length after each token
  }
  return boxes;
}

// Appends one sample's new tokens; word tokens are joined by spaces, as charlm.generate joins them.
function appendTokens(box, tokens, probs, word) {
  const fragment = document.createDocumentFragment();
  tokens.forEach((tok, k) => {
    if (tok === "") return; // a sample that has stopped sends nothing
    if (word && (box.count > 0 || !/\s$/.test(box.text))) fragment.append(document.createTextNode(" "));
    const span = tokenSpan(tok, box.count);
    const p = probs ? probs[k] : null;
    box.probs.push(p);
    box.count += 1;
    box.text += (word && (box.count > 1 || !/\s$/.test(box.text)) ? " " : "") + tok;
    box.ends.push(box.text.length);
    fragment.append(span);
  });
  box.body.append(fragment);
}

async function generate() {
  const run = currentRun();
  const body = generateBody();
  clearError();
  stopGenerating();
  const controller = new AbortController();
  clearWrittenWhy();
  const boxes = sampleBoxes(body.prefix, Math.max(1, body.num_samples));
  state.gen = {controller, boxes, run};
  $("write-go").disabled = true;
  $("write-stop").disabled = false;
  $("write-seed").textContent = "…";
  $("write-notes").hidden = true;
  setStatus("running", "generating…");
  const started = performance.now();
  let produced = 0;
  try {
    const response = await request("/api/generate", body, controller.signal);
    await readLines(response, (msg) => {
      if (msg.error) throw new ApiError(msg.error);
      if ("seed" in msg) showSeed(msg.seed, msg.notes);
      if (msg.tokens) {
        msg.tokens.forEach((toks, s) => appendTokens(boxes[s], toks, msg.probs && msg.probs[s],
          run.token === "word"));
        produced += msg.tokens[0] ? msg.tokens[0].length : 0;
        setStatus("running", `generating… ${produced} ${unitName(run)}s`);
      }
      if (msg.done) {
        const seconds = ((performance.now() - started) / 1000).toFixed(1);
        setStatus("done", `done: ${produced} ${unitName(run)}s in ${seconds} s`);
      }
    });
    if ($("write-status").dataset.state === "running") setStatus("done", `ended after ${produced}`);
  } catch (err) {
    if (err && err.name === "AbortError") {
      setStatus("stopped", `stopped after ${produced} ${unitName(run)}s`);
    } else {
      setStatus("error", "failed");
      if (err instanceof ApiError) showError(err.message);
      throw err;
    }
  } finally {
    if (state.gen && state.gen.controller === controller) {
      $("write-go").disabled = false;
      $("write-stop").disabled = true;
    }
  }
}

function showSeed(seed, notes) {
  $("write-notes").textContent = (notes || []).join(" ");
  $("write-notes").hidden = !(notes && notes.length);
  const out = $("write-seed");
  out.textContent = String(seed);
  out.dataset.seed = String(seed);
  $("write-replay").disabled = false;
}

export function stopGenerating() {
  if (state.gen) state.gen.controller.abort();
}

function describeWriteToken(span, node) {
  const body = span.closest(".sample-text");
  if (!state.gen || !body) return false;
  const box = state.gen.boxes[Number(body.dataset.s)];
  const p = box ? box.probs[Number(span.dataset.i)] : null;
  tipHead(node, span.textContent);
  if (p === null || p === undefined) return true;
  tipRows(node, [["probability", fmtP(p)], ["surprisal", fmtBits(-Math.log2(p))]]);
  node.append(el("p", "tip-note", "the chance it had of being drawn"));
  return true;
}

function setMode(pick) {
  $("mode-sample").setAttribute("aria-pressed", String(!pick));
  $("mode-pick").setAttribute("aria-pressed", String(pick));
  $("sample-controls").hidden = pick;
  $("pick-controls").hidden = !pick;
  $("write-out").hidden = pick;
  $("pick-out").hidden = !pick || !state.pick;
  if (pick) stopGenerating();
}

export function wireWrite() {
  $("write-go").addEventListener("click", guard(generate));
  $("write-stop").addEventListener("click", stopGenerating);
  $("write-replay").addEventListener("click", () => {
    $("write-seed-input").value = $("write-seed").dataset.seed || "";
  });
  $("mode-sample").addEventListener("click", () => setMode(false));
  $("mode-pick").addEventListener("click", () => setMode(true));
  attachTips($("write-out"), describeWriteToken);
  // why a written character: a click, or Enter on it
  const explain = guard(async (event) => {
    if (event.type === "keydown" && event.key !== "Enter") return;
    const span = event.target.closest(".sample-text .tok");
    if (!span || !state.gen) return;
    const box = state.gen.boxes[Number(span.closest(".sample-text").dataset.s)];
    if (box) await explainWritten(state.gen.run, box, Number(span.dataset.i));
  });
  $("write-out").addEventListener("click", explain);
  $("write-out").addEventListener("keydown", explain);
  $("write-why-clear").addEventListener("click", clearWrittenWhy);
}
