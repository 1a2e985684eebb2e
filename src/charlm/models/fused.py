"""Fast forms of the book's recurrences: same parameters, same equations, fewer and larger operations.

The book's loop (:mod:`charlm.models.scratch` with ``fast=False``) pays for every time step with
about ten small tensor operations forward and twenty backward, each recorded by autograd. Here:

- the input projections ``X_t W_x? + b_?`` of all time steps are one product before the loop (a row
  gather when the input is one-hot: row ``i`` of ``W_x?`` *is* ``one_hot(i) @ W_x?``);
- the gates that share an input are one product (``H [W_hz | W_hr]`` for the GRU);
- the loop writes into preallocated outputs, and the backward pass through time is written by hand
  (:class:`torch.autograd.Function`): two to six operations a step, and the weight gradients of all
  steps as one product after the loop, ``dW_hh = sum_t H_{t-1}^T dA_t``;
- on the CPU each ``forward`` / ``backward`` hands its whole time loop to charlm's C++ kernels
  (:mod:`charlm.models.native`, ``models/csrc/recurrences.cpp``), which do the same steps with one pass over
  the elements per step; the Python loops below are the fallback where they cannot be built, and
  the reference they are tested against;
- the LSTM has a kernel only in C++; elsewhere (GPU, no compiler) it runs on the fused kernel behind
  ``torch.nn.LSTM`` (cuDNN on GPU, oneDNN on CPU), fed with the book's ``W_xi, W_xf, W_xc, W_xo,
  ...`` packed into torch's layout in each forward, so the gradients still land on the book's
  parameters, or, for a few steps without autograd, in a short loop of its own.

Which of these paths a cell runs is decided in one place, :func:`choose_path`, at the end of this
module; docs/implementations.md lists every path a recurrence can take and the test that holds it
to the book's loop.

Every function here is checked against the book's loop, values and gradients, in the tests.
Names follow the book: ``Z`` update gate, ``R`` reset gate, ``H_tilde`` candidate state (§9.1).
In the derivations ``A`` is a pre-activation and ``d*`` a gradient of the loss.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from charlm.models import native

# `custom_fwd(cast_inputs=bfloat16)`: under CPU/GPU bf16 autocast the whole recurrence runs in
# bf16; outside autocast it does nothing.
_autocast_cpu = torch.amp.custom_fwd(device_type="cpu", cast_inputs=torch.bfloat16)
_autocast_cuda = torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.bfloat16)


def _previous(H0: Tensor, outputs: Tensor) -> Tensor:
    """``H_{t-1}`` for every step: ``(T, B, H)`` with ``H0`` first, then outputs but the last."""
    return torch.cat([H0.unsqueeze(0), outputs[:-1]])


def _transposed(W: Tensor) -> Tensor:
    # A contiguous copy: the per-step products run about 25 % faster than on a transposed view.
    return W.T.contiguous()


def _flat(x: Tensor) -> Tensor:
    return x.reshape(-1, x.shape[-1])  # (T, B, n) -> (T * B, n): one product over all steps


# Every recurrence takes its inputs as ``(source, ids, bias)``: either ``source = P`` (T, B, G*H), the
# products ``X_t W_x`` already made, with ``ids = None``; or ``source = W_x`` (vocabulary, G*H) and
# token ids ``(T, B)``, whose projections are rows of ``W_x``. The bias is added inside the loop, so
# the C++ kernels never write the projections out at all.
_NO_IDS = torch.empty(0, dtype=torch.long)
Inputs = tuple[Tensor, "Tensor | None", Tensor]  # (source, ids, bias)


def _projections(source: Tensor, ids: Tensor | None, bias: Tensor) -> Tensor:
    """``P_t = X_t W_x + b`` of every step, ``(T, B, G*H)``, for the Python loops."""
    return (source if ids is None else torch.nn.functional.embedding(ids, source)) + bias


def _native_inputs(source: Tensor, ids: Tensor | None, bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return source, _NO_IDS if ids is None else ids, bias


def _input_grads(ctx, dP: Tensor) -> tuple[Tensor | None, None, Tensor | None]:
    """The gradients of ``source`` and ``bias`` from ``dP``, the gradient of the projections: for
    token ids, row ``i`` of ``dW_x`` sums ``dP`` over the positions that hold token ``i``."""
    d_source = d_bias = None
    if dP.dtype in (torch.bfloat16, torch.float16):
        dP = dP.float()  # sums over many rows: accumulate in float32, autograd casts the result back
    if ctx.needs_input_grad[0]:
        if ctx.ids is None:
            d_source = dP
        else:
            d_source = dP.new_zeros(ctx.source_shape).index_add_(0, ctx.ids.reshape(-1), _flat(dP))
    if ctx.needs_input_grad[2]:
        d_bias = _flat(dP).sum(0)
    return d_source, None, d_bias


def _remember_inputs(ctx, source: Tensor, ids: Tensor | None) -> None:
    ctx.ids, ctx.source_shape = ids, source.shape


class RNNRecurrence(torch.autograd.Function):
    """``H_t = phi(P_t + H_{t-1} W_hh)`` for t = 1..T, where ``P_t = X_t W_xh + b_h`` (eq. 8.4.5).

    ``forward(source, ids, b_h (H), H0 (B, H), W_hh (H, H), relu, kernels) -> outputs (T, B, H)``,
    in the C++ kernels if ``kernels`` (:func:`choose_path`), else in the Python loop below.
    Backward: ``dA_t = (dH_t + dA_{t+1} W_hh^T) * phi'(A_t)``; with tanh, ``phi' = 1 - H_t^2``.
    """

    @staticmethod
    def forward(ctx, source: Tensor, ids: Tensor | None, bias: Tensor, H0: Tensor, W_hh: Tensor,
                relu: bool, kernels: bool) -> Tensor:
        ctx.relu, ctx.kernels = relu, kernels
        _remember_inputs(ctx, source, ids)
        if kernels:
            outputs = native.ops().rnn_forward(*_native_inputs(source, ids, bias), H0, W_hh, relu)
            ctx.save_for_backward(H0, W_hh, outputs)
            return outputs
        P = _projections(source, ids, bias)
        outputs = torch.empty_like(P)
        H = H0
        for t in range(P.shape[0]):
            H = torch.addmm(P[t], H, W_hh, out=outputs[t])
            H.relu_() if relu else H.tanh_()
        ctx.save_for_backward(H0, W_hh, outputs)
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx, d_outputs: Tensor):
        H0, W_hh, outputs = ctx.saved_tensors
        if ctx.kernels:
            dA, dH0, dW_hh = native.ops().rnn_backward(d_outputs, H0, W_hh, outputs, ctx.relu)
            return (*_input_grads(ctx, dA), dH0, dW_hh, None, None)
        slope = (outputs > 0).to(outputs.dtype) if ctx.relu else 1 - outputs * outputs  # phi'(A)
        dA = torch.empty_like(outputs)
        W_hh_T, d_outputs = _transposed(W_hh), d_outputs.contiguous()
        for t in reversed(range(outputs.shape[0])):
            # dH_t = the loss's gradient at step t plus what flows back from step t + 1
            dH = d_outputs[t] if t == outputs.shape[0] - 1 else torch.addmm(d_outputs[t], dA[t + 1], W_hh_T)
            torch.mul(dH, slope[t], out=dA[t])
        dH0 = dA[0] @ W_hh_T
        dW_hh = _flat(_previous(H0, outputs)).T @ _flat(dA)  # all steps in one product
        return (*_input_grads(ctx, dA), dH0, dW_hh, None, None)


def rnn(inputs: Inputs, H0: Tensor, W_hh: Tensor, relu: bool, kernels: bool) -> Tensor:
    """Run :class:`RNNRecurrence` (bf16 under autocast) on ``inputs = (source, ids, bias)``:
    ``outputs (T, B, H)``."""
    return _recurrence(RNNRecurrence, *inputs, H0, W_hh, relu, kernels)


class GRURecurrence(torch.autograd.Function):
    """The book's GRU (eq. 9.1.1-9.1.3), the reset gate applied before the hidden product::

        [Z_t | R_t] = sigmoid(P^zr_t + H_{t-1} [W_hz | W_hr])
        H_tilde_t   = tanh(P^h_t + (R_t * H_{t-1}) W_hh)
        H_t         = Z_t * H_{t-1} + (1 - Z_t) * H_tilde_t

    ``forward(source, ids, bias (3H), H0 (B, H), W_zr (H, 2H), W_hh (H, H), kernels)``
    ``-> outputs (T, B, H)``, the projections ``P (T, B, 3H) = [P^z | P^r | P^h]`` (see
    ``_projections``); in the C++ kernels if ``kernels``, else in the Python loop below.
    """

    @staticmethod
    def forward(ctx, source: Tensor, ids: Tensor | None, bias: Tensor, H0: Tensor, W_zr: Tensor,
                W_hh: Tensor, kernels: bool) -> Tensor:
        ctx.kernels = kernels
        _remember_inputs(ctx, source, ids)
        if kernels:
            outputs, ZR, H_tilde, RH = native.ops().gru_forward(*_native_inputs(source, ids, bias), H0,
                                                                 W_zr, W_hh)
            ctx.save_for_backward(H0, W_zr, W_hh, outputs, ZR, H_tilde, RH)
            return outputs
        P = _projections(source, ids, bias)
        num_hiddens = H0.shape[-1]
        outputs = torch.empty_like(P[..., :num_hiddens])
        ZR = torch.empty_like(P[..., : 2 * num_hiddens])  # sigmoid outputs, kept for backward
        H_tilde = torch.empty_like(outputs)
        RH = torch.empty_like(outputs)  # R * H_{t-1}, the candidate's input, kept for dW_hh
        H = H0
        for t in range(P.shape[0]):
            torch.addmm(P[t, :, : 2 * num_hiddens], H, W_zr, out=ZR[t]).sigmoid_()
            Z, R = ZR[t, :, :num_hiddens], ZR[t, :, num_hiddens:]
            torch.mul(R, H, out=RH[t])
            torch.addmm(P[t, :, 2 * num_hiddens :], RH[t], W_hh, out=H_tilde[t]).tanh_()
            # H = Z * H + (1 - Z) * H_tilde, written as H_tilde + Z * (H - H_tilde)
            H = torch.addcmul(H_tilde[t], Z, H - H_tilde[t], out=outputs[t])
        ctx.save_for_backward(H0, W_zr, W_hh, outputs, ZR, H_tilde, RH)
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx, d_outputs: Tensor):
        H0, W_zr, W_hh, outputs, ZR, H_tilde, RH = ctx.saved_tensors
        if ctx.kernels:
            dA, dH0, dW_zr, dW_hh = native.ops().gru_backward(d_outputs, *ctx.saved_tensors)
            return (*_input_grads(ctx, dA), dH0, dW_zr, dW_hh, None)
        n = H0.shape[-1]
        H_prev = _previous(H0, outputs)
        Z, R = ZR[..., :n], ZR[..., n:]
        # Factors that do not depend on the incoming gradient, for all steps at once:
        to_candidate = (1 - Z) * (1 - H_tilde * H_tilde)  # dA^h = dH * (1 - Z) * tanh'
        to_update = (H_prev - H_tilde) * Z * (1 - Z)  # dA^z = dH * (H_{t-1} - H_tilde) * sigmoid'
        to_reset = H_prev * R * (1 - R)  # dA^r = d(RH) * H_{t-1} * sigmoid'
        dA = ZR.new_empty(*ZR.shape[:-1], 3 * n)  # [dA^z | dA^r | dA^h]
        W_zr_T, W_hh_T, d_outputs = _transposed(W_zr), _transposed(W_hh), d_outputs.contiguous()
        dH = d_outputs[-1]
        for t in reversed(range(outputs.shape[0])):
            torch.mul(dH, to_candidate[t], out=dA[t, :, 2 * n :])
            dRH = dA[t, :, 2 * n :] @ W_hh_T
            torch.mul(dH, to_update[t], out=dA[t, :, :n])
            torch.mul(dRH, to_reset[t], out=dA[t, :, n : 2 * n])
            # dH_{t-1}: through Z * H_{t-1}, through R * H_{t-1}, and through both gates' products
            dH_prev = torch.addcmul(dH * Z[t], dRH, R[t])
            dH_prev = torch.addmm(dH_prev, dA[t, :, : 2 * n], W_zr_T)
            dH = dH_prev + d_outputs[t - 1] if t > 0 else dH_prev
        dW_zr = _flat(H_prev).T @ _flat(dA[..., : 2 * n])
        dW_hh = _flat(RH).T @ _flat(dA[..., 2 * n :])
        return (*_input_grads(ctx, dA), dH, dW_zr, dW_hh, None)


class GRUResetAfterRecurrence(torch.autograd.Function):
    """torch's GRU form, the reset gate applied after the hidden product (see ``GRUScratch``)::

        [A^z | A^r | A^h] = H_{t-1} [W_hz | W_hr | W_hh] + [0 | 0 | b_hh]
        [Z_t | R_t] = sigmoid(P^zr_t + [A^z | A^r])
        H_tilde_t   = tanh(P^h_t + R_t * A^h)
        H_t         = Z_t * H_{t-1} + (1 - Z_t) * H_tilde_t

    One hidden product per step for all three gates. ``forward(source, ids, bias (3H), H0 (B, H),
    W_h (H, 3H), b_hh (H), kernels) -> outputs (T, B, H)``, in the C++ kernels if ``kernels``.
    """

    @staticmethod
    def forward(ctx, source: Tensor, ids: Tensor | None, bias: Tensor, H0: Tensor, W_h: Tensor,
                b_hh: Tensor, kernels: bool) -> Tensor:
        ctx.kernels = kernels
        _remember_inputs(ctx, source, ids)
        if kernels:
            outputs, ZR, H_tilde, Ah = native.ops().gru_reset_after_forward(
                *_native_inputs(source, ids, bias), H0, W_h, b_hh)
            ctx.save_for_backward(H0, W_h, outputs, ZR, H_tilde, Ah)
            return outputs
        P = _projections(source, ids, bias)
        n = H0.shape[-1]
        outputs = torch.empty_like(P[..., :n])
        ZR = torch.empty_like(P[..., : 2 * n])
        H_tilde = torch.empty_like(outputs)
        Ah = torch.empty_like(outputs)  # H_{t-1} W_hh + b_hh, which R scales
        bias = torch.cat([torch.zeros_like(b_hh), torch.zeros_like(b_hh), b_hh])
        H = H0
        for t in range(P.shape[0]):
            A = torch.addmm(bias, H, W_h)  # (B, 3H)
            torch.add(P[t, :, : 2 * n], A[:, : 2 * n], out=ZR[t]).sigmoid_()
            Ah[t] = A[:, 2 * n :]
            torch.addcmul(P[t, :, 2 * n :], ZR[t, :, n:], Ah[t], out=H_tilde[t]).tanh_()
            H = torch.addcmul(H_tilde[t], ZR[t, :, :n], H - H_tilde[t], out=outputs[t])
        ctx.save_for_backward(H0, W_h, outputs, ZR, H_tilde, Ah)
        return outputs

    @staticmethod
    @once_differentiable
    def backward(ctx, d_outputs: Tensor):
        H0, W_h, outputs, ZR, H_tilde, Ah = ctx.saved_tensors
        if ctx.kernels:
            dP, dH0, dW_h, db_hh = native.ops().gru_reset_after_backward(d_outputs, *ctx.saved_tensors)
            return (*_input_grads(ctx, dP), dH0, dW_h, db_hh, None)
        n = H0.shape[-1]
        H_prev = _previous(H0, outputs)
        Z, R = ZR[..., :n], ZR[..., n:]
        to_candidate = (1 - Z) * (1 - H_tilde * H_tilde)  # dP^h = dH * (1 - Z) * tanh'
        to_update = (H_prev - H_tilde) * Z * (1 - Z)
        to_reset = Ah * R * (1 - R)  # dA^r = dP^h * A^h * sigmoid'
        dP = ZR.new_empty(*ZR.shape[:-1], 3 * n)  # [dP^z | dP^r | dP^h]
        dA = torch.empty_like(dP)  # gradients of the hidden product [A^z | A^r | A^h]
        W_h_T, d_outputs = _transposed(W_h), d_outputs.contiguous()
        dH = d_outputs[-1]
        for t in reversed(range(outputs.shape[0])):
            torch.mul(dH, to_candidate[t], out=dP[t, :, 2 * n :])
            torch.mul(dH, to_update[t], out=dP[t, :, :n])
            torch.mul(dP[t, :, 2 * n :], to_reset[t], out=dP[t, :, n : 2 * n])
            dA[t, :, : 2 * n] = dP[t, :, : 2 * n]
            torch.mul(dP[t, :, 2 * n :], R[t], out=dA[t, :, 2 * n :])
            dH_prev = torch.addmm(dH * Z[t], dA[t], W_h_T)
            dH = dH_prev + d_outputs[t - 1] if t > 0 else dH_prev
        dW_h = _flat(H_prev).T @ _flat(dA)
        db_hh = _flat(dA[..., 2 * n :]).sum(0)
        return (*_input_grads(ctx, dP), dH, dW_h, db_hh, None)


def gru(inputs: Inputs, H0: Tensor, W_zr: Tensor, W_hh: Tensor, kernels: bool) -> Tensor:
    """The book's GRU recurrence (bf16 under autocast): ``outputs (T, B, H)``."""
    return _recurrence(GRURecurrence, *inputs, H0, W_zr, W_hh, kernels)


