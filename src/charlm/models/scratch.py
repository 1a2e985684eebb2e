"""Recurrent layers written from scratch: the book's equations, one time step at a time.

Every layer is time-major: ``inputs`` is ``(T, B, num_inputs)`` so that ``for X in inputs`` walks
over time, as in d2l §8.5. Weights are shaped ``(num_inputs, num_hiddens)`` and
``(num_hiddens, num_hiddens)`` so each line reads like the book: ``X @ W_xh + H @ W_hh + b_h``.

The single-direction, single-layer cells (:class:`RNNScratch`, :class:`GRUScratch`,
:class:`LSTMScratch`) carry a state of shape ``(B, num_hiddens)`` (a pair ``(H, C)`` for the LSTM).
:class:`StackedScratch` stacks them into layers and directions and uses the state layout of
``torch.nn.RNN``: ``(num_layers * num_directions, B, num_hiddens)``, so states move freely between
this module and the built-in layers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

# A hidden state: one tensor for the RNN and the GRU, the pair (H, C) for the LSTM.
State = Tensor | tuple[Tensor, Tensor]

CELLS = ("rnn", "gru", "lstm")
ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


def _weights(*shape: int) -> nn.Parameter:
    # Small Gaussian weights, N(0, 0.01^2), as in the book's get_params (§8.5.2).
    return nn.Parameter(torch.randn(*shape) * 0.01)


def _zeros(num_hiddens: int) -> nn.Parameter:
    return nn.Parameter(torch.zeros(num_hiddens))


def _three(num_inputs: int, num_hiddens: int) -> tuple[nn.Parameter, nn.Parameter, nn.Parameter]:
    """One gate's parameters: ``W_x? (num_inputs, num_hiddens), W_h? (num_hiddens, num_hiddens), b_?``."""
    return _weights(num_inputs, num_hiddens), _weights(num_hiddens, num_hiddens), _zeros(num_hiddens)


