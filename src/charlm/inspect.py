"""Looking inside a trained model: what it expects at every position of a text, and what its units do.

Four plain functions, which the explorer (``charlm serve``) only draws::

    text --read(run, text)--> Reading: the tokens and ids as the run reads its corpus
    ids  --score(model, ids, top)--> Scores: bits, probability and rank of every token, and the top-k
    ids  --trace(model, ids, kinds)--> Trace: h of every layer (and tanh(c) of the LSTM) at every step
    Trace, mask --rank_units--> the units that are high where the mask is set and low elsewhere

Position ``t`` of a text is scored as ``evaluate`` scores it: from everything before it, starting
from a zero state, so position 0 has no score and the mean of the others is what ``charlm
evaluate`` prints for the same text. A trace at position ``t`` is the state after reading token
``t``: a unit that fires on vowels is high at the vowels themselves.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from .checkpoint import Run
from .models import RNNLM, evaluating
from .models.config import FROM_SCRATCH
from .text import clean_lines, flatten, tokenize

__all__ = ["PRESETS", "Reading", "Scores", "Trace", "mask_of", "next_tokens", "rank_units", "read",
           "score", "top_positions", "trace"]


@dataclass
class Reading:
    """A text as a run reads it: ``tokens`` (strings) and their ``ids`` (1-D int64); ``cleaned`` says
    the run's cleaning changed the text, ``unknown`` counts the tokens read as ``<unk>``."""

    tokens: list[str]
    ids: Tensor
    cleaned: bool
    unknown: int

    @property
    def separator(self) -> str:
        """What joins the tokens into the text shown: nothing for characters, a space for words."""
        return "" if all(len(t) == 1 for t in self.tokens) else " "


def read(run: Run, text: str) -> Reading:
    """Clean and tokenize `text` as `run` read its corpus (its ``clean``, ``token`` and ``eos``).

    >>> read(run, "The Time!").tokens   # doctest: +SKIP
    ['t', 'h', 'e', ' ', 't', 'i', 'm', 'e']   # a run with the book's d2l cleaning
    """
    clean = run.config.clean if run.config is not None else "d2l"
    eos = run.config.eos if run.config is not None else False
    tokens = flatten(tokenize(clean_lines(text, clean), run.token, eos=eos))
    ids = torch.tensor(run.vocab[tokens] if tokens else [], dtype=torch.int64)
    shown = "".join(tokens) if run.token == "char" else " ".join(text.split())
    return Reading(tokens, ids, shown != text, int((ids == run.vocab.unk).sum()))


@dataclass
class Scores:
    """What the model expected at each position ``t >= 1`` of a text of ``T`` tokens; row ``t - 1`` of
    every tensor is position ``t``: ``bits (T-1,)``, ``probs (T-1,)`` and ``ranks (T-1,)`` (1 = the
    model's first choice) of the actual token, and ``top_ids, top_probs (T-1, k)``, the model's ``k``
    likeliest tokens there."""

    bits: Tensor
    probs: Tensor
    ranks: Tensor
    top_ids: Tensor
    top_probs: Tensor

    @property
    def bits_per_token(self) -> float:
        """The mean over the scored positions: ``charlm evaluate``'s bits per token."""
        return float(self.bits.double().mean())


def score(model: RNNLM, ids: Tensor, *, top: int = 5, num_steps: int = 1024,
          trace: Trace | None = None) -> Scores:
    """Score every token of `ids` (1-D, at least 2) from the ones before it, from a zero state, in
    chunks of `num_steps` with the state carried (the same sums as :func:`~charlm.evaluate_ids`).
    Given the `trace` of the same ids, the logits come from its last layer's ``h`` through the output
    layer instead, with no second pass over the recurrence."""
    if len(ids) < 2:
        raise ValueError(f"a text of {len(ids)} token(s) has nothing to score: at least 2 are needed")
    top = min(top, model.config.vocab_size)
    device = next(model.parameters()).device
    X, Y = ids[:-1].to(device)[None], ids[1:].to(device)  # (1, T-1) inputs, (T-1,) targets
    parts = []
    with evaluating(model):
        for start, logits in _chunk_logits(model, X, num_steps, trace):
            logp = torch.log_softmax(logits.float(), dim=-1)  # (steps, V)
            target = Y[start:start + len(logp), None]
            actual = logp.gather(1, target)  # (steps, 1)
            rank = (logp > actual).sum(dim=1) + 1  # how many tokens the model preferred, plus one
            top_logp, top_ids = torch.topk(logp, top, dim=-1)
            parts.append((actual[:, 0], rank, top_ids, top_logp))
    actual, ranks, top_ids, top_logp = (torch.cat(p) for p in zip(*parts))
    return Scores(-actual / math.log(2), actual.exp(), ranks, top_ids, top_logp.exp())