def gru_reset_after(inputs: Inputs, H0: Tensor, W_h: Tensor, b_hh: Tensor, kernels: bool) -> Tensor:
    """torch's GRU recurrence (bf16 under autocast): ``outputs (T, B, H)``."""
    return _recurrence(GRUResetAfterRecurrence, *inputs, H0, W_h, b_hh, kernels)


class _Inference:
    """Stands in for autograd's context when nothing will be differentiated (generation): calling
    ``forward`` directly saves the cost of ``apply``, a good part of a one-token step."""

    def save_for_backward(self, *tensors: Tensor) -> None:
        pass


def _recurrence(function: type[torch.autograd.Function], *args):
    device = args[0].device.type
    if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
        wrapped = _autocast_cpu if device == "cpu" else _autocast_cuda
        return wrapped(function.apply)(*args)
    if not torch.is_grad_enabled():
        return function.forward(_Inference(), *args)
    return function.apply(*args)


class LSTMRecurrence(torch.autograd.Function):
    """The LSTM (eq. 9.2.1-9.2.4) in the C++ kernels, gates in torch's order (i, f, c, o)::

        [I | F | C_tilde | O] = [sigmoid | sigmoid | tanh | sigmoid](P_t + H_{t-1} W_h)
        C_t = F * C_{t-1} + I * C_tilde,  H_t = O * tanh(C_t)

    ``forward(source, ids, bias (4H), H0 (B, H), C0 (B, H), W_h (H, 4H))``
    ``-> outputs (T, B, H), C_T (B, H)``. Only on the :data:`KERNELS` path (:func:`choose_path`);
    elsewhere :func:`lstm` runs torch's fused kernel, or :func:`lstm_steps` a few steps.
    """

    @staticmethod
    def forward(ctx, source: Tensor, ids: Tensor | None, bias: Tensor, H0: Tensor, C0: Tensor,
                W_h: Tensor) -> tuple[Tensor, Tensor]:
        _remember_inputs(ctx, source, ids)
        outputs, cells, gates = native.ops().lstm_forward(*_native_inputs(source, ids, bias), H0, C0, W_h)
        ctx.save_for_backward(H0, C0, W_h, outputs, cells, gates)
        return outputs, cells[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_outputs: Tensor, d_cell: Tensor):
        H0, C0, W_h, outputs, cells, gates = ctx.saved_tensors
        if d_cell is None:
            d_cell = torch.zeros_like(C0)
        dP, dH0, dC0, dW_h = native.ops().lstm_backward(d_outputs, d_cell, H0, C0, W_h, outputs, cells,
                                                        gates)
        return (*_input_grads(ctx, dP), dH0, dC0, dW_h)


