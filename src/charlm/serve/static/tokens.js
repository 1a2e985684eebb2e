// A text as one span per token, coloured; a token brought into view; a token quoted in its context.

import {el} from "./dom.js";
import {tokenGlyph} from "./format.js";

export function tokenSpan(tok, i) {
  const span = el("span", "tok", tok);
  span.dataset.i = String(i);
  span.tabIndex = -1;
  if (tok === "\n") span.classList.add("nl");
  else if (tok === "\t") span.classList.add("tab");
  else if (tok === " ") span.classList.add("sp");
  return span;
}

// Builds every span in one fragment: thousands of tokens cost one reflow.
export function renderTokens(container, tokens, {word = false, colour = null} = {}) {
  const fragment = document.createDocumentFragment();
  tokens.forEach((tok, i) => {
    if (word && i > 0) fragment.append(document.createTextNode(" "));
    const span = tokenSpan(tok, i);
    const c = colour ? colour(i) : null;
    if (c) {
      span.style.backgroundColor = c.bg;
      span.style.color = c.fg;
    } else if (colour) {
      span.classList.add("unscored");
    }
    fragment.append(span);
  });
  container.replaceChildren(fragment);
}

export function focusToken(container, i) {
  const span = container.querySelector(`.tok[data-i="${i}"]`);
  if (!span) return;
  span.scrollIntoView({block: "center", behavior: "smooth"});
  span.focus({preventScroll: true});
  span.classList.remove("flash");
  void span.offsetWidth; // restart the flash animation
  span.classList.add("flash");
}

// The ~20 characters around position `pos`, as a line with that token marked.
export function contextLine(tokens, pos, {word = false, radius = 10} = {}) {
  const line = el("span", "context");
  const sep = word ? " " : "";
  const flat = (t) => t.replace(/\n/g, "↵").replace(/\t/g, "⇥");
  const before = tokens.slice(Math.max(0, pos - radius), pos).join(sep);
  const after = tokens.slice(pos + 1, pos + 1 + radius).join(sep);
  line.append(el("span", "context-side", (pos - radius > 0 ? "…" : "") + flat(before) + (word && before ? " " : "")));
  line.append(el("mark", null, tokenGlyph(tokens[pos])));
  line.append(el("span", "context-side", (word && after ? " " : "") + flat(after) +
    (pos + 1 + radius < tokens.length ? "…" : "")));
  return line;
}
