"""The baseline: the book's own code for chapters 8-9 (d2l 0.17.6, PyTorch edition), restated here.

Nothing in this module uses charlm. It keeps the textbook's habits on purpose, because they are what
the benchmark measures against: a Python loop over time steps, a one-hot matrix product for the
input, a separate small product per gate, the output layer inside the loop, and outputs appended to
a list and concatenated at the end (d2l §8.5, §9.1, §9.2). The training step is ``train_epoch_ch8``'s
body: re-initialise or detach the state, forward, mean cross-entropy, backward, clip the global
gradient norm to ``theta``, SGD. ``predict_ch8`` feeds one token per call, warm-up included.

This is the repository's one copy of the book's scratch models: the speed benchmarks measure them,
and tests/test_d2l.py runs them through charlm's compatibility layer (charlm.d2l), as a reader of
the chapter would.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

# ---- the scratch models (§8.5, §9.1, §9.2), in the book's own signatures ------------------------
# `device=None` is the CPU; the book always passes one (charlm.d2l.RNNModelScratch does).


def _normal(shape: tuple[int, ...], device: torch.device | None = None) -> Tensor:
    return torch.randn(size=shape, device=device) * 0.01


def _three(num_inputs: int, num_hiddens: int, device: torch.device | None) -> tuple[Tensor, Tensor, Tensor]:
    return (_normal((num_inputs, num_hiddens), device), _normal((num_hiddens, num_hiddens), device),
            torch.zeros(num_hiddens, device=device))


def _with_grad(params: list[Tensor]) -> list[Tensor]:
    for param in params:
        param.requires_grad_(True)
    return params


def get_params(vocab_size: int, num_hiddens: int, device: torch.device | None = None) -> list[Tensor]:
    """§8.5.2: ``W_xh, W_hh, b_h`` of the hidden layer, ``W_hq, b_q`` of the output layer."""
    num_inputs = num_outputs = vocab_size
    W_xh, W_hh, b_h = _three(num_inputs, num_hiddens, device)
    W_hq = _normal((num_hiddens, num_outputs), device)
    b_q = torch.zeros(num_outputs, device=device)
    return _with_grad([W_xh, W_hh, b_h, W_hq, b_q])


def init_rnn_state(batch_size: int, num_hiddens: int, device: torch.device | None = None) -> tuple[Tensor]:
    return (torch.zeros((batch_size, num_hiddens), device=device),)  # §8.5.3


def rnn(inputs: Tensor, state: tuple[Tensor, ...], params: list[Tensor]) -> tuple[Tensor, tuple]:
    """§8.5.3: ``inputs (num_steps, batch_size, vocab_size)`` -> ``(num_steps * batch_size, vocab_size)``."""
    W_xh, W_hh, b_h, W_hq, b_q = params
    (H,) = state
    outputs = []
    for X in inputs:
        H = torch.tanh(torch.mm(X, W_xh) + torch.mm(H, W_hh) + b_h)
        Y = torch.mm(H, W_hq) + b_q
        outputs.append(Y)
    return torch.cat(outputs, dim=0), (H,)


def get_gru_params(vocab_size: int, num_hiddens: int, device: torch.device | None = None) -> list[Tensor]:
    """§9.1.2: the update gate, the reset gate, the candidate hidden state, then the output layer."""
    W_xz, W_hz, b_z = _three(vocab_size, num_hiddens, device)  # update gate
    W_xr, W_hr, b_r = _three(vocab_size, num_hiddens, device)  # reset gate
    W_xh, W_hh, b_h = _three(vocab_size, num_hiddens, device)  # candidate hidden state
    W_hq = _normal((num_hiddens, vocab_size), device)
    b_q = torch.zeros(vocab_size, device=device)
    return _with_grad([W_xz, W_hz, b_z, W_xr, W_hr, b_r, W_xh, W_hh, b_h, W_hq, b_q])


def gru(inputs: Tensor, state: tuple[Tensor, ...], params: list[Tensor]) -> tuple[Tensor, tuple]:
    """§9.1.2: the book's GRU, the reset gate applied before the hidden product."""
    W_xz, W_hz, b_z, W_xr, W_hr, b_r, W_xh, W_hh, b_h, W_hq, b_q = params
    (H,) = state
    outputs = []
    for X in inputs:
        Z = torch.sigmoid((X @ W_xz) + (H @ W_hz) + b_z)
        R = torch.sigmoid((X @ W_xr) + (H @ W_hr) + b_r)
        H_tilde = torch.tanh((X @ W_xh) + ((R * H) @ W_hh) + b_h)
        H = Z * H + (1 - Z) * H_tilde
        Y = H @ W_hq + b_q
        outputs.append(Y)
    return torch.cat(outputs, dim=0), (H,)


