"""The same recurrent layers on ``torch.nn.RNN``, ``nn.GRU`` and ``nn.LSTM`` (d2l §8.6, §9.1-9.4).

The built-in layers are used time-major (``batch_first=False``), exactly like
:class:`~charlm.models.scratch.StackedScratch`: ``inputs (T, B, num_inputs) -> outputs
(T, B, D * num_hiddens)``, with the state ``(num_layers * D, B, num_hiddens)`` (a pair for the LSTM).

:func:`scratch_to_builtin_tensors` maps scratch parameters onto torch's layout, so a model trained
with the book's code can be loaded into the fast cuDNN layers.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from .config import between_layers

# The gates in torch's row order, named by the suffix of the matching scratch parameters:
# torch's GRU "n" (new) gate is the book's candidate H_tilde (W_xh, W_hh, b_h), and
# torch's LSTM "g" gate is the book's candidate memory C_tilde (W_xc, W_hc, b_c).
TORCH_GATE_ORDER = {"rnn": ("h",), "gru": ("r", "z", "h"), "lstm": ("i", "f", "c", "o")}


def builtin_layers(cell: str, num_inputs: int, num_hiddens: int, *, num_layers: int = 1,
                   bidirectional: bool = False, dropout: float = 0.0,
                   activation: str = "tanh") -> nn.RNNBase:
    """A time-major ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM`` with the given options.

    The GRU is always torch's reset-after form (see :class:`~charlm.models.scratch.GRUScratch`).
    """
    # torch warns when dropout is set on a single layer, where it has nothing to act on.
    options = {"num_layers": num_layers, "bidirectional": bidirectional,
               "dropout": between_layers(dropout, num_layers)}
    if cell == "rnn":
        return nn.RNN(num_inputs, num_hiddens, nonlinearity=activation, **options)
    if cell == "gru":
        return nn.GRU(num_inputs, num_hiddens, **options)
    if cell == "lstm":
        return nn.LSTM(num_inputs, num_hiddens, **options)
    raise ValueError(f"cell must be one of rnn, gru, lstm, got {cell!r}")


def _hidden_bias(tensors: Mapping[str, Tensor], prefix: str, cell: str, bias_ih: Tensor) -> Tensor:
    """torch's ``bias_hh``: zero, since the scratch cells fold it into ``b_?``, except for the
    GRU candidate's bias inside the reset product, which only the reset-after form has."""
    bias_hh = torch.zeros_like(bias_ih)
    if cell != "gru":
        return bias_hh
    if prefix + "b_hh" not in tensors:
        raise ValueError("the book's GRU (reset_after=False) has no torch.nn.GRU equivalent; "
                         "build the scratch GRU with reset_after=True")
    num_hiddens = bias_ih.shape[0] // 3
    bias_hh[2 * num_hiddens:] = tensors[prefix + "b_hh"]
    return bias_hh


def scratch_to_builtin_tensors(tensors: Mapping[str, Tensor], cell: str, num_layers: int,
                               bidirectional: bool) -> dict[str, Tensor]:
    """Map a :class:`~charlm.models.scratch.StackedScratch` state dict onto ``nn.RNNBase`` names.

    ``layers.{k}.W_x? (num_inputs, H)`` for each gate, transposed and stacked in torch's gate order,
    becomes ``weight_ih_l{k} (gates * H, num_inputs)``; likewise ``W_h?`` -> ``weight_hh_l{k}`` and
    ``b_?`` -> ``bias_ih_l{k}``; ``layers_reverse`` becomes the ``_reverse`` suffix. Example for a
    one-layer RNN: ``{"layers.0.W_xh", "layers.0.W_hh", "layers.0.b_h"} ->
    {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"}``.
    """
    gates = TORCH_GATE_ORDER[cell]
    directions = [("layers", "")] + ([("layers_reverse", "_reverse")] if bidirectional else [])
    out = {}
    for k in range(num_layers):
        for scratch_name, suffix in directions:
            prefix = f"{scratch_name}.{k}."
            bias_ih = torch.cat([tensors[f"{prefix}b_{g}"] for g in gates])
            out[f"weight_ih_l{k}{suffix}"] = torch.cat([tensors[f"{prefix}W_x{g}"].T for g in gates])
            out[f"weight_hh_l{k}{suffix}"] = torch.cat([tensors[f"{prefix}W_h{g}"].T for g in gates])
            out[f"bias_ih_l{k}{suffix}"] = bias_ih
            out[f"bias_hh_l{k}{suffix}"] = _hidden_bias(tensors, prefix, cell, bias_ih)
    return out
