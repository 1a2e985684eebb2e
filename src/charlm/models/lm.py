"""The recurrent language model: encode tokens, run a recurrent core, project to the vocabulary.

One model interface for every cell and implementation (d2l §8.5 from scratch, §8.6 concise)::

    inputs (B, T) --encode--> X (T, B, V|E) --core--> outputs (T, B, D*H) --output--> logits (B, T, V)
                              one-hot or              scratch layers or               W_hq, b_q or
                              nn.Embedding            torch.nn.RNN/GRU/LSTM           nn.Linear

``B`` batch size, ``T`` num_steps, ``V`` vocab_size, ``E`` embedding width, ``H`` num_hiddens and
``D`` the number of directions. The state is laid out as in ``torch.nn`` for both cores. The
regularisers (dropout in four places, locked masks, DropConnect, tied weights) act on this path as
drawn in :mod:`.regularize`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from . import regularize
from .builtin import builtin_layers, scratch_to_builtin_tensors
from .scratch import ACTIVATIONS, CELLS, StackedScratch, State

# "scratch": the book's parameters and equations, computed fast (fused products, hand-written BPTT);
# "book": the same parameters in the book's step-by-step loop; "builtin": torch.nn.RNN/GRU/LSTM.
IMPLS = ("scratch", "book", "builtin")
FROM_SCRATCH = ("scratch", "book")

# Wrong types raise ValueError too (ruff TRY004 prefers TypeError): callers such as the CLI and the
# checkpoint loader then catch one exception type for every bad value a user can supply.


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")  # noqa: TRY004
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")  # noqa: TRY004


def _check_probability(name: str, value: Any) -> None:
    # 1 is excluded: it would drop everything, and the survivors' scale 1 / (1 - p) is infinite.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")  # noqa: TRY004
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


@dataclass
class ModelConfig:
    """Everything needed to rebuild an :class:`RNNLM`; saved beside the weights as JSON."""

    vocab_size: int
    num_hiddens: int
    cell: str = "rnn"  # "rnn" | "gru" | "lstm"
    impl: str = "scratch"  # "scratch" (the book's equations, fast) | "book" (its loop) | "builtin" (torch.nn)
    num_layers: int = 1  # stacked recurrent layers (d2l §9.3)
    embedding: int | None = None  # None = one-hot inputs, as the book; an int = learned embedding width
    activation: str = "tanh"  # "tanh" | "relu"; RNN cells only
    dropout: float = 0.0  # between recurrent layers, so it needs num_layers >= 2
    bidirectional: bool = False  # sees the future: cannot generate text (d2l §9.4)
    # GRU only. None = each impl's own form: the book's (False) for scratch, torch's (True) for
    # builtin, which cannot compute the book's form. Resolved to a bool by __post_init__.
    gru_reset_after: bool | None = None
    # builtin only: "default" = torch.nn's own initialisation; "normal" = N(0, 0.01²) weights and
    # zero biases, as the scratch models and the MXNet edition's concise RNN. Scratch is always "normal".
    init: str = "default"
    # Regularisation (see regularize.py); all off by default, which is the book's model. Every
    # dropout acts in training mode only.
    dropout_input: float = 0.0  # on the first layer's inputs (embedding outputs or one-hot rows)
    dropout_output: float = 0.0  # on the top layer's outputs, before the output layer
    dropout_embedding: float = 0.0  # whole rows (token types) of the embedding; needs embedding
    locked_dropout: bool = False  # dropout_input, dropout and dropout_output: one mask per sequence
    weight_drop: float = 0.0  # DropConnect on the hidden-to-hidden weights, a fresh mask per call
    tie_weights: bool = False  # the output layer uses the embedding matrix; needs embedding = D * H

    def __post_init__(self) -> None:
        _check_int("vocab_size", self.vocab_size, 1)
        _check_int("num_hiddens", self.num_hiddens, 1)
        _check_int("num_layers", self.num_layers, 1)
        if self.embedding is not None:
            _check_int("embedding", self.embedding, 1)
        _check_choice("cell", self.cell, CELLS)
        _check_choice("impl", self.impl, IMPLS)
        _check_choice("activation", self.activation, tuple(ACTIVATIONS))
        _check_choice("init", self.init, ("default", "normal"))
        if self.activation != "tanh" and self.cell != "rnn":
            raise ValueError(f"activation={self.activation!r} applies only to cell='rnn', "
                             f"got cell={self.cell!r}")
        self._check_dropout()
        _check_bool("bidirectional", self.bidirectional)
        self._check_regularizers()
        self.gru_reset_after = self._resolve_reset_after()

    def _check_dropout(self) -> None:
        _check_probability("dropout", self.dropout)
        if self.dropout > 0 and self.num_layers < 2:
            raise ValueError(f"dropout acts between recurrent layers and needs num_layers >= 2, "
                             f"got dropout={self.dropout} with num_layers={self.num_layers}")

    def _check_regularizers(self) -> None:
        for name in ("dropout_input", "dropout_output", "dropout_embedding", "weight_drop"):
            _check_probability(name, getattr(self, name))
        _check_bool("locked_dropout", self.locked_dropout)
        _check_bool("tie_weights", self.tie_weights)
        if self.dropout_embedding > 0 and self.embedding is None:
            raise ValueError(f"dropout_embedding drops rows of the embedding matrix and needs an embedding, "
                             f"got dropout_embedding={self.dropout_embedding} with embedding=None")
        width = self.num_hiddens * self.num_directions
        if self.tie_weights and self.embedding != width:
            raise ValueError(f"tie_weights shares the embedding matrix with the output layer, so it needs "
                             f"embedding = num_hiddens x directions = {width}, "
                             f"got embedding={self.embedding}")

    def _resolve_reset_after(self) -> bool:
        value = self.gru_reset_after
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"gru_reset_after must be True, False or None, got {value!r}")
        if self.cell != "gru":
            if value:
                raise ValueError(f"gru_reset_after applies only to cell='gru', got cell={self.cell!r}")
            return False
        if value is False and self.impl == "builtin":
            raise ValueError("gru_reset_after=False (the book's GRU) is not available with impl='builtin': "
                             "torch.nn.GRU applies the reset gate after the hidden product")
        return self.impl == "builtin" if value is None else value

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Rebuild from :meth:`to_dict`'s output, refusing keys this version does not know."""
        check_known_fields(cls, data, "ModelConfig keys")
        missing = sorted(name for name in ("vocab_size", "num_hiddens") if name not in data)
        if missing:
            raise ValueError(f"ModelConfig is missing required keys {missing}")
        return cls(**data)