def _chunk_logits(model: RNNLM, X: Tensor, num_steps: int,
                  trace: Trace | None) -> Iterator[tuple[int, Tensor]]:
    """(start, logits (steps, V)) of the inputs ``X (1, T)``, chunk by chunk."""
    if trace is None:
        state = model.begin_state(1, X.device)
        for start in range(0, X.shape[1], num_steps):
            logits, state = model(X[:, start:start + num_steps], state)
            yield start, logits[0]
        return
    if trace.values.shape[0] != X.shape[1] + 1:
        raise ValueError(f"the trace has {trace.values.shape[0]} positions but the text "
                         f"{X.shape[1] + 1}: trace the same ids")
    last = trace.block(model.config.num_layers - 1, "h")
    H = trace.values[:-1, last.start:last.start + last.size]  # (T-1, D*H): what predicts each next token
    if model.config.impl in FROM_SCRATCH:
        W, b = model.W_hq, model.b_q
    else:
        W, b = model.output.weight.T, model.output.bias
    for start in range(0, len(H), num_steps):
        yield start, torch.addmm(b.float(), H[start:start + num_steps], W.float())


def next_tokens(model: RNNLM, ids: Tensor, *, top: int = 10) -> tuple[Tensor, Tensor]:
    """The `top` likeliest tokens after all of `ids` (1-D, at least 1), and their probabilities."""
    if len(ids) < 1:
        raise ValueError("the text is empty: the next token follows at least one token")
    device = next(model.parameters()).device
    with evaluating(model):
        logits, _ = model(ids.to(device)[None])
    probs = torch.softmax(logits[0, -1].float(), dim=-1)
    values, indices = torch.topk(probs, min(top, len(probs)))
    return indices, values


# ---- hidden states ----------------------------------------------------------------------------

@dataclass
class Block:
    """Columns ``start:start + size`` of a trace: the ``kind`` (``"h"``, or ``"c"`` for the LSTM's
    ``tanh(c)``) of layer ``layer``, both directions side by side for a bidirectional model."""

    layer: int
    kind: str
    start: int
    size: int


@dataclass
class Trace:
    """``values (T, U)`` float32: every unit's value after reading each token, the ``blocks`` side by
    side; ``mean`` and ``std`` ``(U,)`` are kept for :func:`rank_units`."""

    values: Tensor
    blocks: list[Block]
    mean: Tensor
    std: Tensor

    def block(self, layer: int, kind: str) -> Block:
        for b in self.blocks:
            if b.layer == layer and b.kind == kind:
                return b
        kinds = ", ".join(f"layer {b.layer} {b.kind}" for b in self.blocks)
        raise ValueError(f"no units of kind {kind!r} in layer {layer}; this trace has {kinds}")

    def unit(self, index: int) -> tuple[int, str, int]:
        """(layer, kind, unit within the block) of column `index`."""
        for b in self.blocks:
            if b.start <= index < b.start + b.size:
                return b.layer, b.kind, index - b.start
        raise IndexError(index)

    def column(self, layer: int, kind: str, unit: int) -> Tensor:
        b = self.block(layer, kind)
        if not 0 <= unit < b.size:
            raise ValueError(f"unit must be in [0, {b.size}) for layer {layer} {kind}, got {unit}")
        return self.values[:, b.start + unit]


def _builtin_layer(core: nn.RNNBase, layer: int, direction: int) -> nn.RNNBase:
    """A one-layer, one-direction module of the same kind sharing layer `layer`'s parameters."""
    suffix = f"_l{layer}" + ("_reverse" if direction else "")
    options = {"nonlinearity": core.nonlinearity} if isinstance(core, nn.RNN) else {}
    single = type(core)(getattr(core, f"weight_ih{suffix}").shape[1], core.hidden_size, **options)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        setattr(single, f"{name}_l0", getattr(core, f"{name}{suffix}"))  # RNNBase tracks its flat weights
    return single.to(getattr(core, f"weight_ih{suffix}"))


