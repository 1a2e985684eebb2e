"""What a unit does: hold it at a value (or at zero) and watch what the model reads and writes change.

    ids, variants --read_clamped--> the bits of every position, for each set of clamps
    ids --ablation_ranking--> the units whose removal (held at zero) costs most bits on a text
    prefix, clamps --generate_clamped--> text written with the units held, and the same seed without

A clamp holds one unit of one layer, ``h`` or (for the LSTM) its memory cell ``c``, at a value after
every step, so the held value is what the layer above reads at that step and what the layer itself
carries to the next. The model runs step by step, every layer on its own with its own weights (the
runners of :mod:`.hidden`), and the variants of one request run side by side as rows of one batch;
without clamps the numbers are those of ``score`` (a test holds them to it).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.vocab import Vocab
from ..generation import GenerateConfig, _new_generator, _prefix_ids, pick
from ..models import RNNLM, evaluating
from ..models.config import FROM_SCRATCH
from .hidden import _runner, after_preamble

__all__ = ["Ablated", "Clamp", "ablation_ranking", "check_clamp", "generate_clamped", "read_clamped"]


@dataclass(frozen=True)
class Clamp:
    """Unit `unit` of layer `layer`'s ``h`` or ``c`` (`kind`), held at `value` after every step."""

    layer: int
    kind: str
    unit: int
    value: float = 0.0


@dataclass(frozen=True)
class Ablated:
    """A unit, and the bits per token a text costs more with it held at zero."""

    layer: int
    kind: str
    unit: int
    cost: float


def check_clamp(model: RNNLM, clamp: Clamp) -> None:
    """A ValueError naming what is wrong with a clamp for this model."""
    c = model.config
    if c.bidirectional:
        raise ValueError("a bidirectional model reads the text after a token too: holding a unit "
                         "while it reads forward is not defined for it")
    if not 0 <= clamp.layer < c.num_layers:
        raise ValueError(f"layer must be in [0, {c.num_layers}), got {clamp.layer}")
    kinds = ("h", "c") if c.cell == "lstm" else ("h",)
    if clamp.kind not in kinds:
        raise ValueError(f"kind must be one of {', '.join(kinds)} for a {c.cell.upper()}, got {clamp.kind!r}")
    if not 0 <= clamp.unit < c.num_hiddens:
        raise ValueError(f"unit must be in [0, {c.num_hiddens}) (layer {clamp.layer} {clamp.kind} has "
                         f"{c.num_hiddens} units), got {clamp.unit}")
    if not math.isfinite(clamp.value):
        raise ValueError(f"a unit's value must be a finite number, got {clamp.value}")


class _Stepper:
    """The model one step at a time for a batch of rows, each row with its own clamps."""

    def __init__(self, model: RNNLM, variants: Sequence[Sequence[Clamp]]) -> None:
        for clamps in variants:
            for clamp in clamps:
                check_clamp(model, clamp)
        self.model, self.rows = model, len(variants)
        n, L = model.config.num_hiddens, model.config.num_layers
        device = next(model.parameters()).device
        self.runners = [_runner(model, layer, 0) for layer in range(L)]
        # per layer and kind: which (row, unit) are held, and at what
        self.held = {}
        for layer in range(L):
            for kind in ("h", "c"):
                mask = torch.zeros(self.rows, n, dtype=torch.bool, device=device)
                values = torch.zeros(self.rows, n, device=device)
                for row, clamps in enumerate(variants):
                    for clamp in clamps:
                        if (clamp.layer, clamp.kind) == (layer, kind):
                            mask[row, clamp.unit], values[row, clamp.unit] = True, clamp.value
                if mask.any():
                    self.held[layer, kind] = mask, values
        self.states = [None] * L
        if model.config.impl in FROM_SCRATCH:
            W, b = model.W_hq, model.b_q
        else:
            W, b = model.output.weight.T, model.output.bias
        self.W, self.b = W, b

    def _hold(self, layer: int, kind: str, x: Tensor) -> Tensor:
        if (layer, kind) not in self.held:
            return x
        mask, values = self.held[layer, kind]
        return torch.where(mask, values.to(x.dtype), x)  # (B, n) broadcast over a leading (1,) axis

    def step(self, x: Tensor) -> Tensor:
        """The logits (B, V) after reading `x`, one step of the encoded inputs (1, B, in) (or ids (1, B))."""
        for layer, run in enumerate(self.runners):
            H, state = run(x, self.states[layer])
            if isinstance(state, tuple):  # the LSTM: (h, c)
                h, c = self._hold(layer, "h", state[0]), self._hold(layer, "c", state[1])
                state = (h, c)
            else:
                h = state = self._hold(layer, "h", state)
            self.states[layer] = state
            x = h.reshape(1, self.rows, -1)
        return torch.addmm(self.b, x[0], self.W).float()