def check_known_fields(cls: type, data: Mapping[str, Any], label: str) -> None:
    """Refuse keys that `cls` (a dataclass) does not have: a file from a newer charlm, or a typo."""
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(f"unknown {label} {unknown}; known keys are {sorted(fields)}")


def _build_core(config: ModelConfig, num_inputs: int) -> nn.Module:
    options = {"num_layers": config.num_layers, "bidirectional": config.bidirectional,
               "dropout": config.dropout, "activation": config.activation}
    if config.impl in FROM_SCRATCH:
        return StackedScratch(config.cell, num_inputs, config.num_hiddens, reset_after=config.gru_reset_after,
                              fast=config.impl == "scratch", locked=config.locked_dropout,
                              weight_drop=config.weight_drop, **options)
    # torch.nn's own dropout between layers; the locked form and DropConnect run through
    # regularize.builtin_forward in training instead (RNNLM._run_core).
    return builtin_layers(config.cell, num_inputs, config.num_hiddens, **options)


class RNNLM(nn.Module):
    """A character- or word-level recurrent language model (d2l §8.5, §8.6, ch. 9).

    ``forward(inputs (B, T) int, state | None) -> (logits (B, T, vocab_size), state)`` where the
    logits are raw (no softmax) and the state is ``(num_layers * D, B, num_hiddens)``, or a pair
    ``(H, C)`` of such tensors for the LSTM, for either ``impl``.

    A bidirectional model reads the whole sequence in both directions, so its prediction at step
    ``t`` has seen token ``t + 1``, the very token it predicts: it is fit for scoring or tagging a
    known sequence but cannot generate text left to right; :attr:`can_generate` is False for it.

    Example::

        model = RNNLM(28, 256, cell="gru")
        logits, state = model(torch.zeros(32, 35, dtype=torch.long))  # (32, 35, 28), (1, 32, 256)
    """

    def __init__(self, vocab_size: int, num_hiddens: int, *, cell: str = "rnn", impl: str = "scratch",
                 num_layers: int = 1, embedding: int | None = None, activation: str = "tanh",
                 dropout: float = 0.0, bidirectional: bool = False,
                 gru_reset_after: bool | None = None, init: str = "default", dropout_input: float = 0.0,
                 dropout_output: float = 0.0, dropout_embedding: float = 0.0, locked_dropout: bool = False,
                 weight_drop: float = 0.0, tie_weights: bool = False) -> None:
        super().__init__()
        self.config = config = ModelConfig(
            vocab_size, num_hiddens, cell=cell, impl=impl, num_layers=num_layers, embedding=embedding,
            activation=activation, dropout=dropout, bidirectional=bidirectional,
            gru_reset_after=gru_reset_after, init=init, dropout_input=dropout_input,
            dropout_output=dropout_output, dropout_embedding=dropout_embedding,
            locked_dropout=locked_dropout, weight_drop=weight_drop, tie_weights=tie_weights)
        self.embedding = None if embedding is None else nn.Embedding(vocab_size, embedding)
        self.core = _build_core(config, vocab_size if embedding is None else embedding)
        num_features = num_hiddens * config.num_directions  # both directions feed the output layer
        # Tied weights (Press & Wolf 2017) are one tensor, initialised as the output layer's weights:
        # nn.Embedding's N(0, 1) as output weights makes the first logits large and the model
        # overconfident (a tied GRU on The Time Machine: validation perplexity 61 against 14).
        if impl in FROM_SCRATCH:  # the book's output layer, Y = H W_hq + b_q (§8.5.2)
            if not tie_weights:
                self.W_hq = nn.Parameter(torch.randn(num_features, vocab_size) * 0.01)
            else:  # W_hq is the embedding matrix transposed (see the property), with W_hq's init
                with torch.no_grad():
                    self.embedding.weight.normal_(0.0, 0.01)
            self.b_q = nn.Parameter(torch.zeros(vocab_size))
        else:
            self.output = nn.Linear(num_features, vocab_size)
            if tie_weights:  # one Parameter in both modules, saved once as "embedding.weight"
                self.embedding.weight = self.output.weight
                regularize.register_tied_output_hooks(self)
            if init == "normal":
                self._init_normal()

    @property
    def W_hq(self) -> Tensor:
        """The scratch output layer's weights ``(D * H, V)``: a parameter of their own, or with
        ``tie_weights`` the embedding matrix ``(V, E)`` transposed, a view of the one shared tensor."""
        if "W_hq" in self._parameters:
            return self._parameters["W_hq"]
        if self.config.tie_weights and self.config.impl in FROM_SCRATCH:
            return self.embedding.weight.T
        # AttributeError, as for any missing attribute (nn.Module.register_parameter relies on it).
        raise AttributeError(f"an RNNLM with impl={self.config.impl!r} has no W_hq; see its output layer")

    def _init_normal(self) -> None:
        """N(0, 0.01²) weights and zero biases for the recurrent core and the output layer."""
        with torch.no_grad():
            for name, param in [*self.core.named_parameters(), *self.output.named_parameters()]:
                if "bias" in name:
                    param.zero_()
                else:
                    param.normal_(0.0, 0.01)

    @classmethod
    def from_config(cls, config: ModelConfig) -> RNNLM:
        return cls(**config.to_dict())

    @property
    def can_generate(self) -> bool:
        """False for a bidirectional model, which needs the future to predict the present."""
        return not self.config.bidirectional

    def begin_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """Zeros ``(num_layers * D, batch_size, num_hiddens)`` (a pair for the LSTM), with the
        parameters' dtype, on ``device`` (default: the parameters' device)."""
        c = self.config
        param = next(self.parameters())
        zeros = param.new_zeros((c.num_layers * c.num_directions, batch_size, c.num_hiddens), device=device)
        return (zeros, zeros.clone()) if c.cell == "lstm" else zeros

    def forward(self, inputs: Tensor, state: State | None = None, *, check: bool = True
                ) -> tuple[Tensor, State]:
        """``check=False`` skips the checks of ``inputs`` and ``state``, for callers that made them:
        generation feeds back ids the model has just chosen, one token at a time, and the checks
        would cost as much as a step of a small model."""
        if check:
            self._check_inputs(inputs)
        batch_size = inputs.shape[0]
        state = self.begin_state(batch_size) if state is None else state
        if check:
            self._check_state(state, batch_size)
        c = self.config
        X = self._encode(inputs)  # (T, B, V or E), or ids (T, B) for the fast scratch core
        outputs, state = self._run_core(X, state)  # (T, B, D * H)
        outputs = regularize.dropout(outputs, c.dropout_output, self.training, c.locked_dropout)
        if c.impl in FROM_SCRATCH:
            W_hq, b_q = self.W_hq, self.b_q
        else:
            W_hq, b_q = self.output.weight.T, self.output.bias
        # Batch-first at the boundary: (T, B, .) -> (B, T, .). Whichever of the hidden states and the
        # logits is narrower is transposed (a copy in the product or in the loss); for a character
        # vocabulary that is the logits.
        if W_hq.shape[1] <= W_hq.shape[0]:
            T, B = outputs.shape[:2]
            logits = torch.addmm(b_q, outputs.reshape(T * B, -1), W_hq).view(T, B, -1)
            return logits.transpose(0, 1), state
        return outputs.transpose(0, 1) @ W_hq + b_q, state

    def _encode(self, inputs: Tensor) -> Tensor:
        c = self.config
        ids = inputs.T.long()  # (B, T) -> (T, B): the cores loop over time on the outer axis
        drop_inputs = self.training and c.dropout_input > 0
        if self.embedding is not None:
            weight = regularize.embedding_dropout(self.embedding.weight, c.dropout_embedding, self.training)
            X = nnf.embedding(ids, weight)  # (T, B, E)
        elif c.impl == "scratch" and not drop_inputs:
            return ids  # one-hot rows in effect: the fast cells gather rows of W_x instead
        else:  # dropout on one-hot rows needs them as numbers: a dropped entry removes the token
            dtype = next(self.parameters()).dtype
            X = nnf.one_hot(ids, c.vocab_size).to(dtype)  # (T, B, V), d2l §8.5.1
        return regularize.dropout(X, c.dropout_input, self.training, c.locked_dropout)

    def _run_core(self, X: Tensor, state: State) -> tuple[Tensor, State]:
        """The recurrent core; a builtin one runs layer by layer in training when it needs a locked
        mask between layers or DropConnect, which torch.nn's fused call cannot apply."""
        c = self.config
        by_layer = c.weight_drop > 0 or (c.locked_dropout and c.dropout > 0)
        if c.impl == "builtin" and self.training and by_layer:
            return regularize.builtin_forward(self.core, X, state, dropout_p=c.dropout,
                                              locked=c.locked_dropout, weight_drop=c.weight_drop)
        return self.core(X, state)

    def _check_inputs(self, inputs: Tensor) -> None:
        if not isinstance(inputs, Tensor):
            message = f"inputs must be a tensor of token ids, got {type(inputs).__name__}"
            raise ValueError(message)  # noqa: TRY004
        if inputs.dim() != 2 or inputs.numel() == 0:
            raise ValueError(f"inputs must have shape (batch_size, num_steps), both >= 1, "
                             f"got shape {tuple(inputs.shape)}")
        if inputs.dtype.is_floating_point or inputs.dtype.is_complex or inputs.dtype == torch.bool:
            raise ValueError(f"inputs must be integer token ids, got dtype {inputs.dtype}")
        low, high = (int(v) for v in torch.aminmax(inputs))
        if low < 0 or high >= self.config.vocab_size:
            raise ValueError(f"token ids must be in [0, vocab_size={self.config.vocab_size}), "
                             f"got ids from {low} to {high}")

    def _check_state(self, state: State, batch_size: int) -> None:
        c = self.config
        expected = (c.num_layers * c.num_directions, batch_size, c.num_hiddens)
        parts = state if isinstance(state, tuple) else (state,)
        ok = len(parts) == (2 if c.cell == "lstm" else 1) and all(
            isinstance(p, Tensor) and tuple(p.shape) == expected for p in parts)
        if not ok:
            kind = "a pair (H, C) of tensors" if c.cell == "lstm" else "one tensor"
            got = [tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__ for p in parts]
            raise ValueError(f"state must be {kind} of shape {expected} for cell={c.cell!r}, got {got}")


