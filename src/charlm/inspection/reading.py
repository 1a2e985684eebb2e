"""Looking inside a trained model: what it expects at every position of a text, and what its units do.

Plain functions, which the explorer (``charlm serve``) only draws::

    text --read(run, text)--> Reading: the tokens and ids as the run reads its corpus
    ids  --score(model, ids, top)--> Scores: bits, probability and rank of every token, and the top-k
    ids  --trace(model, ids, kinds)--> Trace: h of every layer (and tanh(c) of the LSTM) at every step
    Trace, mask --rank_units--> the units that are high where the mask is set and low elsewhere
    Reading, Scores --where_bits_go--> the bits by kind of token and by a letter's place in its word

Position ``t`` of a text is scored as ``evaluate`` scores it: from everything before it, starting
from the model's first state (zeros, or after its preamble), so position 0 has no score and the
mean of the others is what ``charlm evaluate`` prints for the same text. A trace at position ``t``
is the state after reading token ``t``: a unit that fires on vowels is high at the vowels themselves.
"""

from __future__ import annotations

import bz2
import lzma
import math
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from ..checkpoint import Run
from ..data.gutenberg import without_boilerplate
from ..data.text import clean_lines, flatten, tokenize
from ..models import RNNLM, evaluating
from ..models.config import FROM_SCRATCH
from . import hidden

__all__ = ["PRESETS", "Reading", "Scores", "Trace", "mask_of", "next_tokens", "rank_units", "read",
           "score", "top_positions", "trace"]


@dataclass
class Reading:
    """A text as a run reads it: ``tokens`` (strings) and their ``ids`` (1-D int64); ``cleaned`` says
    the run's cleaning changed the text, ``unknown`` counts the tokens read as ``<unk>``, and
    ``left_out`` the characters of a Project Gutenberg header and licence that were not read."""

    tokens: list[str]
    ids: Tensor
    cleaned: bool
    unknown: int
    left_out: int = 0

    @property
    def separator(self) -> str:
        """What joins the tokens into the text shown: nothing for characters, a space for words."""
        return "" if all(len(t) == 1 for t in self.tokens) else " "


def read(run: Run, text: str, *, keep_boilerplate: bool = False) -> Reading:
    """Clean and tokenize `text` as `run` read its corpus (its ``clean``, ``token`` and ``eos``),
    without a Project Gutenberg header and licence unless `keep_boilerplate`.

    >>> read(run, "The Time!").tokens   # doctest: +SKIP
    ['t', 'h', 'e', ' ', 't', 'i', 'm', 'e']   # a run with the book's d2l cleaning
    """
    clean = run.config.clean if run.config is not None else "d2l"
    eos = run.config.eos if run.config is not None else False
    left_out: list[int] = [0]
    if not keep_boilerplate:
        text = "".join(without_boilerplate([text], left_out))
    tokens = flatten(tokenize(clean_lines(text, clean), run.token, eos=eos))
    ids = torch.tensor(run.vocab[tokens] if tokens else [], dtype=torch.int64)
    shown = "".join(tokens) if run.token == "char" else " ".join(text.split())
    return Reading(tokens, ids, shown != text, int((ids == run.vocab.unk).sum()), left_out[-1])


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
    """Score every token of `ids` (1-D, at least 2) from the ones before it, from the first state: the
    same sums as :func:`~charlm.evaluate_ids`, from the last layer's hidden states over the whole
    text (:func:`charlm.inspection.hidden.layer_outputs`, the layers overlapped), `num_steps` positions of
    logits at a time. Given the `trace` of the same ids, its last layer's ``h`` is used instead, with
    no second pass over the recurrence. Meant for a page of text (the states of the whole text are
    held at once); ``evaluate_ids`` scores a stream of any length."""
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
    """(start, logits (steps, V)) of the inputs ``X (1, T)``, chunk by chunk: from the last layer's
    hidden states, of a trace or of :func:`charlm.inspection.hidden.layer_outputs` (which overlaps the
    layers)."""
    if trace is None:
        X, skip = hidden.after_preamble(model, X[0])
        H = hidden.layer_outputs(model, model._encode(X[None]))[-1][skip:, 0]  # (T-1, D*H)
        yield from _project(model, H, num_steps)
        return
    if trace.values.shape[0] != X.shape[1] + 1:
        raise ValueError(f"the trace has {trace.values.shape[0]} positions but the text "
                         f"{X.shape[1] + 1}: trace the same ids")
    last = trace.block(model.config.num_layers - 1, "h")
    yield from _project(model, trace.values[:-1, last.start:last.start + last.size], num_steps)


