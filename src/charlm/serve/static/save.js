// Save view: the view on screen as one HTML file that needs nothing else: its text, colours and
// charts (inline SVG) as they are, the style sheet inside it, and each token's tooltip as text in
// the page, shown on hover or focus by CSS alone. The file runs no script and loads nothing: its
// policy (default-src 'none') lets it use only what it holds.

import {$, el} from "./dom.js";
import {currentRun, state} from "./state.js";
import {tipText} from "./tips.js";

const POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";
// The tooltip of a saved page: the text kept in data-tip, under the token.
const SAVED_CSS = `
body.saved { padding: 16px; }
.saved-head { margin: 0 0 12px; }
.saved .tok[data-tip] { position: relative; }
.saved .tok[data-tip]:hover::after, .saved .tok[data-tip]:focus::after {
  content: attr(data-tip); position: absolute; left: 0; top: 1.6em; z-index: 10; min-width: 14em;
  white-space: pre-line; background: #1b1f24; color: #fff; padding: 6px 8px; border-radius: 6px;
  font: 12px/1.4 system-ui, sans-serif; }
`;

function styleSheets() {
  const rules = [];
  for (const sheet of document.styleSheets) {
    for (const rule of sheet.cssRules) rules.push(rule.cssText);
  }
  return rules.join("\n");
}

function escapeHtml(text) {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// The view's elements as they are shown, without the controls, which would do nothing in a file.
export function savedView(view) {
  const clone = view.cloneNode(true);
  const live = view.querySelectorAll(".tok");
  clone.querySelectorAll(".tok").forEach((span, k) => {
    const text = tipText(live[k]);
    if (text) {
      span.dataset.tip = text;
      span.tabIndex = 0;
    }
  });
  clone.querySelectorAll("[hidden], .input-card, button, input, select, textarea, fieldset, .find")
    .forEach((node) => node.remove());
  clone.removeAttribute("hidden");
  return clone;
}

export function savedPage() {
  const view = document.querySelector(".view:not([hidden])");
  const run = currentRun();
  const title = `charlm · ${state.view} · ${run ? run.name : ""}`;
  const head = el("p", "saved-head muted small",
    `${title} — saved ${new Date().toISOString().slice(0, 16).replace("T", " ")} UTC from charlm serve`);
  return "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n" +
    `<meta http-equiv="Content-Security-Policy" content="${POLICY}">\n` +
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n" +
    `<title>${escapeHtml(title)}</title>\n<style>\n${styleSheets()}\n${SAVED_CSS}</style>\n</head>\n` +
    `<body class="saved">\n${head.outerHTML}\n<main>${savedView(view).outerHTML}</main>\n</body>\n</html>\n`;
}

function download() {
  const run = currentRun();
  const blob = new Blob([savedPage()], {type: "text/html"});
  const link = el("a");
  link.href = URL.createObjectURL(blob);
  link.download = `charlm-${state.view}-${run ? run.name : "view"}.html`.replace(/[^\w.-]+/g, "_");
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

export function wireSave() {
  $("save-view").addEventListener("click", download);
}