def detach_state(state: State) -> State:
    """Cut the graph behind a state, keeping its values and structure (truncated BPTT, d2l §8.7).

    A tensor gives a tensor, an LSTM pair ``(H, C)`` gives a pair.
    """
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


def scratch_to_builtin_state_dict(tensors: Mapping[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """Map a scratch :class:`RNNLM` state dict (or any dict keyed alike, such as gradients) onto the
    names of a builtin one: ``core.layers.*`` -> ``core.weight_*`` (see
    :func:`~charlm.models.builtin.scratch_to_builtin_tensors`), ``W_hq (D*H, V)`` ->
    ``output.weight (V, D*H)``, ``b_q`` -> ``output.bias``; the embedding is shared as is."""
    core = {name[len("core."):]: t for name, t in tensors.items() if name.startswith("core.")}
    mapped = scratch_to_builtin_tensors(core, config.cell, config.num_layers, config.bidirectional)
    out = {f"core.{name}": t for name, t in mapped.items()}
    out["output.bias"] = tensors["b_q"]
    if "W_hq" in tensors:  # absent with tie_weights: the output layer is the embedding
        out["output.weight"] = tensors["W_hq"].T
    if "embedding.weight" in tensors:
        out["embedding.weight"] = tensors["embedding.weight"]
    return out


def copy_scratch_to_builtin(scratch: RNNLM, builtin: RNNLM) -> None:
    """Load a scratch model's weights into a builtin model of the same configuration, in place.

    Afterwards both compute the same function (up to rounding); the scratch GRU must use
    ``gru_reset_after=True``, the only form ``torch.nn.GRU`` has.
    """
    if scratch.config.impl not in FROM_SCRATCH or builtin.config.impl != "builtin":
        raise ValueError("copy_scratch_to_builtin needs a scratch model and a builtin model, got "
                         f"impl={scratch.config.impl!r} and impl={builtin.config.impl!r}")
    if scratch.config.cell == "gru" and not scratch.config.gru_reset_after:
        raise ValueError("the book's GRU (gru_reset_after=False) has no torch.nn.GRU equivalent; "
                         "build the scratch model with gru_reset_after=True")
    expected = {**scratch.config.to_dict(), "impl": "builtin"}
    if builtin.config.to_dict() != expected:
        raise ValueError(f"the models' configurations differ: {scratch.config} vs {builtin.config}")
    with torch.no_grad():
        builtin.load_state_dict(scratch_to_builtin_state_dict(scratch.state_dict(), scratch.config))
