"""Recurrent layers written from scratch: the book's equations, one time step at a time.

Every layer is time-major: ``inputs`` is ``(T, B, num_inputs)`` so that ``for X in inputs`` walks
over time, as in d2l §8.5. Weights are shaped ``(num_inputs, num_hiddens)`` and
``(num_hiddens, num_hiddens)`` so each line reads like the book: ``X @ W_xh + H @ W_hh + b_h``.

Each cell has two forms of ``forward`` with the same parameters. ``fast=False`` is the book's loop,
line by line, for teaching and as the reference. ``fast=True`` (the default) computes the same
function with fewer, larger operations and a hand-written backward pass (:mod:`.fused`); the tests
hold the two to the same values and gradients. The fast form also accepts token ids ``(T, B)``
in place of one-hot rows, and gathers rows of ``W_x?`` instead of multiplying by a one-hot matrix.
Where the fast form runs (C++ kernels, Python loops, torch's LSTM) is :func:`.fused.choose_path`'s
choice, for every cell.

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

from . import fused, regularize

# A hidden state: one tensor for the RNN and the GRU, the pair (H, C) for the LSTM.
State = Tensor | tuple[Tensor, Tensor]

CELLS = ("rnn", "gru", "lstm")

# A cell's parameters as its fast form takes them, gates side by side: ``(W_x (num_inputs, G*H),
# b (G*H), W_h, extra)``, where W_h and extra are the cell's own (see each ``fused_weights``).
FusedWeights = tuple[Tensor, Tensor, Tensor, Tensor | None]
ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


def _weights(*shape: int) -> nn.Parameter:
    # Small Gaussian weights, N(0, 0.01^2), as in the book's get_params (§8.5.2).
    return nn.Parameter(torch.randn(*shape) * 0.01)


def _zeros(num_hiddens: int) -> nn.Parameter:
    return nn.Parameter(torch.zeros(num_hiddens))


def _project(X: Tensor, W_x: Tensor, b: Tensor) -> Tensor:
    """``X_t W_x + b`` for every step at once: ``(T, B, num_inputs) -> (T, B, n)``. Token ids
    ``(T, B)`` stand for one-hot rows, and ``one_hot(i) @ W_x`` is row ``i`` of ``W_x``."""
    if not X.is_floating_point():
        return nnf.embedding(X, W_x) + b
    return torch.matmul(X, W_x) + b


def _source(X: Tensor, W_x: Tensor) -> Tensor:
    """What stands for the inputs when :func:`.fused.choose_path` picks a path: ``W_x`` itself for
    token ids (their rows are the projections), else the inputs, whose device and dtype the
    products ``X_t W_x`` will have."""
    return X if X.is_floating_point() else W_x


def _inputs(X: Tensor, W_x: Tensor, b: Tensor) -> fused.Inputs:
    """What the fast recurrences take as their input, ``(source, ids, bias)``: token ids ``(T, B)``
    go in with ``W_x`` itself, whose row ``i`` is ``one_hot(i) @ W_x``; other inputs as the products
    ``X_t W_x`` of all steps at once. The bias is added inside the recurrence."""
    if not X.is_floating_point():
        return W_x, X, b
    return torch.matmul(X, W_x), None, b


def _packed(module: nn.Module, names: tuple[str, ...], dim: int = 0) -> Tensor:
    """``torch.cat`` of the named parameters (several gates as one matrix). With autograd on it is
    rebuilt every call, so gradients reach each parameter; without (generation, evaluation) it is
    kept until a parameter changes (``_version`` counts in-place updates such as optimizer steps),
    because generating one token would otherwise spend most of its time copying weights. Tensors
    that stand in for the parameters (DropConnect's masked weights, :mod:`.regularize`) are new each
    call and may reuse a freed address, so they are never cached."""
    tensors = [getattr(module, name) for name in names]
    if torch.is_grad_enabled() or not all(isinstance(t, nn.Parameter) for t in tensors):
        return torch.cat(tensors, dim)
    key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
    cache = module.__dict__.setdefault("_packed_cache", {})
    if cache.get((names, dim), (None,))[0] != key:
        cache[names, dim] = (key, torch.cat(tensors, dim))
    return cache[names, dim][1]


def _as_one_hot(X: Tensor, vocab_size: int, like: Tensor) -> Tensor:
    return X if X.is_floating_point() else nnf.one_hot(X, vocab_size).to(like.dtype)


def _three(num_inputs: int, num_hiddens: int) -> tuple[nn.Parameter, nn.Parameter, nn.Parameter]:
    """One gate's parameters: ``W_x? (num_inputs, num_hiddens), W_h? (num_hiddens, num_hiddens), b_?``."""
    return _weights(num_inputs, num_hiddens), _weights(num_hiddens, num_hiddens), _zeros(num_hiddens)


class RNNScratch(nn.Module):
    """A vanilla RNN layer (d2l §8.4, eq. 8.4.5): ``H_t = phi(X_t W_xh + H_{t-1} W_hh + b_h)``.

    ``forward(inputs (T, B, num_inputs), H (B, num_hiddens) | None)``
    ``-> (outputs (T, B, num_hiddens), H (B, num_hiddens))``.
    """

    def __init__(self, num_inputs: int, num_hiddens: int, activation: str = "tanh",
                 fast: bool = True) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of tanh, relu, got {activation!r}")
        self.num_hiddens = num_hiddens
        self.activation = activation
        self.fast = fast
        self.W_xh, self.W_hh, self.b_h = _three(num_inputs, num_hiddens)

    def begin_state(self, batch_size: int) -> Tensor:
        return self.W_hh.new_zeros(batch_size, self.num_hiddens)

    @property
    def kernel_name(self) -> str:
        return f"rnn_{self.activation}"

    def fused_weights(self) -> FusedWeights:
        """``(W_x, b, W_h, extra)`` as the fast recurrence takes them (see :data:`FusedWeights`)."""
        return self.W_xh, self.b_h, self.W_hh, None

    def forward(self, inputs: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        phi = ACTIVATIONS[self.activation]
        H = self.begin_state(inputs.shape[1]) if state is None else state
        if self.fast:
            W_x, b, W_hh, _ = self.fused_weights()
            path = fused.choose_path("rnn", _source(inputs, W_x), b, H, W_hh, steps=inputs.shape[0])
            outputs = fused.rnn(_inputs(inputs, W_x, b), H, W_hh, relu=self.activation == "relu",
                                kernels=path == fused.KERNELS)
            return outputs, outputs[-1]
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

    def __init__(self, num_inputs: int, num_hiddens: int, reset_after: bool = False,
                 fast: bool = True) -> None:
        super().__init__()
        self.num_hiddens = num_hiddens
        self.reset_after = reset_after
        self.fast = fast
        self.W_xz, self.W_hz, self.b_z = _three(num_inputs, num_hiddens)  # update gate
        self.W_xr, self.W_hr, self.b_r = _three(num_inputs, num_hiddens)  # reset gate
        self.W_xh, self.W_hh, self.b_h = _three(num_inputs, num_hiddens)  # candidate state
        if reset_after:
            self.b_hh = _zeros(num_hiddens)

    def begin_state(self, batch_size: int) -> Tensor:
        return self.W_hh.new_zeros(batch_size, self.num_hiddens)

    @property
    def kernel_name(self) -> str:
        return "gru_reset_after" if self.reset_after else "gru"

    def fused_weights(self) -> FusedWeights:
        """The three gates side by side: ``W_x = [W_xz | W_xr | W_xh]``, ``b = [b_z | b_r | b_h]``;
        then ``[W_hz | W_hr]`` and ``W_hh`` (the book's form, where ``R`` comes between the two
        products), or ``[W_hz | W_hr | W_hh]`` and ``b_hh`` (reset after the product)."""
        W_x = _packed(self, ("W_xz", "W_xr", "W_xh"), dim=1)
        b = _packed(self, ("b_z", "b_r", "b_h"))
        if self.reset_after:
            return W_x, b, _packed(self, ("W_hz", "W_hr", "W_hh"), dim=1), self.b_hh
        return W_x, b, _packed(self, ("W_hz", "W_hr"), dim=1), self.W_hh

    def _candidate(self, X: Tensor, H: Tensor, R: Tensor) -> Tensor:
        if self.reset_after:
            return torch.tanh(X @ self.W_xh + self.b_h + R * (H @ self.W_hh + self.b_hh))
        return torch.tanh(X @ self.W_xh + (R * H) @ self.W_hh + self.b_h)  # eq. 9.1.2

    def forward(self, inputs: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        H = self.begin_state(inputs.shape[1]) if state is None else state
        if self.fast:
            outputs = self._fast(inputs, H)
            return outputs, outputs[-1]
        outputs = []
        for X in inputs:  # X is (B, num_inputs)
            Z = torch.sigmoid(X @ self.W_xz + H @ self.W_hz + self.b_z)  # eq. 9.1.1
            R = torch.sigmoid(X @ self.W_xr + H @ self.W_hr + self.b_r)
            H_tilde = self._candidate(X, H, R)
            H = Z * H + (1 - Z) * H_tilde  # eq. 9.1.3: Z near 1 keeps the old state
            outputs.append(H)
        return torch.stack(outputs), H

    def _fast(self, inputs: Tensor, H: Tensor) -> Tensor:
        # The three gates' input products as one: [P^z | P^r | P^h] = X_t [W_xz | W_xr | W_xh] + b
        W_x, b, W_h, extra = self.fused_weights()
        path = fused.choose_path("gru", _source(inputs, W_x), b, H, W_h, extra, steps=inputs.shape[0])
        P = _inputs(inputs, W_x, b)
        if self.reset_after:
            return fused.gru_reset_after(P, H, W_h, extra, kernels=path == fused.KERNELS)
        return fused.gru(P, H, W_h, extra, kernels=path == fused.KERNELS)


class LSTMScratch(nn.Module):
    """A long short-term memory layer (d2l §9.2, Hochreiter & Schmidhuber 1997).

    ``forward(inputs (T, B, num_inputs), (H, C) | None) -> (outputs (T, B, num_hiddens), (H, C))``
    with ``H`` and ``C`` both ``(B, num_hiddens)``.
    """

    def __init__(self, num_inputs: int, num_hiddens: int, fast: bool = True) -> None:
        super().__init__()
        self.num_hiddens = num_hiddens
        self.fast = fast
        self.W_xi, self.W_hi, self.b_i = _three(num_inputs, num_hiddens)  # input gate
        self.W_xf, self.W_hf, self.b_f = _three(num_inputs, num_hiddens)  # forget gate
        self.W_xo, self.W_ho, self.b_o = _three(num_inputs, num_hiddens)  # output gate
        self.W_xc, self.W_hc, self.b_c = _three(num_inputs, num_hiddens)  # candidate memory

    def begin_state(self, batch_size: int) -> tuple[Tensor, Tensor]:
        zeros = self.W_hc.new_zeros(batch_size, self.num_hiddens)
        return zeros, zeros.clone()

    @property
    def kernel_name(self) -> str:
        return "lstm"

    def fused_weights(self) -> FusedWeights:
        """The four gates side by side in torch's order (i, f, c, o): ``W_x (num_inputs, 4H)``,
        ``b (4H)``, ``W_h (H, 4H)``."""
        gates = ("i", "f", "c", "o")
        W_x = _packed(self, tuple(f"W_x{g}" for g in gates), dim=1)
        W_h = _packed(self, tuple(f"W_h{g}" for g in gates), dim=1)
        return W_x, _packed(self, tuple(f"b_{g}" for g in gates)), W_h, None

    def forward(
        self, inputs: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        H, C = self.begin_state(inputs.shape[1]) if state is None else state
        if self.fast:  # the book's gates in torch's order (i, f, c, o), on one of three paths
            W_x, b, W_h, _ = self.fused_weights()
            path = fused.choose_path("lstm", _source(inputs, W_x), b, H, C, W_h, steps=inputs.shape[0])
            if path == fused.KERNELS:
                return fused.lstm_recurrence(_inputs(inputs, W_x, b), (H, C), W_h)
            if path == fused.LSTM_STEPS:
                return fused.lstm_steps(_project(inputs, W_x, b), (H, C), W_h)
            return fused.lstm(_as_one_hot(inputs, W_x.shape[0], W_x), (H, C), W_x, W_h, b)
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
              reset_after: bool = False, fast: bool = True) -> nn.Module:
    """One single-direction layer of kind ``cell`` ("rnn", "gru" or "lstm")."""
    if cell == "rnn":
        return RNNScratch(num_inputs, num_hiddens, activation, fast)
    if cell == "gru":
        return GRUScratch(num_inputs, num_hiddens, reset_after, fast)
    if cell == "lstm":
        return LSTMScratch(num_inputs, num_hiddens, fast)
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
    applies it; ``locked=True`` draws one mask per sequence for all time steps (Gal & Ghahramani
    2016). ``weight_drop > 0`` applies DropConnect to each cell's hidden-to-hidden weights in
    training, a fresh mask every call (Merity et al. 2018); see :mod:`.regularize`.

    ``forward(inputs (T, B, num_inputs), state | None) -> (outputs (T, B, D * num_hiddens), state)``
    with ``D = 2`` if bidirectional else 1, and the state laid out as ``torch.nn``:
    ``(num_layers * D, B, num_hiddens)``, row ``l * D + d`` for layer ``l`` and direction ``d``
    (a pair of such tensors for the LSTM).
    """

    # No defaults for what a ModelConfig holds: its fields are the one place they are set
    # (models/lm.py builds this layer from one).
    def __init__(self, cell: str, num_inputs: int, num_hiddens: int, *, num_layers: int,
                 bidirectional: bool, dropout: float, activation: str, reset_after: bool, locked: bool,
                 weight_drop: float, fast: bool = True) -> None:
        super().__init__()
        self.cell, self.num_hiddens, self.num_layers = cell, num_hiddens, num_layers
        self.num_directions = 2 if bidirectional else 1
        self.dropout, self.locked, self.weight_drop = dropout, locked, weight_drop
        # Layer 0 reads the inputs; every later layer reads both directions of the layer below.
        sizes = [num_inputs] + [num_hiddens * self.num_directions] * (num_layers - 1)
        options = {"activation": activation, "reset_after": reset_after, "fast": fast}
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
                X = regularize.dropout(X, self.dropout, self.training, self.locked)
            outputs = []
            for direction, cell in enumerate(self._directions(layer)):
                start = _layer_state(state, layer * self.num_directions + direction)
                if direction == 0:
                    Y, end = self._run(cell, X, start)
                else:  # read back to front, then flip so outputs line up with time steps
                    Y, end = self._run(cell, X.flip(0), start)
                    Y = Y.flip(0)
                outputs.append(Y)
                final_states.append(end)
            X = torch.cat(outputs, dim=-1)  # (T, B, D * num_hiddens)
        return X, _stack_states(final_states)

    def _run(self, cell: nn.Module, X: Tensor, state: State) -> tuple[Tensor, State]:
        if self.training and self.weight_drop > 0:
            return regularize.call_with_weight_drop(cell, self.weight_drop, X, state)
        return cell(X, state)
