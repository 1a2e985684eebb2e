// The one tooltip every token container shares, shown on hover or on keyboard focus and filled by
// the view that owns the container; the arrow keys walk a container's tokens.

import {el} from "./dom.js";
import {tokenLabel} from "./format.js";

const tip = {node: null, owner: null};
const describers = new Map();  // container -> its view's describe(span, node), for saved views too

// The tooltip element, given once the page has loaded.
export function useTipNode(node) {
  tip.node = node;
}

export function hideTip() {
  if (tip.node) tip.node.hidden = true;
  tip.owner = null;
}

function placeTip(target) {
  const node = tip.node;
  const rect = target.getBoundingClientRect();
  node.hidden = false;
  const width = node.offsetWidth;
  const height = node.offsetHeight;
  let left = Math.min(Math.max(8, rect.left + rect.width / 2 - width / 2), window.innerWidth - width - 8);
  let top = rect.bottom + 8;
  if (top + height > window.innerHeight - 8) top = Math.max(8, rect.top - height - 8);
  node.style.left = `${Math.round(left)}px`;
  node.style.top = `${Math.round(top)}px`;
}

// One listener per container (delegation): `describe(span)` fills the tooltip or returns false.
export function attachTips(container, describe) {
  describers.set(container, describe);
  const show = (event) => {
    const span = event.target.closest ? event.target.closest(".tok") : null;
    if (!span || !container.contains(span)) return;
    if (tip.owner === span && !tip.node.hidden) return;
    tip.node.replaceChildren();
    if (describe(span, tip.node) === false) {
      hideTip();
      return;
    }
    tip.owner = span;
    placeTip(span);
  };
  container.addEventListener("mouseover", show);
  container.addEventListener("focusin", show);
  container.addEventListener("mouseleave", hideTip);
  container.addEventListener("focusout", (event) => {
    if (!container.contains(event.relatedTarget)) hideTip();
  });
  container.addEventListener("keydown", (event) => moveFocus(container, event));
}

// Arrow keys walk the characters of a token container (the spans are focusable but not tab stops).
function moveFocus(container, event) {
  if (event.key === "Escape") {
    hideTip();
    return;
  }
  const steps = {ArrowRight: 1, ArrowLeft: -1, ArrowDown: 40, ArrowUp: -40};
  const spans = container.querySelectorAll(".tok");
  if (!spans.length) return;
  const current = event.target.closest(".tok");
  let index = current ? Number(current.dataset.i) : -1;
  if (event.key in steps) index = index < 0 ? 0 : index + steps[event.key];
  else if (event.key === "Home") index = 0;
  else if (event.key === "End") index = spans.length - 1;
  else return;
  event.preventDefault();
  spans[Math.min(Math.max(index, 0), spans.length - 1)].focus();
}

export function tipHead(node, tok) {
  node.append(el("div", "tip-token", tokenLabel(tok)));
}

export function tipRows(node, rows) {
  const table = el("dl", "tip-stats");
  for (const [label, value] of rows) {
    table.append(el("dt", null, label), el("dd", null, value));
  }
  node.append(table);
}

// What the tooltip of `span` says, as plain lines (for a saved view, whose tooltips are text in the
// page itself); null where its container shows none.
export function tipText(span) {
  for (const [container, describe] of describers) {
    if (!container.contains(span)) continue;
    const node = el("div");
    if (describe(span, node) === false) return null;
    const lines = [];
    for (const part of node.children) {
      if (part.matches("dl")) {
        const cells = [...part.children];
        for (let k = 0; k + 1 < cells.length; k += 2) lines.push(`${cells[k].textContent}: ${cells[k + 1].textContent}`);
      } else if (part.matches("ol")) {
        lines.push([...part.children].map((item) => `${item.dataset.tok === undefined ? item.textContent
          : tokenLabel(item.dataset.tok)} ${(Number(item.dataset.p) * 100).toFixed(1)}%`).join(" · "));
      } else {
        lines.push(part.textContent);
      }
    }
    return lines.join("\n");
  }
  return null;
}