def read_clamped(model: RNNLM, ids: Tensor, variants: Sequence[Sequence[Clamp]]) -> Tensor:
    """The bits of every position ``1..T-1`` of `ids` (1-D) from the ones before it, from the model's
    first state (after its preamble, if it has one: the clamps hold from the preamble on), for each
    set of clamps in `variants` (an empty set: the model as it is): ``(len(variants), T-1)``."""
    if len(ids) < 2:
        raise ValueError(f"a text of {len(ids)} token(s) has nothing to score: at least 2 are needed")
    device = next(model.parameters()).device
    rows = len(variants)
    ids, skip = after_preamble(model, ids)
    with evaluating(model):
        X = model._encode(ids.to(device)[None].expand(rows, -1))
        stepper = _Stepper(model, variants)
        bits = []
        for t in range(len(ids) - 1):
            logp = torch.log_softmax(stepper.step(X[t:t + 1]), dim=-1)
            if t >= skip:
                bits.append(-logp[:, int(ids[t + 1])] / math.log(2))
    return torch.stack(bits, dim=1)


def ablation_ranking(model: RNNLM, ids: Tensor, *, layers: Sequence[int] | None = None,
                     kinds: Sequence[str] = ("h", "c"), limit: int = 20, batch: int = 64) -> list[Ablated]:
    """The `limit` units of `layers` (all by default) and `kinds` whose removal costs `ids` most, each
    held at zero in turn (exact: the text is read again for every unit, `batch` units side by side),
    by the bits per token it costs. A 2 x 512 LSTM reads 300 characters again for all 512 units of
    one layer's h in about 15 s on two CPU cores."""
    kinds = [k for k in kinds if k == "h" or model.config.cell == "lstm"]
    layers = range(model.config.num_layers) if layers is None else layers
    for layer in layers:
        check_clamp(model, Clamp(layer, "h", 0))
    units = [Clamp(layer, kind, unit) for layer in layers for kind in kinds
             for unit in range(model.config.num_hiddens)]
    base = float(read_clamped(model, ids, [[]])[0].mean())
    costs = []
    for start in range(0, len(units), batch):
        part = units[start:start + batch]
        means = read_clamped(model, ids, [[u] for u in part]).mean(dim=1)
        costs += [Ablated(u.layer, u.kind, u.unit, float(m) - base) for u, m in zip(part, means)]
    return sorted(costs, key=lambda a: -a.cost)[:limit]


def generate_clamped(model: RNNLM, vocab: Vocab, prefix: str, config: GenerateConfig,
                     clamps: Sequence[Clamp], *, token: str = "char") -> tuple[str, str]:
    """`prefix` and ``config.num_preds`` tokens after it, written with the `clamps` held and without
    them: (held, free). Each text draws from a generator of its own seeded alike (``config.seed``, or
    one seed drawn for both), so the two differ only from where the held units change a choice."""
    ids = _prefix_ids(vocab, prefix, token, strict=False, stacklevel=2)
    device = next(model.parameters()).device
    seed = secrets.randbits(63) if config.seed is None else config.seed
    generators = [_new_generator(device, seed), _new_generator(device, seed)]
    sep = "" if token == "char" else " "
    texts = [[prefix], [prefix]]
    with evaluating(model):
        stepper = _Stepper(model, [list(clamps), []])
        begin, _ = after_preamble(model, torch.tensor(ids, dtype=torch.long))  # where charlm begins
        X = model._encode(begin.to(device)[None].expand(2, -1))
        for t in range(len(begin)):
            logits = stepper.step(X[t:t + 1])
        for _ in range(config.num_preds):
            chosen = [int(pick(logits[row:row + 1], config, generator=generators[row])) for row in range(2)]
            for row, chosen_id in enumerate(chosen):
                texts[row].append(vocab.idx_to_token[chosen_id])
            logits = stepper.step(model._encode(torch.tensor(chosen, device=device)[:, None]))
    return sep.join(texts[0]), sep.join(texts[1])