def _lstm_weights(model: RNNLM, layer: int, direction: int) -> tuple[Tensor, Tensor, Tensor]:
    """``W_x (in, 4H)``, ``b (4H)``, ``W_h (H, 4H)`` of one LSTM layer, gates (i, f, g, o)."""
    core = model.core
    if isinstance(core, nn.RNNBase):
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        W_ih, W_hh = getattr(core, f"weight_ih{suffix}"), getattr(core, f"weight_hh{suffix}")
        return W_ih.T, getattr(core, f"bias_ih{suffix}") + getattr(core, f"bias_hh{suffix}"), W_hh.T
    cell = (core.layers if direction == 0 else core.layers_reverse)[layer]
    W_x, b, W_h, _ = cell.fused_weights()
    return W_x, b, W_h


def _cells(X: Tensor, H: Tensor, W_x: Tensor, b: Tensor, W_h: Tensor) -> Tensor:
    """The LSTM's memory ``C (T, B, n)`` from its inputs ``X`` (``(T, B, in)``, or ids ``(T, B)``) and
    hidden states ``H (T, B, n)``: every gate at once, since ``H_{t-1}`` is known, then the one
    elementwise recurrence ``C_t = F_t * C_{t-1} + I_t * C_tilde_t`` (d2l eq. 9.2.3) from ``C_0 = 0``."""
    n = H.shape[-1]
    H_prev = torch.cat([torch.zeros_like(H[:1]), H[:-1]])
    W_x, b, W_h = W_x[:, :3 * n], b[:3 * n], W_h[:, :3 * n]  # I, F and C_tilde; O is not needed
    source = nnf.embedding(X, W_x) if not X.is_floating_point() else X @ W_x
    gates = source + b + H_prev @ W_h  # (T, B, 3n)
    I, F = torch.sigmoid(gates[..., :n]), torch.sigmoid(gates[..., n:2 * n])
    fresh = I * torch.tanh(gates[..., 2 * n:3 * n])  # I_t * C_tilde_t
    return _linear_scan(F, fresh)


def _linear_scan(F: Tensor, U: Tensor, block: int = 64) -> Tensor:
    """``C_t = F_t * C_{t-1} + U_t`` from ``C_{-1} = 0`` for ``F, U (T, ...)``, in about ``block + T / block``
    tensor operations rather than ``T``: within each block of steps, the products of the gates and the
    partial sums from a zero start are formed for all blocks at once; then each block's start is
    carried from the end of the one before. Only products of gates in (0, 1) are formed, so nothing
    overflows, and a product that underflows to 0 is the right limit.

    >>> _linear_scan(torch.tensor([0.5, 0.5, 0.5]), torch.tensor([1.0, 1.0, 1.0]))
    tensor([1.0000, 1.5000, 1.7500])
    """
    T = F.shape[0]
    pad = (-T) % block
    if pad:  # F = 1, U = 0 past the end changes nothing before it
        F = torch.cat([F, F.new_ones((pad, *F.shape[1:]))])
        U = torch.cat([U, U.new_zeros((pad, *U.shape[1:]))])
    Fb, Ub = F.view(-1, block, *F.shape[1:]), U.view(-1, block, *U.shape[1:])  # (blocks, block, ...)
    A, B = torch.empty_like(Fb), torch.empty_like(Ub)  # C within a block = A * (C before it) + B
    A[:, 0], B[:, 0] = Fb[:, 0], Ub[:, 0]
    for k in range(1, block):
        A[:, k] = A[:, k - 1] * Fb[:, k]
        B[:, k] = torch.addcmul(Ub[:, k], Fb[:, k], B[:, k - 1])
    starts = torch.zeros_like(Ub[:, 0])  # (blocks, ...): C just before each block
    for b in range(1, len(starts)):
        starts[b] = torch.addcmul(B[b - 1, -1], A[b - 1, -1], starts[b - 1])
    C = torch.addcmul(B, A, starts[:, None])
    return C.reshape(-1, *F.shape[1:])[:T]


