"""Greedy decoding in C++: the book's ``predict_ch8`` loop (d2l §8.5.4) without Python per token.

Generating one token in Python costs about 60 us of interpreter and dispatch work around a few
microseconds of arithmetic. :func:`greedy` hands a whole run of argmax picks to the C++ loop in
``models/csrc/decoding.cpp``, which takes the fast scratch model's parameters as plain tensors (the gates
side by side, as :meth:`fused_weights` gives them) and does the same equations as the kernels that
train it::

    logits (N, V) --argmax--> ids (N,) --embedding / row of W_x--> every layer --W_hq, b_q--> logits
    ^________________________________________________________________________________________|

It is used for ``impl="scratch"`` and ``"builtin"`` models on the CPU when the kernels are built
(:mod:`charlm.models.native`; torch.nn's weights are laid out as the scratch cells' once, and
kept); :func:`usable` says when, and :mod:`charlm.generation` falls back to its Python loop
otherwise. The tests hold both to the same tokens.
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor, nn

from . import native
from .lm import RNNLM
from .scratch import StackedScratch, State

_EMPTY = torch.empty(0)
_NO_IDS = torch.empty(0, dtype=torch.long)


def usable(model: RNNLM) -> bool:
    """Whether :func:`greedy` can run this model: a unidirectional ``impl="scratch"`` or
    ``"builtin"`` model whose parameters are on the CPU in one dtype the kernels take, with the
    kernels built."""
    core, c = model.core, model.config
    if c.bidirectional:
        return False
    if c.impl == "scratch":
        if not isinstance(core, StackedScratch) or core.layers_reverse:
            return False
    elif c.impl != "builtin" or not isinstance(core, nn.RNNBase) or getattr(core, "proj_size", 0):
        return False
    return native.usable(*model.parameters())


def _tensors(model: RNNLM) -> tuple[str, Tensor, list[Tensor], Tensor, Tensor]:
    """The cell's kernel name, the embedding (empty for one-hot inputs), four tensors per layer, and
    the output layer's ``W_hq (H, V)`` and ``b_q (V,)``."""
    if model.config.impl == "builtin":
        return _builtin_tensors(model)
    layers = []
    for cell in model.core.layers:
        W_x, b, W_h, extra = cell.fused_weights()
        layers += [W_x, b, W_h, _EMPTY.to(W_h) if extra is None else extra]
    return model.core.layers[0].kernel_name, _embedding(model, layers[0]), layers, model.W_hq, model.b_q


def _embedding(model: RNNLM, like: Tensor) -> Tensor:
    return _EMPTY.to(like) if model.embedding is None else model.embedding.weight


# torch.nn's layers in the kernels' layout, kept while the parameters are unchanged: laying them
# out copies every weight (12 MB for a 2 x 512 LSTM), which a sampled step, one kernel call per
# token, cannot pay each time.
_BUILTIN_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _builtin_tensors(model: RNNLM) -> tuple[str, Tensor, list[Tensor], Tensor, Tensor]:
    """A ``torch.nn.RNN/GRU/LSTM`` model's weights as the scratch cells' :meth:`fused_weights` give
    theirs: ``W_x = weight_ih.T``, ``b = bias_ih + bias_hh``, ``W_h = weight_hh.T``, gates in the
    kernels' order. The GRU is torch's reset-after form: its gates (r, z, n) become (z, r, n), and
    the candidate's ``bias_hh`` stays apart, inside the reset product."""
    params = list(model.parameters())
    key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in params)
    cached = _BUILTIN_CACHE.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    c, core = model.config, model.core
    n = c.num_hiddens
    name = {"lstm": "lstm", "gru": "gru_reset_after"}.get(c.cell, f"rnn_{c.activation}")
    layers = []
    with torch.no_grad():
        for k in range(c.num_layers):
            W_ih, W_hh = getattr(core, f"weight_ih_l{k}"), getattr(core, f"weight_hh_l{k}")
            b_ih, b_hh = getattr(core, f"bias_ih_l{k}"), getattr(core, f"bias_hh_l{k}")
            extra = _EMPTY.to(W_hh)
            if c.cell == "gru":
                def zrn(t: Tensor) -> Tensor:  # torch's (r, z, n) blocks of n rows -> (z, r, n)
                    return torch.cat([t[n:2 * n], t[:n], t[2 * n:]])
                W_ih, W_hh, extra = zrn(W_ih), zrn(W_hh), b_hh[2 * n:].clone()
                b = zrn(b_ih) + torch.cat([zrn(b_hh)[:2 * n], torch.zeros_like(b_hh[:n])])
            else:
                b = b_ih + b_hh
            layers += [W_ih.T.contiguous(), b, W_hh.T.contiguous(), extra]
        tensors = (name, _embedding(model, layers[0]), layers, model.output.weight.T.contiguous(),
                   model.output.bias)
    _BUILTIN_CACHE[model] = (key, tensors)
    return tensors


def greedy(model: RNNLM, state: State, count: int, *, feed_last: bool, logits: Tensor | None = None,
           prefix: Tensor | None = None) -> tuple[Tensor, Tensor, State]:
    """Pick ``count`` tokens by argmax for each of ``N`` streams, each fed back as the next input.

    Start either from ``logits (N, V)``, those of the last step run, with ``state`` the state after
    it (as the model's ``forward`` returns them), or from ``prefix (N, T)``, token ids to warm the
    state up on first (d2l §8.5.4), with ``state`` the state before it. Returns the ids
    ``(count, N)`` and the logits and state after feeding them all; with ``feed_last=False`` the
    last pick is not fed (the caller stops there), and the logits and state are those after
    ``count - 1`` picks. Call :func:`usable` first.
    """
    return _decode(model, state, count, feed_last, logits, prefix, _EMPTY)


def greedy_scored(model: RNNLM, state: State, count: int, *, feed_last: bool, logits: Tensor
                  ) -> tuple[Tensor, Tensor, Tensor, State]:
    """:func:`greedy` from ``logits``, which also gives the logits ``(count, N, V)`` each pick was made
    from: ``(ids, step_logits, logits, state)``."""
    step_logits = logits.new_empty((count, *logits.shape))
    ids, logits, state = _decode(model, state, count, feed_last, logits, None, step_logits)
    return ids, step_logits, logits, state


def _decode(model: RNNLM, state: State, count: int, feed_last: bool, logits: Tensor | None,
            prefix: Tensor | None, step_logits: Tensor) -> tuple[Tensor, Tensor, State]:
    if (logits is None) == (prefix is None):
        raise ValueError("greedy needs exactly one of logits (N, V) and prefix (N, T) to start from")
    name, embedding, layers, W_hq, b_q = _tensors(model)
    H, C = state if isinstance(state, tuple) else (state, _EMPTY.to(state))
    prefix = _NO_IDS if prefix is None else prefix.T.contiguous()  # (N, T) -> (T, N): time outermost
    logits = _EMPTY.to(H) if logits is None else logits
    ids, logits, H, C = native.ops().decode_greedy(prefix, logits, H, C, name, embedding, layers, W_hq, b_q,
                                                   count, feed_last, step_logits)
    return ids, logits, (H, C) if isinstance(state, tuple) else H
