"""Regularisers for recurrent language models trained on little data, and where each one acts.

Every option is a field of :class:`~charlm.models.lm.ModelConfig` and acts in training mode only;
in ``eval()`` the model is the same function as one with all of them at 0. Inside the model the
tensors are time-major, ``(T, B, features)``::

    ids (T, B) --embedding--> X (T, B, E) --layer 0--> ... --layer L-1--> outputs (T, B, D*H) --> logits
               ^              ^            ^         ^                  ^                       ^
               |              |            |         dropout            dropout_output          tie_weights
               |              |            weight_drop (each layer's hidden-to-hidden weights)
               |              dropout_input (also on one-hot inputs)
               dropout_embedding (whole rows of the embedding matrix)

* ``dropout_input``, ``dropout`` (between layers), ``dropout_output``: standard dropout (Srivastava
  et al. 2014) on the inputs of the first layer, of every later layer, and of the output layer
  (Zaremba et al. 2014 place dropout on exactly these non-recurrent connections).
* ``locked_dropout``: those three draw one mask per sequence, shape ``(1, B, features)``, and reuse
  it at every time step: variational dropout (Gal & Ghahramani 2016, §4), which drops the same
  units all along the sequence instead of fresh noise at each step.
* ``dropout_embedding``: drops whole rows (token types) of the embedding matrix, so a dropped token
  is absent everywhere it occurs in the batch (Gal & Ghahramani 2016, §4.1; AWD-LSTM, Merity et al.
  2018, §4.3).
* ``weight_drop``: DropConnect (Wan et al. 2013) on the hidden-to-hidden weights, a fresh mask
  each forward call, shared by every time step (AWD-LSTM's WeightDrop, Merity et al. 2018, §2). The
  recurrence itself stays untouched, so the fast kernels still run it.
* ``tie_weights``: the output layer uses the embedding matrix (Press & Wolf 2017; Inan et al. 2017):
  one tensor, and one entry in the state dict.

Randomness comes from torch's global generator, which the trainer seeds (``--seed``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn
from torch.func import functional_call

State = Tensor | tuple[Tensor, Tensor]


def dropout(X: Tensor, p: float, training: bool, locked: bool = False) -> Tensor:
    """Dropout of ``X (T, B, features)``, scaled by ``1 / (1 - p)``; ``X`` itself outside training.

    ``locked=True`` draws one mask ``(1, B, features)`` for all ``T`` steps (Gal & Ghahramani 2016):
    an all-ones ``X`` comes back with the same zeros at every step, different in each batch row.
    """
    if not training or p == 0:
        return X
    if not locked:
        return nnf.dropout(X, p, True)
    mask = X.new_empty((1, *X.shape[1:])).bernoulli_(1 - p).div_(1 - p)  # (1, B, F): broadcast over T
    return X * mask


def embedding_dropout(weight: Tensor, p: float, training: bool) -> Tensor:
    """The embedding matrix ``(V, E)`` with whole rows (token types) zeroed with probability ``p``,
    the others scaled by ``1 / (1 - p)`` (Merity et al. 2018, §4.3); ``weight`` itself outside training."""
    if not training or p == 0:
        return weight
    mask = weight.new_empty((weight.shape[0], 1)).bernoulli_(1 - p).div_(1 - p)  # (V, 1): one draw per row
    return weight * mask


def drop_connect(weight: Tensor, p: float) -> Tensor:
    """``weight * mask / (1 - p)``, a new tensor with a fresh Bernoulli mask (Wan et al. 2013).
    Gradients reach ``weight`` through it, zero where the mask dropped an entry."""
    return weight if p == 0 else nnf.dropout(weight, p, True)


def hidden_weight_names(module: nn.Module) -> list[str]:
    """The hidden-to-hidden weights of a layer: ``W_h?`` of a scratch cell (``W_hh``, ``W_hz``, ...),
    ``weight_hh_l*`` of a ``torch.nn`` RNN; never input weights or biases."""
    names = [name for name, _ in module.named_parameters(recurse=False)]
    return [name for name in names if name.startswith(("W_h", "weight_hh"))]


def call_with_weight_drop(module: nn.Module, p: float, *args: Any) -> Any:
    """``module(*args)`` with DropConnect on its hidden-to-hidden weights for this call only.

    The masked weights stand in for the parameters through ``torch.func.functional_call``, so the
    module's own code (the book's loop or the fused form, which packs them) runs unchanged, and the
    parameters stay as they are; one mask per weight, drawn in the order of :func:`hidden_weight_names`.
    """
    weights = {name: drop_connect(getattr(module, name), p) for name in hidden_weight_names(module)}
    return functional_call(module, weights, args)


def _one_layer(core: nn.RNNBase, layer: int) -> nn.RNNBase:
    """A one-layer module like layer `layer` of `core`, with parameters on the meta device: a frame
    that :func:`builtin_forward` fills with that layer's tensors through ``functional_call``. Kept in
    the core's ``__dict__`` (not a submodule: no state-dict entries), as building one costs ~0.4 ms."""
    frames = core.__dict__.setdefault("_one_layer_frames", {})
    if layer not in frames:
        input_size = core.input_size if layer == 0 else core.hidden_size * (2 if core.bidirectional else 1)
        options = {"nonlinearity": core.nonlinearity} if isinstance(core, nn.RNN) else {}
        frames[layer] = type(core)(input_size, core.hidden_size, bidirectional=core.bidirectional,
                                   device="meta", **options)
    return frames[layer]


