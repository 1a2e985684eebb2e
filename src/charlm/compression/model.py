"""The compressor's predictor: a recurrent language model mixed with context counts, learning online.

The next symbol's logits are the network's logits plus, for each context order k, a learned weight
times that order's count log-probabilities (geometric mixing: a product of experts)::

    logits = LM(h_t) + sum_k w[k, bucket_k] * log p_k(. | last k symbols)

The weight depends on how often the context was seen (its bucket), so a context seen once counts
for less than one seen a thousand times. Network and weights learn together by gradient descent on
the very code length, every `block` steps, from what was just coded: each symbol is coded with the
model as it was *before* it learned from that symbol (prequential), so the decoder, which learns
from the symbols it has just decoded, repeats every update exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import RNNLM, detach_state
from .contexts import NUM_BUCKETS


class Mixture(nn.Module):
    """`lm` (vocabulary V) over an alphabet of ``V + extra`` symbols, with `orders` count experts.

    The `extra` symbols (the escapes of the pretrained mode) get logits of their own, learned
    biases that start at `extra_logit`: the network never saw them.
    """

    def __init__(self, lm: RNNLM, num_orders: int, *, extra: int = 0, extra_logit: float = -8.0,
                 initial_weight: float = 0.3) -> None:
        super().__init__()
        self.lm = lm
        self.mix = nn.Parameter(torch.full((num_orders, 2 * NUM_BUCKETS), initial_weight))
        self.extra = nn.Parameter(torch.full((extra,), extra_logit))

    def forward(self, inputs: Tensor, state, feats: Tensor, buckets: Tensor):
        """``inputs (L, T)`` ids, ``feats (L, T, K, A)``, ``buckets (L, T, K)`` ->
        ``(logits (L, T, A), state)``."""
        logits, state = self.lm(inputs, state, check=False)
        return self.mixed(logits, feats, buckets), state

    def mixed(self, logits: Tensor, feats: Tensor, buckets: Tensor) -> Tensor:
        """The network's logits ``(L, T, V)`` with the escapes' and the count experts' terms."""
        if self.extra.numel():
            logits = torch.cat([logits, self.extra.expand(*logits.shape[:2], -1)], dim=-1)
        if feats.shape[-2]:
            K = feats.shape[-2]
            weights = self.mix[torch.arange(K), buckets]  # (L, T, K)
            logits = logits + (weights.unsqueeze(-1) * feats).sum(-2)
        return logits


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
    """Holds a Mixture's stepwise state and learns from each finished block of coded steps."""

    def __init__(self, mixture: Mixture, lanes: int, block: int, lr: float, mix_lr: float,
                 clip: float = 1.0) -> None:
        self.mixture, self.block, self.clip = mixture, block, clip
        # The mixing weights are few and must follow the text quickly: a learning rate of their own.
        groups = [{"params": list(mixture.lm.parameters()), "lr": lr},
                  {"params": [mixture.mix, mixture.extra], "lr": mix_lr}]
        self.optimizer = torch.optim.Adam(groups, fused=True) if lr > 0 or mix_lr > 0 else None
        self.stepper = BuiltinStepper(mixture.lm) if BuiltinStepper.fits(mixture.lm) else None
        self.state = mixture.lm.begin_state(lanes)
        self._start_state = self.state
        self._inputs: list[Tensor] = []
        self._feats: list[Tensor] = []
        self._buckets: list[Tensor] = []
        self._targets: list[Tensor] = []

    @torch.no_grad()
    def logits(self, inputs: Tensor, feats: Tensor, buckets: Tensor) -> Tensor:
        """Logits ``(L, A)`` of the next symbol after ``inputs (L,)``; the state moves on by one."""
        if self.stepper is not None:
            logits, self.state = self.stepper(inputs, self.state)
            logits = self.mixture.mixed(logits.unsqueeze(1), feats.unsqueeze(1), buckets.unsqueeze(1))
        else:
            logits, self.state = self.mixture(inputs.view(-1, 1), self.state, feats.unsqueeze(1),
                                              buckets.unsqueeze(1))
        self._inputs.append(inputs)
        self._feats.append(feats)
        self._buckets.append(buckets)
        return logits[:, 0]

    def learn(self, targets: Tensor, more_to_come: bool) -> None:
        """Record the symbols just coded; at the end of a block, one gradient step on the block."""
        self._targets.append(targets)
        if len(self._targets) < self.block:
            return
        if self.optimizer is not None and more_to_come:  # after the last block there is nothing to code
            logits, _ = self.mixture(torch.stack(self._inputs, 1), self._start_state,
                                     torch.stack(self._feats, 1), torch.stack(self._buckets, 1))
            targets = torch.stack(self._targets, 1)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.mixture.parameters(), self.clip)
            self.optimizer.step()
        self.state = self._start_state = detach_state(self.state)
        self._inputs, self._feats, self._buckets, self._targets = [], [], [], []
