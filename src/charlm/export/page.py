"""A run as one web page that writes with it: the weights inside the page, and a small JavaScript
implementation of its cell (page.js) that runs them, so Write works from a file, offline.

The weights are stored exactly (float32, base64) in each cell's fused layout, the one the scratch
kernels use (``fused_weights``: the gates side by side), whatever the run's implementation; the
first layer's input products are tabled per token (``P0 = E W_x + b``: one row per token, which a
one-hot input or an embedding reads alike), so a step of the first layer reads a row instead of a
product. The page's greedy text is ``charlm generate --greedy``'s (tests/test_export.py runs both).
Its policy lets it run its one script (by hash) and load nothing.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor, nn

from ..checkpoint import Run
from ..models import RNNLM
from ..models.config import FROM_SCRATCH

__all__ = ["model_data", "page_html", "write_page"]


def _b64(tensor: Tensor) -> str:
    return base64.b64encode(tensor.detach().float().contiguous().numpy().tobytes()).decode("ascii")


def _builtin_layer(core: nn.RNNBase, cell: str, layer: int) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """torch.nn's weights of one layer in the fused layout (W_x (in, G*H), b, W_h, extra)."""
    W_ih, W_hh = getattr(core, f"weight_ih_l{layer}"), getattr(core, f"weight_hh_l{layer}")
    b_ih, b_hh = getattr(core, f"bias_ih_l{layer}"), getattr(core, f"bias_hh_l{layer}")
    if cell != "gru":  # RNN and LSTM (gates i, f, g, o): both biases are simply added
        return W_ih.T, b_ih + b_hh, W_hh.T, None
    H = core.hidden_size
    r, z, n = (slice(k * H, (k + 1) * H) for k in range(3))  # torch's order; the fused one is z, r, n
    W_x = torch.cat([W_ih[z], W_ih[r], W_ih[n]]).T
    b = torch.cat([b_ih[z] + b_hh[z], b_ih[r] + b_hh[r], b_ih[n]])
    W_h = torch.cat([W_hh[z], W_hh[r], W_hh[n]]).T
    return W_x, b, W_h, b_hh[n]  # b_hn sits inside the reset gate's product


def _layers(model: RNNLM) -> list[tuple[Tensor, Tensor, Tensor, Tensor | None]]:
    c = model.config
    if isinstance(model.core, nn.RNNBase):
        return [_builtin_layer(model.core, c.cell, layer) for layer in range(c.num_layers)]
    return [tuple(cell.fused_weights()) for cell in model.core.layers]


def model_data(run: Run) -> dict:
    """What the page's script reads: the config, the vocabulary and the weights (base64 float32)."""
    model, c = run.model, run.model.config
    with torch.no_grad():
        layers = _layers(model)
        W_x0, b0 = layers[0][0], layers[0][1]
        inputs = model.embedding.weight if model.embedding is not None else torch.eye(c.vocab_size)
        P0 = inputs @ W_x0 + b0  # (V, G*H): the first layer's input product for every token
        W_out, b_out = (model.W_hq, model.b_q) if c.impl in FROM_SCRATCH else (model.output.weight.T,
                                                                              model.output.bias)
        reset_after = c.cell == "gru" and layers[0][3] is not None and layers[0][3].dim() == 1
        return {
            "format": "charlm-page-model", "version": 1,
            "config": {"cell": c.cell, "hidden": c.num_hiddens, "layers": c.num_layers, "vocab": c.vocab_size,
                       "activation": c.activation, "reset_after": reset_after},
            "vocab": run.vocab.idx_to_token, "prefix": run.prefix, "name": run.path.name,
            # read before the prefix, as charlm reads it (RNNLM.begin_state)
            "preamble": [] if model.preamble is None else [int(i) for i in model.preamble],
            "P0": _b64(P0), "W_out": _b64(W_out), "b_out": _b64(b_out),
            "layers": [{"W_x": _b64(W_x) if k else None, "b": _b64(b) if k else None, "W_h": _b64(W_h),
                        "extra": None if extra is None else _b64(extra)}
                       for k, (W_x, b, W_h, extra) in enumerate(layers)],
        }


def page_html(run: Run) -> str:
    """The page: the template, the model's data as JSON, and the script, allowed by its hash."""
    folder = resources.files("charlm.export")
    script = folder.joinpath("page.js").read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    policy = f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'"
    data = json.dumps(model_data(run), ensure_ascii=True).replace("</", "<\\/")  # no "</script>" inside
    c = run.model.config
    title = f"{run.path.name}: a {c.num_layers} x {c.num_hiddens} {c.cell.upper()} writing in your browser"
    values = {"POLICY": html.escape(policy), "TITLE": html.escape(title), "PREFIX": html.escape(run.prefix),
              "MODEL": data, "SCRIPT": script}
    template = folder.joinpath("page.html").read_text(encoding="utf-8")
    # one pass over the template: nothing inserted is searched again
    return re.sub(r"\{\{([A-Z]+)\}\}", lambda m: values[m.group(1)], template)


def write_page(run: Run, out: Path) -> None:
    out.write_text(page_html(run), encoding="utf-8")
