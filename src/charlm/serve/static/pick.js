// Write, by hand: the model's likeliest next tokens, one click each to append, and Undo.

import {$, el} from "./dom.js";
import {fmtP, tokenLabel} from "./format.js";
import {clearError, guard} from "./errors.js";
import {api} from "./api.js";
import {currentRun, state} from "./state.js";

export function resetPick() {
  state.pick = null;
  $("pick-out").hidden = true;
  $("pick-undo").disabled = true;
  $("pick-text").replaceChildren();
  $("pick-choices").replaceChildren();
}

async function startPick() {
  clearError();
  state.pick = {base: $("write-prefix").value, text: $("write-prefix").value, history: []};
  await showChoices();
}

async function showChoices() {
  const run = currentRun();
  const pick = state.pick;
  const top = Math.min(10, state.limits.max_top || 10);
  const res = await api("/api/next", {run: run.id, text: pick.text, top});
  if (state.pick !== pick) return; // restarted meanwhile
  const text = $("pick-text");
  text.replaceChildren(el("span", "prefix", pick.base), el("span", "picked", pick.text.slice(pick.base.length)),
    el("span", "caret", ""));
  const choices = $("pick-choices");
  choices.replaceChildren(...res.tokens.map((tok, k) => choiceButton(tok, res.probs[k], run)));
  $("pick-undo").disabled = !pick.history.length;
  $("pick-out").hidden = false;
}

function choiceButton(tok, p, run) {
  const button = el("button", "choice");
  button.type = "button";
  button.dataset.tok = tok;
  button.dataset.p = String(p);
  const bar = el("span", "choice-bar");
  bar.style.setProperty("--p", String(p));
  button.append(bar, el("span", "choice-tok", tokenLabel(tok)), el("span", "choice-p", fmtP(p)));
  button.addEventListener("click", guard(async () => {
    const pick = state.pick;
    pick.history.push(pick.text);
    const sep = run.token === "word" && pick.text && !/\s$/.test(pick.text) ? " " : "";
    pick.text += sep + tok;
    await showChoices();
  }));
  return button;
}

async function undoPick() {
  const pick = state.pick;
  if (!pick || !pick.history.length) return;
  pick.text = pick.history.pop();
  await showChoices();
}

export function wirePick() {
  $("pick-start").addEventListener("click", guard(startPick));
  $("pick-undo").addEventListener("click", guard(undoPick));
}