def lstm_recurrence(inputs: Inputs, state: tuple[Tensor, Tensor], W_h: Tensor
                    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Run :class:`LSTMRecurrence` (bf16 under autocast): ``outputs (T, B, H), (H_T, C_T)``."""
    outputs, C = _recurrence(LSTMRecurrence, *inputs, *state, W_h)
    return outputs, (outputs[-1], C)


def lstm_steps(P: Tensor, state: tuple[Tensor, Tensor], W_h: Tensor
               ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """The LSTM step by step without autograd, all four gates in one product (eq. 9.2.1-9.2.4):
    ``P (T, B, 4H)`` the input projections in torch's gate order (i, f, c, o), ``W_h (H, 4H)``."""
    H, C = state
    outputs = []
    for t in range(P.shape[0]):
        I, F, C_tilde, O = torch.addmm(P[t], H, W_h).chunk(4, dim=-1)
        C = torch.sigmoid(F) * C + torch.sigmoid(I) * torch.tanh(C_tilde)
        H = torch.sigmoid(O) * torch.tanh(C)
        outputs.append(H)
    return torch.stack(outputs), (H, C)


def lstm(X: Tensor, state: tuple[Tensor, Tensor], W_x: Tensor, W_h: Tensor, b: Tensor
         ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """One LSTM layer on torch's fused kernel (oneDNN on CPU, cuDNN on GPU).

    ``X (T, B, num_inputs)``, ``state = (H, C)`` each ``(B, H)``; ``W_x (num_inputs, 4H)``,
    ``W_h (H, 4H)`` and ``b (4H)`` hold the gates in torch's order (i, f, c, o).
    Returns ``outputs (T, B, H), (H, C)``.
    """
    H, C = state
    weights = [W_x.T, W_h.T, b, torch.zeros_like(b)]  # torch keeps (4H, in) and a second bias
    outputs, H_T, C_T = torch.lstm(X, (H.unsqueeze(0), C.unsqueeze(0)), weights, True, 1, 0.0,
                                   torch.is_grad_enabled(), False, False)
    return outputs, (H_T[0], C_T[0])


# ---- which path runs -------------------------------------------------------------------------------

KERNELS = "kernels"  # charlm's C++ kernels (native.py), forward and backward: any cell, on the CPU
PYTHON_LOOPS = "python-loops"  # the RNN and GRU recurrences above with their loops in Python
LSTM_STEPS = "lstm-steps"  # the LSTM, a few steps without autograd: lstm_steps
TORCH_LSTM = "torch-lstm"  # the LSTM elsewhere: torch's fused kernel (oneDNN, cuDNN), lstm
# Up to this many steps without autograd (generation feeds one), the LSTM loops here: torch's
# fused kernel costs more to set up than the steps themselves.
FEW_STEPS = 4


def choose_path(cell: str, source: Tensor, *tensors: Tensor, steps: int) -> str:
    """Which fast path a scratch cell (``impl="scratch"``) runs ``steps`` time steps on, given the
    tensors its recurrence takes: ``source`` (``W_x`` for token ids, else the inputs), then the bias,
    the state and the hidden weights. The one place the choice is made::

        the C++ kernels are built and take these tensors (CPU, one of their dtypes)  -> KERNELS
        else an RNN or a GRU                                                          -> PYTHON_LOOPS
        else an LSTM without autograd, at most FEW_STEPS steps (generation)           -> LSTM_STEPS
        else an LSTM (GPU, no compiler, a dtype the kernels lack)                     -> TORCH_LSTM

    The book's loop (``impl="book"``, ``fast=False``) is not a choice made here but the model's
    config; docs/implementations.md lists every path with the test that holds it to that loop.
    """
    if native.usable(*_as_the_recurrence_sees(source, *tensors)):
        return KERNELS
    if cell != "lstm":
        return PYTHON_LOOPS
    if not torch.is_grad_enabled() and steps <= FEW_STEPS:
        return LSTM_STEPS
    return TORCH_LSTM


def _as_the_recurrence_sees(*tensors: Tensor) -> list[Tensor]:
    """The tensors in the dtype the recurrence will get them in. Under CPU autocast `_recurrence`
    hands it bf16 copies of every floating CPU tensor but float64 (torch's custom_fwd), and the
    kernels must be asked about those; an empty tensor of that dtype stands in for each copy."""
    if tensors[0].device.type != "cpu" or not torch.is_autocast_enabled("cpu"):
        return list(tensors)
    return [t.new_empty(0, dtype=torch.bfloat16)
            if t.device.type == "cpu" and t.is_floating_point() and t.dtype != torch.float64 else t
            for t in tensors]