def _cells_of(model: RNNLM, X: Tensor, H: Tensor, layer: int, direction: int) -> Tensor:
    """:func:`_cells` of one layer and direction; the backward one runs in its own time order."""
    weights = _lstm_weights(model, layer, direction)
    if direction == 0:
        return _cells(X, H, *weights)
    return _cells(X.flip(0), H.flip(0), *weights).flip(0)


def _run_layer(model: RNNLM, X: Tensor, layer: int, direction: int) -> Tensor:
    """One layer and direction over the whole text from a zero state: ``H (T, B, n)``."""
    core = model.core
    backwards = direction == 1
    X = X.flip(0) if backwards else X
    if isinstance(core, nn.RNNBase):
        H, _ = _builtin_layer(core, layer, direction)(X)
    else:
        cell = (core.layers if direction == 0 else core.layers_reverse)[layer]
        H, _ = cell(X, cell.begin_state(X.shape[1]))
    return H.flip(0) if backwards else H


def trace(model: RNNLM, ids: Tensor, *, kinds: tuple[str, ...] = ("h", "c")) -> Trace:
    """Every unit's value after reading each token of `ids` (1-D), from a zero state, layer by layer:
    ``h`` of every layer, and with ``"c"`` in `kinds` the LSTM's ``tanh(c)`` (what its output gate
    lets through). Both directions of a bidirectional layer sit side by side, forward first."""
    if len(ids) < 1:
        raise ValueError("the text is empty: there is nothing to trace")
    unknown = set(kinds) - {"h", "c"}
    if unknown:
        raise ValueError(f"kinds must be among h, c, got {sorted(unknown)}")
    lstm = model.config.cell == "lstm"
    device = next(model.parameters()).device
    columns, blocks, width = [], [], 0
    with evaluating(model):
        X = model._encode(ids.to(device)[None])  # (T, 1, V or E), or ids (T, 1) for the fast core
        for layer in range(model.config.num_layers):
            directions = range(model.config.num_directions)
            H = [_run_layer(model, X, layer, d) for d in directions]
            found = {"h": torch.cat(H, dim=-1)}
            if lstm and "c" in kinds:
                found["c"] = torch.tanh(torch.cat([_cells_of(model, X, H[d], layer, d) for d in directions],
                                                  dim=-1))
            for kind in ("h", "c"):
                if kind in found and kind in kinds:
                    values = found[kind][:, 0].float()  # (T, n)
                    blocks.append(Block(layer, kind, width, values.shape[1]))
                    columns.append(values)
                    width += values.shape[1]
            X = found["h"]  # the next layer reads this one's hidden states (eq. 9.3.1)
    if not columns:
        raise ValueError("nothing to trace: kinds has no kind this model has")
    values = torch.cat(columns, dim=1)
    return Trace(values, blocks, values.mean(dim=0), values.std(dim=0, correction=0))


# ---- finding units by what they do ------------------------------------------------------------

_VOWELS = set("aeiouAEIOU")
_QUOTES = {'"': '"', "\u201c": "\u201d"}


def _inside(text: str, opening: str, closing: str) -> list[bool]:
    """The characters strictly between an opening mark and its closing one (nesting counted)."""
    depth, marked = 0, []
    for ch in text:
        if ch == closing and depth > 0 and (opening != closing or depth == 1):
            depth -= 1
            marked.append(depth > 0)  # the closing mark of a nested pair is inside the outer one
            continue
        marked.append(depth > 0)
        if ch == opening:
            depth = 1 if opening == closing else depth + 1
    return marked


def _inside_quotes(text: str) -> list[bool]:
    straight, curly = _inside(text, '"', '"'), _inside(text, "\u201c", "\u201d")
    return [a or b for a, b in zip(straight, curly)]


# What each preset marks, character by character, in the text as the model reads it.
PRESETS = {
    "vowel": lambda text: [ch in _VOWELS for ch in text],
    "space": lambda text: [ch.isspace() for ch in text],
    "capital": lambda text: [ch.isupper() for ch in text],
    "digit": lambda text: [ch.isdigit() for ch in text],
    "punctuation": lambda text: [not (ch.isalnum() or ch.isspace()) for ch in text],
    "inside quotes": _inside_quotes,
    "inside parentheses": lambda text: _inside(text, "(", ")"),
    "line start": lambda text: [i == 0 or text[i - 1] == "\n" for i in range(len(text))],
    "word end": lambda text: [ch.isalpha() and not text[i + 1:i + 2].isalpha() for i, ch in enumerate(text)],
}