def builtin_forward(core: nn.RNNBase, X: Tensor, state: State, *, dropout_p: float, locked: bool,
                    weight_drop: float) -> tuple[Tensor, State]:
    """Training forward of a ``torch.nn.RNN/GRU/LSTM`` one layer at a time, for what its fused call
    cannot do: one dropout mask between layers for the whole sequence (its own dropout draws a new
    one at every step) and DropConnect on ``weight_hh_l*``. Same shapes and parameters as ``core(X, state)``,
    which it equals with ``dropout_p = weight_drop = 0``.
    """
    D = 2 if core.bidirectional else 1
    suffixes = ["", "_reverse"][:D]
    finals = []
    for k in range(core.num_layers):
        if k > 0:
            X = dropout(X, dropout_p, True, locked)
        layer = _one_layer(core, k)
        weights = {}
        for sfx in suffixes:
            for kind in ("weight_ih", "bias_ih", "bias_hh"):
                weights[f"{kind}_l0{sfx}"] = getattr(core, f"{kind}_l{k}{sfx}")
            weights[f"weight_hh_l0{sfx}"] = drop_connect(getattr(core, f"weight_hh_l{k}{sfx}"), weight_drop)
        rows = slice(k * D, (k + 1) * D)  # this layer's rows of the (L * D, B, H) state
        start = tuple(s[rows] for s in state) if isinstance(state, tuple) else state[rows]
        X, end = functional_call(layer, weights, (X, start))
        finals.append(end)
    if isinstance(state, tuple):
        return X, (torch.cat([H for H, _ in finals]), torch.cat([C for _, C in finals]))
    return X, torch.cat(finals)


# Weight tying for torch.nn.Linear: output.weight *is* embedding.weight, so the state dict would list
# the tensor twice, and safetensors refuses tensors that share memory. These hooks keep one entry,
# "embedding.weight", and give "output.weight" back to load_state_dict (which needs every name).
def drop_tied_output(module: nn.Module, state_dict: dict[str, Tensor], prefix: str, *_: Any) -> None:
    state_dict.pop(prefix + "output.weight", None)


def restore_tied_output(module: nn.Module, state_dict: dict[str, Tensor], prefix: str, *_: Any) -> None:
    if prefix + "embedding.weight" in state_dict:
        state_dict.setdefault(prefix + "output.weight", state_dict[prefix + "embedding.weight"])


def register_tied_output_hooks(model: nn.Module) -> None:
    # register_state_dict_post_hook is recent torch's public name; older ones (the project allows 2.1)
    # have only the private hook, which behaves alike for edits made in place.
    post_hook = getattr(model, "register_state_dict_post_hook", None) or model._register_state_dict_hook
    post_hook(drop_tied_output)
    model.register_load_state_dict_pre_hook(restore_tied_output)