def _project(model: RNNLM, H: Tensor, num_steps: int) -> Iterator[tuple[int, Tensor]]:
    """The output layer (d2l §8.5.2: ``H W_hq + b_q``) on ``H (T, D*H)``, `num_steps` rows at a time."""
    if model.config.impl in FROM_SCRATCH:
        W, b = model.W_hq, model.b_q
    else:
        W, b = model.output.weight.T, model.output.bias
    for start in range(0, len(H), num_steps):
        yield start, torch.addmm(b.float(), H[start:start + num_steps].float(), W.float())


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


def trace(model: RNNLM, ids: Tensor, *, kinds: tuple[str, ...] = ("h", "c")) -> Trace:
    """Every unit's value after reading each token of `ids` (1-D), from the model's first state,
    layer by layer:
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
    ids, skip = hidden.after_preamble(model, ids)
    with evaluating(model):
        X = model._encode(ids.to(device)[None])  # (T, 1, V or E), or ids (T, 1) for the fast core
        outputs = hidden.layer_outputs(model, X)
        for layer, H in enumerate(outputs):
            found = {"h": H}
            if lstm and "c" in kinds:
                inputs = X if layer == 0 else outputs[layer - 1]
                found["c"] = torch.tanh(hidden.cells(model, inputs, H, layer))
            for kind in ("h", "c"):
                if kind in found and kind in kinds:
                    values = found[kind][skip:, 0].float()  # (T, n)
                    blocks.append(Block(layer, kind, width, values.shape[1]))
                    columns.append(values)
                    width += values.shape[1]
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


# ---- where the bits go ----------------------------------------------------------------------

def token_class(token: str) -> str:
    """The kind of a token: letter, capital, space, digit or punctuation; any longer token is a word."""
    if len(token) != 1:
        return "word"
    if token.isspace():
        return "space"
    if token.isdigit():
        return "digit"
    if token.isalpha():
        return "capital" if token.isupper() else "letter"
    return "punctuation"


def word_positions(tokens: list[str]) -> list[int]:
    """Each character's place in its word (a run of letters): 1 for the first letter, 2 for the second
    and so on; 0 for what is not a letter. A model pays most for a word's first letters and little
    for its last, once the word is clear."""
    places, run = [], 0
    for token in tokens:
        run = run + 1 if len(token) == 1 and token.isalpha() else 0
        places.append(run)
    return places


@dataclass
class Group:
    """Some of a text's scored positions: how many, and their mean bits."""

    count: int
    bits: float


def _grouped(keys: list, bits: list[float]) -> dict:
    sums: dict = {}
    for key, b in zip(keys, bits):
        count, total = sums.get(key, (0, 0.0))
        sums[key] = (count + 1, total + b)
    return {key: Group(count, total / count) for key, (count, total) in sums.items()}


@dataclass
class Breakdown:
    """Where the bits of a text go: by kind of token, by a letter's place in its word (characters
    only: "1" to "5" and "6+"), and the costliest positions, dearest first."""

    by_class: dict[str, Group]
    by_place: dict[str, Group]
    costliest: list[int]


def where_bits_go(reading: Reading, scores: Scores, *, costliest: int = 10) -> Breakdown:
    """The bits of `scores` (positions 1..T-1 of `reading`) grouped by kind and by place in the word."""
    tokens, bits = reading.tokens[1:], scores.bits.tolist()
    by_class = _grouped([token_class(t) for t in tokens], bits)
    by_place: dict[str, Group] = {}
    if reading.separator == "":
        places = word_positions(reading.tokens)[1:]
        letters = [(min(p, 6), b) for p, b in zip(places, bits) if p > 0]
        grouped = _grouped([p for p, _ in letters], [b for _, b in letters])
        by_place = {("6+" if p == 6 else str(p)): grouped[p] for p in sorted(grouped)}
    dearest = torch.topk(scores.bits, min(costliest, len(bits))).indices + 1
    return Breakdown(dict(sorted(by_class.items())), by_place, dearest.tolist())


def compressor_bits(text: str, count: int) -> dict[str, float]:
    """Bits per token that zlib, bz2 and lzma (xz), each at its strongest, need for `text` in UTF-8,
    spread over `count` tokens: the baseline a language model has to beat."""
    data = text.encode("utf-8")
    sizes = {"zlib": len(zlib.compress(data, 9)), "bz2": len(bz2.compress(data, 9)),
             "lzma": len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))}
    return {name: 8 * size / count for name, size in sizes.items()}