def _char_marks(text: str, preset: str | None, regex: str | None) -> list[bool]:
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
        return PRESETS[preset](text)
    try:
        pattern = re.compile(regex)
    except re.error as err:
        raise ValueError(f"regex {regex!r} is not a regular expression: {err}") from None
    marked = [False] * len(text)
    for match in pattern.finditer(text):
        marked[match.start():match.end()] = [True] * (match.end() - match.start())
    return marked


def mask_of(reading: Reading, *, preset: str | None = None, regex: str | None = None,
            spans: list[tuple[int, int]] | None = None) -> Tensor:
    """A bool mask over the tokens of `reading`, from exactly one of: a preset name (see
    :data:`PRESETS`), a regular expression (the tokens any match covers) or token spans
    ``[(start, end), ...]`` (end excluded). Presets and expressions look at the text as shown (word
    tokens joined by spaces); a token is marked when any of its characters is.

    >>> mask_of(read(run, "a cat"), preset="vowel")   # doctest: +SKIP
    tensor([True, False, False, True, False])
    """
    if sum(x is not None for x in (preset, regex, spans)) != 1:
        raise ValueError("give exactly one of preset, regex and spans to mark the text")
    T = len(reading.tokens)
    if spans is not None:
        mask = torch.zeros(T, dtype=torch.bool)
        for start, end in spans:
            if not 0 <= start < end <= T:
                raise ValueError(f"span [{start}, {end}) is not within the text's {T} tokens")
            mask[start:end] = True
        return mask
    sep = reading.separator
    text = sep.join(reading.tokens)
    marks = _char_marks(text, preset, regex)
    mask, pos = torch.zeros(T, dtype=torch.bool), 0
    for i, tok in enumerate(reading.tokens):
        mask[i] = any(marks[pos:pos + len(tok)])
        pos += len(tok) + len(sep)
    return mask


@dataclass
class Ranked:
    """One unit's match to a mask: column `index` of the trace, and its point-biserial correlation."""

    index: int
    score: float
    mean_in: float
    mean_out: float


def rank_units(trace: Trace, mask: Tensor, *, limit: int = 20) -> list[Ranked]:
    """The `limit` units whose values are high where `mask` is set and low elsewhere, best first.

    The score is the correlation of each unit with the 0/1 mask (point-biserial):
    ``(mean_in - mean_out) * sqrt(p * (1 - p)) / std`` with ``p`` the marked fraction, in [-1, 1];
    1 means the unit alone tells the marked positions apart. One product ``mask @ values`` gives
    every unit's ``mean_in``; the rest comes from the means kept in the trace.
    """
    mask = mask.to(torch.bool)
    T = trace.values.shape[0]
    if mask.shape != (T,):
        raise ValueError(f"the mask has {mask.numel()} positions but the trace has {T}")
    marked = int(mask.sum())
    if marked == 0 or marked == T:
        raise ValueError("the mask must mark some positions and leave others: "
                         f"it marks {marked} of {T}")
    p = marked / T
    mean_in = mask.float() @ trace.values / marked  # (U,)
    mean_out = (trace.mean * T - mean_in * marked) / (T - marked)
    score = (mean_in - mean_out) * math.sqrt(p * (1 - p)) / trace.std.clamp_min(1e-6)
    best = torch.topk(score, min(limit, len(score))).indices
    return [Ranked(int(i), float(score[i]), float(mean_in[i]), float(mean_out[i])) for i in best]


def top_positions(values: Tensor, *, count: int = 10, apart: int = 8) -> list[int]:
    """Where `values` (1-D) is highest, best first, each at least `apart` positions from those before:
    the top-firing contexts of a unit, without the same context several times over."""
    chosen: list[int] = []
    for i in torch.argsort(values, descending=True, stable=True).tolist():
        if all(abs(i - j) >= apart for j in chosen):
            chosen.append(i)
            if len(chosen) == count:
                break
    return chosen
