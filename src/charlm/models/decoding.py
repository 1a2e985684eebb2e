"""Greedy decoding in C++: the book's ``predict_ch8`` loop (d2l §8.5.4) without Python per token.

Generating one token in Python costs about 60 us of interpreter and dispatch work around a few
microseconds of arithmetic. :func:`greedy` hands a whole run of argmax picks to the C++ loop in
``csrc/decoding.cpp``, which takes the fast scratch model's parameters as plain tensors (the gates
side by side, as :meth:`fused_weights` gives them) and does the same equations as the kernels that
train it::

    logits (N, V) --argmax--> ids (N,) --embedding / row of W_x--> every layer --W_hq, b_q--> logits
    ^________________________________________________________________________________________|

It is used for ``impl="scratch"`` models on the CPU when the kernels are built
(:mod:`charlm.models.native`); :func:`usable` says when, and :mod:`charlm.generation` falls back to
its Python loop otherwise. The tests hold both to the same tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import native
from .lm import RNNLM
from .scratch import StackedScratch, State

_EMPTY = torch.empty(0)
_NO_IDS = torch.empty(0, dtype=torch.long)


def usable(model: RNNLM) -> bool:
    """Whether :func:`greedy` can run this model: a unidirectional ``impl="scratch"`` model whose
    parameters are on the CPU in one dtype the kernels take, with the kernels built."""
    core = model.core
    if model.config.impl != "scratch" or not isinstance(core, StackedScratch) or core.layers_reverse:
        return False
    return native.usable(*model.parameters())


def _tensors(model: RNNLM) -> tuple[str, Tensor, list[Tensor]]:
    """The cell's kernel name, the embedding (empty for one-hot inputs) and four tensors per layer."""
    layers = []
    for cell in model.core.layers:
        W_x, b, W_h, extra = cell.fused_weights()
        layers += [W_x, b, W_h, _EMPTY.to(W_h) if extra is None else extra]
    embedding = _EMPTY.to(layers[0]) if model.embedding is None else model.embedding.weight
    return model.core.layers[0].kernel_name, embedding, layers


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
    name, embedding, layers = _tensors(model)
    H, C = state if isinstance(state, tuple) else (state, _EMPTY.to(state))
    prefix = _NO_IDS if prefix is None else prefix.T.contiguous()  # (N, T) -> (T, N): time outermost
    logits = _EMPTY.to(H) if logits is None else logits
    ids, logits, H, C = native.ops().decode_greedy(prefix, logits, H, C, name, embedding, layers, model.W_hq,
                                                   model.b_q, count, feed_last, step_logits)
    return ids, logits, (H, C) if isinstance(state, tuple) else H
