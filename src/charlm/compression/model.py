"""The compressor's network side: a recurrent language model stepping through the text and learning
online from the gradient the C kernel hands back.

The kernel (kernel.c) mixes the network's logits with context experts, codes each symbol and
returns d(code length)/d(logits) = w_lm (p - onehot) for every step. Every `block` steps the
network re-runs the block from its state at the block's start, with autograd, and takes one Adam
step on that gradient. Each symbol is coded with the network as it was *before* it learned from
that symbol (prequential), so the decoder, which learns from the symbols it has just decoded,
repeats every update exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models import RNNLM, detach_state


def learning_parameters(lm: RNNLM, learn: str) -> list[nn.Parameter]:
    """The parameters that learn while coding (``--learn``): all, the top layer's and the output
    layer's ("top"), or the output layer's ("output"); the others stop taking gradients."""
    if learn == "all":
        return list(lm.parameters())
    c = lm.config
    top = f"_l{c.num_layers - 1}"
    chosen = [p for name, p in lm.named_parameters()
              if name.startswith(("output.", "W_hq", "b_q")) or learn == "top" and (
                  name.startswith(f"core.layers.{c.num_layers - 1}.") or
                  name.startswith("core.") and name.endswith((top, f"{top}_reverse")))]
    for p in lm.parameters():
        p.requires_grad_(any(p is q for q in chosen))
    return chosen


class BuiltinStepper:
    """One time step of a torch.nn core for a few rows, one fused cell call per layer.

    ``nn.LSTM`` called on one step costs several times more than the step itself (its set-up
    dominates), and coding runs one step at a time: ``torch.lstm_cell`` and its kin take the same
    weights in one call. Encoder and decoder both step this way; the block updates use the core
    itself for its gradient, the same on both sides too.
    """

    _CELLS = {"lstm": torch.lstm_cell, "gru": torch.gru_cell, "rnn_tanh": torch.rnn_tanh_cell,
              "rnn_relu": torch.rnn_relu_cell}

    def __init__(self, lm: RNNLM) -> None:
        c = lm.config
        self.lm, self.lstm = lm, c.cell == "lstm"
        self.cell = self._CELLS[c.cell if c.cell != "rnn" else f"rnn_{c.activation}"]
        core = lm.core
        self.layers = [tuple(getattr(core, f"{name}_l{k}") for name in
                             ("weight_ih", "weight_hh", "bias_ih", "bias_hh")) for k in range(c.num_layers)]

    @staticmethod
    def fits(lm: RNNLM) -> bool:
        c = lm.config
        return c.impl == "builtin" and not c.bidirectional and lm.embedding is not None

    @torch.no_grad()
    def __call__(self, ids: Tensor, state):
        x = self.lm.embedding.weight[ids]
        H, C = state if self.lstm else (state, None)
        new_h, new_c = [], []
        for k, weights in enumerate(self.layers):
            if self.lstm:
                x, c = self.cell(x, (H[k], C[k]), *weights)
                new_c.append(c)
            else:
                x = self.cell(x, H[k], *weights)
            new_h.append(x)
        logits = torch.addmm(self.lm.output.bias, x, self.lm.output.weight.T)
        H = torch.stack(new_h)
        return logits, ((H, torch.stack(new_c)) if self.lstm else H)


class OnlineLearner:
    """Steps `lm` over `lanes` lanes and learns from each finished block of coded steps.

    ``inputs (block + 1, L)`` holds the network's inputs of the block (row 0 the last input of
    the previous block) and ``grads (block, L, V)`` the kernel's gradients: the kernel writes row
    ``t + 1`` and row ``t`` of them at step ``t`` (:meth:`slots`).
    """

    def __init__(self, lm: RNNLM, lanes: int, block: int, lr: float, start: int, learn: str = "all",
                 clip: float = 1.0) -> None:
        self.lm, self.block, self.clip = lm, block, clip
        self.params = learning_parameters(lm, learn)
        # foreach, not fused: the fused step leaves the parameters' _version as it was, and the
        # scratch cells' packed weights (models/scratch.py, _packed) would go on stepping with the
        # weights from before the update.
        self.optimizer = torch.optim.Adam(self.params, lr=lr, foreach=True) if lr > 0 else None
        self.stepper = BuiltinStepper(lm) if BuiltinStepper.fits(lm) else None
        # From zeros, whatever the run's preamble: archives coded before preambles existed decode alike.
        self.state = self._start_state = lm.begin_state(lanes, from_zeros=True)
        self.inputs = torch.full((block + 1, lanes), start, dtype=torch.long)
        self.grads = torch.zeros(block, lanes, lm.config.vocab_size)
        self.t = 0

    @torch.no_grad()
    def logits(self) -> Tensor:
        """``(L, V)`` float32 logits of the next symbol; the state moves on by one."""
        ids = self.inputs[self.t]
        if self.stepper is not None:
            logits, self.state = self.stepper(ids, self.state)
        else:
            logits, self.state = self.lm(ids.view(-1, 1), self.state, check=False)
            logits = logits[:, 0]
        return logits.float().contiguous()

    def slots(self) -> tuple[Tensor, Tensor]:
        """Where the kernel writes the next inputs ``(L,)`` and this step's gradient ``(L, V)``."""
        return self.inputs[self.t + 1], self.grads[self.t]

    def learn(self, more_to_come: bool) -> None:
        """After a step: at the end of a block, one gradient step on the block."""
        self.t += 1
        if self.t < self.block:
            return
        if self.optimizer is not None and more_to_come:  # after the last block there is nothing to code
            logits, _ = self.lm(self.inputs[:-1].T, self._start_state, check=False)  # (L, T, V)
            L, T = logits.shape[:2]
            loss = (logits.float() * self.grads.transpose(0, 1)).sum() / (L * T)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.params, self.clip)
            self.optimizer.step()
        self.state = self._start_state = detach_state(self.state)
        self.inputs[0] = self.inputs[-1]
        self.t = 0
