// Numbers and tokens as the page writes them.

// How a token reads in a tooltip or a list, where a bare space or newline would be invisible.
export function tokenLabel(tok) {
  if (tok === " ") return "␣ space";
  if (tok === "\n") return "↵ newline";
  if (tok === "\t") return "⇥ tab";
  if (tok === "") return "(nothing)";
  return tok;
}

export function tokenGlyph(tok) {
  if (tok === " ") return "␣";
  if (tok === "\n") return "↵";
  if (tok === "\t") return "⇥";
  return tok;
}

export const fmtP = (p) => (p >= 0.001 ? `${(100 * p).toFixed(1)}%` : p.toExponential(1));
export const fmtBits = (b) => `${b.toFixed(2)} bits`;

export function compact(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e7 ? 0 : 1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(n >= 1e4 ? 0 : 1)}k`;
  return String(n);
}

export function duration(seconds) {
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  if (seconds < 7200) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}
