"""The pretrained mode's network in C (deepnet.c): a trained run's LSTM, of any number of layers, with
the learning the torch path does (:class:`charlm.compression.model.OnlineLearner`).

Both implementations of an LSTM map onto one layout: ``impl="builtin"`` (``torch.nn.LSTM``'s
``weight_ih_l{k}`` (4H, K), ``weight_hh_l{k}`` (4H, H), and two biases that add up) and the scratch
cells (``W_x{i,f,c,o}`` (K, H) side by side, one bias each), gates in torch's order (i, f, g, o) in
both. Other cells, bidirectional models and tied weights keep the torch path (:meth:`fits`).
"""

from __future__ import annotations

import ctypes

import torch

from ..models import RNNLM
from .build import KernelError

MAX_LAYERS = 16  # deepnet.c's MAX_LAYERS
# What learns while coding: every part, the top LSTM layer and the output layer, or the output layer.
LEARN = ("all", "top", "output")


def _frozen(learn: str, num_layers: int) -> int:
    """deepnet.c's `frozen`: how many parts from the bottom (the embedding, then each layer) keep
    their trained weights."""
    return {"all": 0, "top": num_layers, "output": num_layers + 1}[learn]


def _layer_weights(lm: RNNLM, k: int) -> tuple[list[torch.Tensor], int]:
    """Layer k's ``(W_x, W_h, b)`` as deepnet.c takes them, and how many biases torch adds up."""
    core = lm.core
    if lm.config.impl == "builtin":
        bias = getattr(core, f"bias_ih_l{k}") + getattr(core, f"bias_hh_l{k}")
        return [getattr(core, f"weight_ih_l{k}"), getattr(core, f"weight_hh_l{k}"), bias], 2
    W_x, b, W_h, _ = core.layers[k].fused_weights()  # (K, 4H), (4H), (H, 4H): gates i, f, c, o
    return [W_x, W_h, b], 1


def flat_weights(lm: RNNLM) -> tuple[torch.Tensor, int]:
    """All the weights in deepnet.c's order, float32, and the bias copies: the embedding (none for
    one-hot inputs), each layer's W_x, W_h, b, then the output layer's weight and bias."""
    parts = [] if lm.embedding is None else [lm.embedding.weight]
    copies = 1
    for k in range(lm.config.num_layers):
        weights, copies = _layer_weights(lm, k)
        parts += weights
    if lm.config.impl == "builtin":
        parts += [lm.output.weight, lm.output.bias]
    else:
        parts += [lm.W_hq, lm.b_q]
    with torch.no_grad():
        return torch.cat([p.detach().float().reshape(-1) for p in parts]), copies


class DeepNetwork:
    """A trained LSTM language model run and trained in C (deepnet.c), from a torch model's weights.

    Computes what the torch path computes (the same equations, block updates, clipping and Adam) in
    float32, in an order of operations of its own: the two are different programs whose floats
    differ in the last bits, and an archive records which one made it. `threads` (1 or 2) changes
    no bit: each thread takes a fixed share of every product.
    """

    entry = "cm_run_deep"  # kernel.c's loop over steps with this network

    def __init__(self, lm: RNNLM, lanes: int, block: int, lr: float, start: int, *, lib: ctypes.CDLL,
                 learn: str = "all", threads: int = 1, clip: float = 1.0) -> None:
        if not self.fits(lm):
            raise ValueError("the pretrained network in C is an LSTM read in one direction, weights not tied")
        c = lm.config
        self._weights, copies = flat_weights(lm)
        D = 0 if lm.embedding is None else lm.embedding.weight.shape[1]
        self._lib = lib  # the Kernel's that runs it
        self.handle = self._lib.cm_deep_new(lanes, c.vocab_size, D, c.num_hiddens, c.num_layers, block, lr,
                                            0.9, 0.999, clip, start, copies, _frozen(learn, c.num_layers),
                                            threads, int(c.impl == "builtin"), self._weights.data_ptr())
        if not self.handle:
            raise KernelError("not enough memory for the network")
        self._shape = (lanes, c.vocab_size)

    @staticmethod
    def fits(lm: RNNLM) -> bool:
        c = lm.config
        return (c.cell == "lstm" and not c.bidirectional and not c.tie_weights
                and 1 <= c.num_layers <= MAX_LAYERS)

    def forward(self, next_ids: torch.Tensor, grad: torch.Tensor | None = None) -> torch.Tensor:
        """One step without the kernel (for the tests): the logits ``(L, V)`` of the next symbols
        of every lane; then `next_ids` ``(L,)`` become the inputs of the step after, and `grad`
        ``(L, V)`` (zero if None) the step's d(code length)/d(logits), which a block update learns from."""
        L, V = self._shape
        address = self._lib.cm_deep_forward(self.handle)
        logits = torch.frombuffer((ctypes.c_float * (L * V)).from_address(address), dtype=torch.float32)
        logits = logits.clone().view(L, V)
        slot = (ctypes.c_int64 * L).from_address(self._lib.cm_deep_inputs(self.handle))
        slot[:] = [int(i) for i in next_ids]
        dlogits = (ctypes.c_float * (L * V)).from_address(self._lib.cm_deep_dlogits(self.handle))
        dlogits[:] = [0.0] * (L * V) if grad is None else grad.float().reshape(-1).tolist()
        self._lib.cm_deep_advance(self.handle, 1)
        return logits

    def __del__(self) -> None:
        handle = getattr(self, "handle", None)
        if handle:
            self._lib.cm_deep_free(handle)
            self.handle = None