def get_lstm_params(vocab_size: int, num_hiddens: int, device: torch.device | None = None) -> list[Tensor]:
    """§9.2.2: the input, forget and output gates, the candidate memory cell, then the output layer."""
    W_xi, W_hi, b_i = _three(vocab_size, num_hiddens, device)  # input gate
    W_xf, W_hf, b_f = _three(vocab_size, num_hiddens, device)  # forget gate
    W_xo, W_ho, b_o = _three(vocab_size, num_hiddens, device)  # output gate
    W_xc, W_hc, b_c = _three(vocab_size, num_hiddens, device)  # candidate memory cell
    W_hq = _normal((num_hiddens, vocab_size), device)
    b_q = torch.zeros(vocab_size, device=device)
    return _with_grad([W_xi, W_hi, b_i, W_xf, W_hf, b_f, W_xo, W_ho, b_o, W_xc, W_hc, b_c, W_hq, b_q])


def init_lstm_state(batch_size: int, num_hiddens: int, device: torch.device | None = None
                    ) -> tuple[Tensor, Tensor]:
    return (torch.zeros((batch_size, num_hiddens), device=device),  # §9.2.2: H, then the memory C
            torch.zeros((batch_size, num_hiddens), device=device))


def lstm(inputs: Tensor, state: tuple[Tensor, ...], params: list[Tensor]) -> tuple[Tensor, tuple]:
    """§9.2.2: the book's LSTM."""
    [W_xi, W_hi, b_i, W_xf, W_hf, b_f, W_xo, W_ho, b_o, W_xc, W_hc, b_c, W_hq, b_q] = params
    (H, C) = state
    outputs = []
    for X in inputs:
        I = torch.sigmoid((X @ W_xi) + (H @ W_hi) + b_i)
        F = torch.sigmoid((X @ W_xf) + (H @ W_hf) + b_f)
        O = torch.sigmoid((X @ W_xo) + (H @ W_ho) + b_o)
        C_tilde = torch.tanh((X @ W_xc) + (H @ W_hc) + b_c)
        C = F * C + I * C_tilde
        H = O * torch.tanh(C)
        Y = (H @ W_hq) + b_q
        outputs.append(Y)
    return torch.cat(outputs, dim=0), (H, C)


# cell -> (get_params, init_state, forward): the three functions the book's RNNModelScratch takes.
SCRATCH = {"rnn": (get_params, init_rnn_state, rnn), "gru": (get_gru_params, init_rnn_state, gru),
           "lstm": (get_lstm_params, init_lstm_state, lstm)}


class RNNModelScratch:
    """§8.5.3: a model made of plain tensors and three functions; logits ``(T * B, vocab_size)``."""

    def __init__(self, cell: str, vocab_size: int, num_hiddens: int) -> None:
        self.vocab_size, self.num_hiddens = vocab_size, num_hiddens
        get_params_fn, self.init_state, self.forward_fn = SCRATCH[cell]
        self.params = get_params_fn(vocab_size, num_hiddens)

    def __call__(self, X: Tensor, state: tuple) -> tuple[Tensor, tuple]:
        X = nnf.one_hot(X.T, self.vocab_size).type(torch.float32)
        return self.forward_fn(X, state, self.params)

    def begin_state(self, batch_size: int) -> tuple[Tensor, ...]:
        return self.init_state(batch_size, self.num_hiddens)