class RNNScratch(nn.Module):
    """A vanilla RNN layer (d2l §8.4, eq. 8.4.5): ``H_t = phi(X_t W_xh + H_{t-1} W_hh + b_h)``.

    ``forward(inputs (T, B, num_inputs), H (B, num_hiddens) | None)``
    ``-> (outputs (T, B, num_hiddens), H (B, num_hiddens))``.
    """

    def __init__(self, num_inputs: int, num_hiddens: int, activation: str = "tanh") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of tanh, relu, got {activation!r}")
        self.num_hiddens = num_hiddens
        self.activation = activation
        self.W_xh, self.W_hh, self.b_h = _three(num_inputs, num_hiddens)

    def begin_state(self, batch_size: int) -> Tensor:
        return self.W_hh.new_zeros(batch_size, self.num_hiddens)

    def forward(self, inputs: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        phi = ACTIVATIONS[self.activation]
        H = self.begin_state(inputs.shape[1]) if state is None else state
        outputs = []
        for X in inputs:  # time is the outer axis: X is (B, num_inputs)
            H = phi(X @ self.W_xh + H @ self.W_hh + self.b_h)
            outputs.append(H)
        return torch.stack(outputs), H


class GRUScratch(nn.Module):
    """A gated recurrent unit layer (d2l §9.1, Cho et al. 2014).

    ``reset_after=False`` is the book's form (eq. 9.1.2): the reset gate scales the old state
    *before* the hidden product, ``H_tilde = tanh(X W_xh + (R * H) W_hh + b_h)``.
    ``reset_after=True`` is the form of ``torch.nn.GRU`` and cuDNN: the gate scales the product
    *after* it, ``H_tilde = tanh(X W_xh + b_h + R * (H W_hh + b_hh))``. The two are different
    functions (they agree only when every unit of ``R`` is equal), and the torch form needs the
    extra bias ``b_hh``, which sits inside the gated product; it exists only when
    ``reset_after=True``. The torch form lets cuDNN do all hidden products in one matrix
    multiply, which is why the libraries chose it.

    Shapes as :class:`RNNScratch`.
    """

    def __init__(self, num_inputs: int, num_hiddens: int, reset_after: bool = False) -> None:
        super().__init__()
        self.num_hiddens = num_hiddens
        self.reset_after = reset_after
        self.W_xz, self.W_hz, self.b_z = _three(num_inputs, num_hiddens)  # update gate
        self.W_xr, self.W_hr, self.b_r = _three(num_inputs, num_hiddens)  # reset gate
        self.W_xh, self.W_hh, self.b_h = _three(num_inputs, num_hiddens)  # candidate state
        if reset_after:
            self.b_hh = _zeros(num_hiddens)

    def begin_state(self, batch_size: int) -> Tensor:
        return self.W_hh.new_zeros(batch_size, self.num_hiddens)

    def _candidate(self, X: Tensor, H: Tensor, R: Tensor) -> Tensor:
        if self.reset_after:
            return torch.tanh(X @ self.W_xh + self.b_h + R * (H @ self.W_hh + self.b_hh))
        return torch.tanh(X @ self.W_xh + (R * H) @ self.W_hh + self.b_h)  # eq. 9.1.2

    def forward(self, inputs: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        H = self.begin_state(inputs.shape[1]) if state is None else state
        outputs = []
        for X in inputs:  # X is (B, num_inputs)
            Z = torch.sigmoid(X @ self.W_xz + H @ self.W_hz + self.b_z)  # eq. 9.1.1
            R = torch.sigmoid(X @ self.W_xr + H @ self.W_hr + self.b_r)
            H_tilde = self._candidate(X, H, R)
            H = Z * H + (1 - Z) * H_tilde  # eq. 9.1.3: Z near 1 keeps the old state
            outputs.append(H)
        return torch.stack(outputs), H


class LSTMScratch(nn.Module):
    """A long short-term memory layer (d2l §9.2, Hochreiter & Schmidhuber 1997).

    ``forward(inputs (T, B, num_inputs), (H, C) | None) -> (outputs (T, B, num_hiddens), (H, C))``
    with ``H`` and ``C`` both ``(B, num_hiddens)``.
    """

    def __init__(self, num_inputs: int, num_hiddens: int) -> None:
        super().__init__()
        self.num_hiddens = num_hiddens
        self.W_xi, self.W_hi, self.b_i = _three(num_inputs, num_hiddens)  # input gate
        self.W_xf, self.W_hf, self.b_f = _three(num_inputs, num_hiddens)  # forget gate
        self.W_xo, self.W_ho, self.b_o = _three(num_inputs, num_hiddens)  # output gate
        self.W_xc, self.W_hc, self.b_c = _three(num_inputs, num_hiddens)  # candidate memory

    def begin_state(self, batch_size: int) -> tuple[Tensor, Tensor]:
        zeros = self.W_hc.new_zeros(batch_size, self.num_hiddens)
        return zeros, zeros.clone()

    def forward(
        self, inputs: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        H, C = self.begin_state(inputs.shape[1]) if state is None else state
        outputs = []
        for X in inputs:  # X is (B, num_inputs)
            I = torch.sigmoid(X @ self.W_xi + H @ self.W_hi + self.b_i)  # eq. 9.2.1
            F = torch.sigmoid(X @ self.W_xf + H @ self.W_hf + self.b_f)
            O = torch.sigmoid(X @ self.W_xo + H @ self.W_ho + self.b_o)
            C_tilde = torch.tanh(X @ self.W_xc + H @ self.W_hc + self.b_c)  # eq. 9.2.2
            C = F * C + I * C_tilde  # eq. 9.2.3: the memory cell, gated sum of old and new
            H = O * torch.tanh(C)  # eq. 9.2.4
            outputs.append(H)
        return torch.stack(outputs), (H, C)


def make_cell(cell: str, num_inputs: int, num_hiddens: int, *, activation: str = "tanh",
              reset_after: bool = False) -> nn.Module:
    """One single-direction layer of kind ``cell`` ("rnn", "gru" or "lstm")."""
    if cell == "rnn":
        return RNNScratch(num_inputs, num_hiddens, activation)
    if cell == "gru":
        return GRUScratch(num_inputs, num_hiddens, reset_after)
    if cell == "lstm":
        return LSTMScratch(num_inputs, num_hiddens)
    raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")


def _layer_state(state: State, index: int) -> State:
    """Row ``index`` of a stacked state: ``(L * D, B, H) -> (B, H)``, for each of ``(H, C)``."""
    if isinstance(state, tuple):
        return state[0][index], state[1][index]
    return state[index]


def _stack_states(states: list[State]) -> State:
    """The inverse of :func:`_layer_state`: ``L * D`` states of ``(B, H)`` -> ``(L * D, B, H)``."""
    if isinstance(states[0], tuple):
        return torch.stack([H for H, _ in states]), torch.stack([C for _, C in states])
    return torch.stack(states)


class StackedScratch(nn.Module):
    """Deep (d2l §9.3) and optionally bidirectional (d2l §9.4) layers of scratch cells.

    Layer ``l + 1`` reads the hidden states of layer ``l`` (eq. 9.3.1). A bidirectional layer has a
    second cell, in ``layers_reverse``, that reads the sequence back to front; the two directions'
    outputs are concatenated on the feature axis. Dropout, when ``dropout > 0``, is applied to the
    inputs of every layer but the first, in training mode only, which is where ``torch.nn.RNN``
    applies it.

    ``forward(inputs (T, B, num_inputs), state | None) -> (outputs (T, B, D * num_hiddens), state)``
    with ``D = 2`` if bidirectional else 1, and the state laid out as ``torch.nn``:
    ``(num_layers * D, B, num_hiddens)``, row ``l * D + d`` for layer ``l`` and direction ``d``
    (a pair of such tensors for the LSTM).
    """

    def __init__(self, cell: str, num_inputs: int, num_hiddens: int, *, num_layers: int = 1,
                 bidirectional: bool = False, dropout: float = 0.0, activation: str = "tanh",
                 reset_after: bool = False) -> None:
        super().__init__()
        self.cell, self.num_hiddens, self.num_layers = cell, num_hiddens, num_layers
        self.num_directions = 2 if bidirectional else 1
        self.dropout = dropout
        # Layer 0 reads the inputs; every later layer reads both directions of the layer below.
        sizes = [num_inputs] + [num_hiddens * self.num_directions] * (num_layers - 1)
        options = {"activation": activation, "reset_after": reset_after}
        self.layers = nn.ModuleList(make_cell(cell, n, num_hiddens, **options) for n in sizes)
        self.layers_reverse = None
        if bidirectional:
            self.layers_reverse = nn.ModuleList(make_cell(cell, n, num_hiddens, **options) for n in sizes)

    def begin_state(self, batch_size: int) -> State:
        param = next(self.parameters())
        zeros = param.new_zeros(self.num_layers * self.num_directions, batch_size, self.num_hiddens)
        return (zeros, zeros.clone()) if self.cell == "lstm" else zeros

    def _directions(self, layer: int) -> list[nn.Module]:
        if self.layers_reverse is None:
            return [self.layers[layer]]
        return [self.layers[layer], self.layers_reverse[layer]]

    def forward(self, inputs: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        state = self.begin_state(inputs.shape[1]) if state is None else state
        X, final_states = inputs, []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0:
                X = nnf.dropout(X, self.dropout, self.training)
            outputs = []
            for direction, cell in enumerate(self._directions(layer)):
                start = _layer_state(state, layer * self.num_directions + direction)
                if direction == 0:
                    Y, end = cell(X, start)
                else:  # read back to front, then flip so outputs line up with time steps
                    Y, end = cell(X.flip(0), start)
                    Y = Y.flip(0)
                outputs.append(Y)
                final_states.append(end)
            X = torch.cat(outputs, dim=-1)  # (T, B, D * num_hiddens)
        return X, _stack_states(final_states)
