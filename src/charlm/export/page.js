"use strict";
// The cell of a charlm run, step by step in float32 arrays: the weights come from the JSON beside
// this script (charlm/export/page.py writes both), in the fused layout of charlm's scratch kernels.
(() => {
  const data = JSON.parse(document.getElementById("model").textContent);
  const {cell, hidden: H, layers: L, vocab: V, activation} = data.config;
  const resetAfter = data.config.reset_after;
  const G = {rnn: 1, gru: 3, lstm: 4}[cell];

  function floats(b64) {
    if (b64 === null) return null;
    const text = atob(b64);
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    return new Float32Array(bytes.buffer);
  }

  const P0 = floats(data.P0);                  // (V, G*H): layer 0's input product for each token
  const layers = data.layers.map((l) => ({Wx: floats(l.W_x), b: floats(l.b), Wh: floats(l.W_h),
    extra: floats(l.extra)}));
  const Wout = floats(data.W_out);             // (H, V)
  const bout = floats(data.b_out);
  const vocab = data.vocab;
  const index = new Map(vocab.map((t, i) => [t, i]));

  // out (n) = bias + x (m) W (m, n), W row-major; the inner loop runs along a row.
  function addProduct(out, x, W, n) {
    for (let j = 0; j < x.length; j++) {
      const xj = x[j];
      if (xj === 0) continue;
      const row = j * n;
      for (let k = 0; k < n; k++) out[k] += xj * W[row + k];
    }
  }

  const sigmoid = (v) => 1 / (1 + Math.exp(-v));
  const act = activation === "relu" ? (v) => (v > 0 ? v : 0) : Math.tanh;

  function newState() {
    return Array.from({length: L}, () => ({h: new Float32Array(H), c: new Float32Array(H)}));
  }

  const gx = new Float64Array(G * H);
  const gh = new Float64Array(G * H);
  const rh = new Float32Array(H);
  const logits = new Float64Array(V);

  // One step of every layer for token `id`; the logits of the next token are left in `logits`.
  function step(state, id) {
    let below = null;
    for (let l = 0; l < L; l++) {
      const {Wx, b, Wh, extra} = layers[l];
      const s = state[l];
      if (l === 0) {
        for (let k = 0; k < G * H; k++) gx[k] = P0[id * G * H + k];
      } else {
        gx.set(b);
        addProduct(gx, below, Wx, G * H);
      }
      if (cell === "lstm") {
        gh.set(gx);
        addProduct(gh, s.h, Wh, 4 * H);
        for (let k = 0; k < H; k++) {
          const i = sigmoid(gh[k]), f = sigmoid(gh[H + k]), g = Math.tanh(gh[2 * H + k]), o = sigmoid(gh[3 * H + k]);
          s.c[k] = f * s.c[k] + i * g;
          s.h[k] = o * Math.tanh(s.c[k]);
        }
      } else if (cell === "gru") {
        const width = resetAfter ? 3 * H : 2 * H;
        gh.fill(0, 0, width);
        addProduct(gh.subarray(0, width), s.h, Wh, width);
        const z = new Float64Array(H), n = new Float64Array(H);
        for (let k = 0; k < H; k++) {
          z[k] = sigmoid(gx[k] + gh[k]);
          const r = sigmoid(gx[H + k] + gh[H + k]);
          if (resetAfter) n[k] = Math.tanh(gx[2 * H + k] + r * (gh[2 * H + k] + extra[k]));
          else rh[k] = r * s.h[k];
        }
        if (!resetAfter) {  // the book's form: the reset gate scales the state before its product
          const cand = new Float64Array(H);
          addProduct(cand, rh, extra, H);
          for (let k = 0; k < H; k++) n[k] = Math.tanh(gx[2 * H + k] + cand[k]);
        }
        for (let k = 0; k < H; k++) s.h[k] = z[k] * s.h[k] + (1 - z[k]) * n[k];
      } else {
        gh.set(gx);
        addProduct(gh, s.h, Wh, H);
        for (let k = 0; k < H; k++) s.h[k] = act(gh[k]);
      }
      below = s.h;
    }
    logits.set(bout);
    addProduct(logits, below, Wout, V);
  }

  // A seeded generator (mulberry32): the same seed, the same text.
  function random(seed) {
    let a = seed >>> 0;
    return () => {
      a = (a + 0x6D2B79F5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  function choose(greedy, temperature, draw) {
    let best = 0;
    for (let v = 1; v < V; v++) if (logits[v] > logits[best]) best = v;  // the first of equal maxima
    if (greedy) return best;
    let total = 0;
    const weights = new Float64Array(V);
    for (let v = 0; v < V; v++) total += (weights[v] = Math.exp((logits[v] - logits[best]) / temperature));
    let u = draw() * total;
    for (let v = 0; v < V; v++) if ((u -= weights[v]) <= 0) return v;
    return V - 1;
  }

  function write() {
    const prefix = document.getElementById("write-prefix").value;
    const out = document.getElementById("write-out");
    if (!prefix) {
      out.textContent = "Give a prefix: the model writes what follows it.";
      return;
    }
    const count = Math.max(1, Math.min(100000, parseInt(document.getElementById("write-num-preds").value, 10) || 200));
    const greedy = document.getElementById("write-greedy").checked;
    const temperature = Math.max(0.05, Number(document.getElementById("write-temperature").value) || 1);
    const draw = random(parseInt(document.getElementById("write-seed-input").value, 10) || 0);
    const state = newState();
    const started = performance.now();
    for (const id of data.preamble || []) step(state, id);  // where charlm begins a text
    for (const ch of prefix) step(state, index.has(ch) ? index.get(ch) : 0);  // unknown: <unk>
    const tokens = [];
    for (let t = 0; t < count; t++) {
      const id = choose(greedy, temperature, draw);
      tokens.push(vocab[id]);
      if (t + 1 < count) step(state, id);
    }
    const seconds = (performance.now() - started) / 1000;
    out.textContent = prefix + tokens.join("");
    const rate = (prefix.length + count) / Math.max(seconds, 1e-6);
    const speed = document.getElementById("write-speed");
    speed.dataset.rate = String(rate);
    speed.textContent = `${Math.round(rate).toLocaleString("en-US")} characters/s`;
    out.dataset.done = "true";
  }

  document.getElementById("write-go").addEventListener("click", write);
  document.body.dataset.ready = "true";
})();