class RNNModel(nn.Module):
    """§8.6.1: a ``torch.nn`` recurrent layer, one-hot inputs and a linear output layer."""

    def __init__(self, rnn_layer: nn.RNNBase, vocab_size: int) -> None:
        super().__init__()
        self.rnn, self.vocab_size = rnn_layer, vocab_size
        self.num_hiddens = rnn_layer.hidden_size
        self.linear = nn.Linear(self.num_hiddens, vocab_size)

    def forward(self, inputs: Tensor, state: Tensor | tuple) -> tuple[Tensor, Tensor | tuple]:
        X = nnf.one_hot(inputs.T.long(), self.vocab_size).to(torch.float32)
        Y, state = self.rnn(X, state)
        return self.linear(Y.reshape((-1, Y.shape[-1]))), state

    def begin_state(self, batch_size: int) -> Tensor | tuple[Tensor, Tensor]:
        zeros = torch.zeros(self.rnn.num_layers, batch_size, self.num_hiddens)
        return (zeros, zeros.clone()) if isinstance(self.rnn, nn.LSTM) else zeros


def concise(cell: str, vocab_size: int, num_hiddens: int) -> RNNModel:
    layer = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell](vocab_size, num_hiddens)
    return RNNModel(layer, vocab_size)


def _params(net: RNNModelScratch | nn.Module) -> list[Tensor]:
    if isinstance(net, RNNModelScratch):
        return net.params
    return [p for p in net.parameters() if p.requires_grad]


def grad_clipping(net: RNNModelScratch | nn.Module, theta: float) -> None:
    """§8.5.5: rescale all gradients together when their global norm exceeds ``theta``."""
    params = _params(net)
    norm = torch.sqrt(sum(torch.sum(p.grad**2) for p in params))
    if norm > theta:
        for param in params:
            param.grad[:] *= theta / norm


def sgd(params: list[Tensor], lr: float, batch_size: int) -> None:
    """§3.2: minibatch SGD; the chapter calls it with ``batch_size=1`` on a mean loss."""
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()


def train_step(net: RNNModelScratch | nn.Module, X: Tensor, Y: Tensor, state, lr: float = 1.0,
               theta: float = 1.0, use_random_iter: bool = False):
    """One iteration of ``train_epoch_ch8``'s loop; returns the loss and the state to carry on."""
    if state is None or use_random_iter:
        state = net.begin_state(X.shape[0])
    elif isinstance(state, tuple):
        state = tuple(s.detach_() for s in state)
    else:
        state.detach_()
    y = Y.T.reshape(-1)
    y_hat, state = net(X, state)
    loss = nnf.cross_entropy(y_hat, y.long()).mean()
    if isinstance(net, nn.Module):
        net.zero_grad()
    loss.backward()
    grad_clipping(net, theta)
    sgd(_params(net), lr, batch_size=1)
    return loss.item(), state


def predict_ch8(prefix: list[int], num_preds: int, net: RNNModelScratch | nn.Module) -> list[int]:
    """§8.5.4: warm up on the prefix one token per call, then predict greedily one token per call."""
    state = net.begin_state(batch_size=1)
    outputs = [prefix[0]]

    def get_input() -> Tensor:
        return torch.tensor([outputs[-1]]).reshape((1, 1))

    for y in prefix[1:]:  # warm-up
        _, state = net(get_input(), state)
        outputs.append(y)
    for _ in range(num_preds):
        y, state = net(get_input(), state)
        outputs.append(int(y.argmax(dim=1).reshape(1)))
    return outputs


def perplexity(loss: float) -> float:
    return math.exp(loss)


Step = Callable[[Tensor, Tensor, object], tuple[float, object]]
