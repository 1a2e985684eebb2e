"""A run as an ONNX graph: ``(ids (B, T) int64, state) -> (logits (B, T, V), state)``, for runtimes
other than torch (onnxruntime, the browser's onnxruntime-web). The state is explicit, so a caller
steps the model one token at a time as generation does: the inputs ``h0`` (and ``c0`` for the LSTM),
``(num_layers, B, H)``, zeros to start from, and the outputs ``hn`` (and ``cn``) to feed back.

A run on charlm's scratch kernels is exported through its torch.nn twin (the same weights in
torch.nn's layout), whose RNN, GRU and LSTM operators ONNX has; the book's GRU (reset gate before
the product) has none, and is refused. tests/test_export.py holds the logits to torch's within 1e-4
through onnxruntime.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ..checkpoint import Run
from ..models import RNNLM
from ..models.config import FROM_SCRATCH
from ..models.lm import copy_scratch_to_builtin

__all__ = ["onnx_model", "write_onnx"]

OPSET = 17


def onnx_model(run: Run) -> RNNLM:
    """The run's model on torch.nn (its twin for a scratch run), in eval mode, on the CPU."""
    model = run.model
    if model.config.impl not in FROM_SCRATCH:
        return model.cpu().eval()
    if model.config.cell == "gru" and not model.config.reset_after:
        raise ValueError(f"{run.path}: the book's GRU (reset gate before the hidden product) has no ONNX "
                         "operator; a run trained with --gru-reset-after exports")
    twin = RNNLM(model.config.replace(impl="builtin", gru_reset_after=True if model.config.cell == "gru"
                                      else model.config.gru_reset_after))
    copy_scratch_to_builtin(model.cpu(), twin)
    return twin.eval()


class _Stepper(nn.Module):
    """forward(ids, h0[, c0]) -> (logits, hn[, cn]): the state as plain tensors, as ONNX wants it."""

    def __init__(self, model: RNNLM) -> None:
        super().__init__()
        self.model, self.lstm = model, model.config.cell == "lstm"

    def forward(self, ids: Tensor, h0: Tensor, c0: Tensor | None = None):
        logits, state = self.model(ids, (h0, c0) if self.lstm else h0, check=False)
        return (logits, *state) if self.lstm else (logits, state)


def write_onnx(run: Run, out: Path) -> None:
    try:
        import onnx  # noqa: F401  (torch.onnx writes the graph with it)
    except ImportError:
        raise ValueError(f"{out}: writing ONNX needs the onnx package: pip install onnx "
                         "(or charlm[onnx])") from None
    model = onnx_model(run)
    c = model.config
    lstm = c.cell == "lstm"
    ids = torch.zeros(1, 4, dtype=torch.long)
    h0 = torch.zeros(c.num_layers, 1, c.num_hiddens)
    names_in = ["ids", "h0", *(["c0"] if lstm else [])]
    names_out = ["logits", "hn", *(["cn"] if lstm else [])]
    axes = {"ids": {0: "batch", 1: "steps"}, "logits": {0: "batch", 1: "steps"},
            **{n: {1: "batch"} for n in names_in[1:] + names_out[1:]}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own future, not the user's concern
        torch.onnx.export(_Stepper(model), (ids, h0, *((h0.clone(),) if lstm else ())), str(out),
                          input_names=names_in, output_names=names_out, dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False)
