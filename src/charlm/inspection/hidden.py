"""A model's hidden states at every step, layer by layer: what
:mod:`charlm.inspection.reading` traces and scores.

``RNNLM.forward`` gives only the last layer's outputs, and the LSTM's memory cell ``C`` only at the
end. Here each layer runs on its own over the whole text, with its own parameters, so every layer's
``H`` at every step comes out, and ``C`` follows from it::

    X --layer 0--> H_0 --layer 1--> H_1 ... --> H_{L-1}      (each (T, B, D * n))
    X_l, H_l --every gate at once, then C_t = F_t * C_{t-1} + I_t * C_tilde_t--> C_l

On a CPU a step of one layer reads that layer's whole ``W_hh`` from memory, and one core reads
about as fast as two (43 GB/s for one 512 x 2048 matrix on a 2-core AMD EPYC, against 41 with
both), so the layers run as a pipeline, one thread each: layer ``l`` reads chunk ``k`` while layer
``l + 1`` reads chunk ``k - 1``. Ten thousand characters through a 2 x 512 LSTM take 1.14 s so
against 1.76 s through the model's own forward (the same numbers, bit for bit).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from ..models import RNNLM

__all__ = ["after_preamble", "cells", "layer_outputs"]

CHUNK = 512  # steps a layer hands on at a time: long enough to amortise a call, short to fill the pipe


def after_preamble(model: RNNLM, ids: Tensor) -> tuple[Tensor, int]:
    """`ids` (1-D) after the model's preamble, and its length: the layer-by-layer pass begins from
    zeros, so it reads the preamble as text first and its positions are left out, and every layer
    begins the text in the state :meth:`RNNLM.begin_state` gives."""
    if model.preamble is None or not len(model.preamble):
        return ids, 0
    return torch.cat([model.preamble.to(ids.device, ids.dtype), ids]), len(model.preamble)


def _builtin_layer(core: nn.RNNBase, layer: int, direction: int) -> nn.RNNBase:
    """A one-layer, one-direction module of the same kind sharing layer `layer`'s parameters."""
    suffix = f"_l{layer}" + ("_reverse" if direction else "")
    options = {"nonlinearity": core.nonlinearity} if isinstance(core, nn.RNN) else {}
    single = type(core)(getattr(core, f"weight_ih{suffix}").shape[1], core.hidden_size, **options)
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        setattr(single, f"{name}_l0", getattr(core, f"{name}{suffix}"))  # RNNBase tracks its flat weights
    return single.to(getattr(core, f"weight_ih{suffix}"))


def _runner(model: RNNLM, layer: int, direction: int) -> Callable[[Tensor, object], tuple[Tensor, object]]:
    """``(X (T, B, in), state or None) -> (H (T, B, n), state)`` for one layer and direction."""
    core = model.core
    if isinstance(core, nn.RNNBase):
        single = _builtin_layer(core, layer, direction)
        return lambda X, state: single(X, state)
    cell = (core.layers if direction == 0 else core.layers_reverse)[layer]
    return lambda X, state: cell(X, cell.begin_state(X.shape[1]) if state is None else state)


def _whole(model: RNNLM, X: Tensor, layer: int) -> Tensor:
    """One layer, both directions if it has two, over the whole text from a zero state."""
    outputs = []
    for direction in range(model.config.num_directions):
        run = _runner(model, layer, direction)
        if direction == 0:
            outputs.append(run(X, None)[0])
        else:  # read back to front, then flip so outputs line up with time steps
            outputs.append(run(X.flip(0), None)[0].flip(0))
    return torch.cat(outputs, dim=-1)


def layer_outputs(model: RNNLM, X: Tensor) -> list[Tensor]:
    """Every layer's hidden states ``(T, B, D * n)`` for the encoded inputs ``X`` (what
    ``model._encode`` gives), from a zero state; call it inside :func:`charlm.models.evaluating`."""
    L, threads = model.config.num_layers, torch.get_num_threads()
    if L == 1 or threads == 1 or model.config.bidirectional:  # nothing to overlap (or the whole text first)
        outputs = []
        for layer in range(L):
            outputs.append(_whole(model, X if layer == 0 else outputs[-1], layer))
        return outputs
    return _pipelined(model, X, max(1, threads // L))


def _pipelined(model: RNNLM, X: Tensor, threads_each: int) -> list[Tensor]:
    L = model.config.num_layers
    pipes = [queue.Queue() for _ in range(L + 1)]
    outputs: list[list[Tensor]] = [[] for _ in range(L)]
    failures: list[BaseException] = []

    def work(layer: int) -> None:
        run, state = _runner(model, layer, 0), None
        try:
            with torch.inference_mode():  # autograd's mode is per thread
                while (chunk := pipes[layer].get()) is not None:
                    H, state = run(chunk, state)
                    outputs[layer].append(H)
                    pipes[layer + 1].put(H)
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread below
            failures.append(err)
            while pipes[layer].get() is not None:  # take the rest, so the layer before never waits on us
                pass
        finally:
            pipes[layer + 1].put(None)

    before = torch.get_num_threads()
    torch.set_num_threads(threads_each)  # each layer on its own core(s); restored below
    workers = [threading.Thread(target=work, args=(layer,), daemon=True) for layer in range(L)]
    try:
        for worker in workers:
            worker.start()
        for start in range(0, X.shape[0], CHUNK):
            pipes[0].put(X[start:start + CHUNK])
        pipes[0].put(None)
        for worker in workers:
            worker.join()
    finally:
        torch.set_num_threads(before)
    if failures:
        raise failures[0]
    return [torch.cat(chunks) for chunks in outputs]


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


def cells(model: RNNLM, X: Tensor, H: Tensor, layer: int) -> Tensor:
    """The LSTM layer's memory ``C (T, B, D * n)`` from its inputs ``X`` and its outputs ``H``
    (both directions side by side, as :func:`layer_outputs` gives them)."""
    n = model.config.num_hiddens
    parts = []
    for direction in range(model.config.num_directions):
        weights = _lstm_weights(model, layer, direction)
        H_d = H[..., direction * n:(direction + 1) * n]
        if direction == 0:
            parts.append(_cells(X, H_d, *weights))
        else:  # the backward direction in its own time order
            parts.append(_cells(X.flip(0), H_d.flip(0), *weights).flip(0))
    return torch.cat(parts, dim=-1)


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
    return linear_scan(F, fresh)


def linear_scan(F: Tensor, U: Tensor, block: int = 64) -> Tensor:
    """``C_t = F_t * C_{t-1} + U_t`` from ``C_{-1} = 0`` for ``F, U (T, ...)``, in about ``block + T / block``
    tensor operations rather than ``T``: within each block of steps, the products of the gates and the
    partial sums from a zero start are formed for all blocks at once; then each block's start is
    carried from the end of the one before. Only products of gates in (0, 1) are formed, so nothing
    overflows, and a product that underflows to 0 is the right limit.

    >>> linear_scan(torch.tensor([0.5, 0.5, 0.5]), torch.tensor([1.0, 1.0, 1.0]))
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
