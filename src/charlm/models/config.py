"""ModelConfig: the one description of a model, from which :class:`~charlm.models.lm.RNNLM` is built.

Training holds one (``TrainConfig.model``), a run folder saves one beside the weights, and the
compressor's settings hold one for its online network. Each field carries its help text; the
command line makes a flag of it (``num_hiddens`` -> ``--num-hiddens``), and each rule about a value
is checked here, once. The defaults are the book's RNN (d2l §8.5): one layer of 512 tanh units on
one-hot inputs, its own equations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..fields import at_least, boolean, check_known, check_types, choice, flag, fraction, number, setting
from .scratch import ACTIVATIONS, CELLS

# "scratch": the book's parameters and equations, computed fast (fused products, hand-written BPTT);
# "book": the same parameters in the book's step-by-step loop; "builtin": torch.nn.RNN/GRU/LSTM.
IMPLS = ("scratch", "book", "builtin")
FROM_SCRATCH = ("scratch", "book")
INITS = ("default", "normal")


def between_layers(dropout: float, num_layers: int) -> float:
    """The dropout between recurrent layers, which one layer has nowhere to put: the rule that
    --dropout needs --num-layers 2 (an error in :class:`ModelConfig`), for code that builds a model."""
    return dropout if num_layers > 1 else 0.0


@dataclass
class ModelConfig:
    """Everything needed to rebuild an :class:`RNNLM`; saved beside the weights as JSON.

    ``vocab_size`` is None until the data is known: training sets it from the vocabulary."""

    vocab_size: int | None = setting(None, "tokens in the vocabulary (set from the data)", cli=False)
    num_hiddens: int = setting(512, "hidden units per layer")
    cell: str = setting("rnn", "recurrent cell: rnn, gru or lstm")
    impl: str = setting("scratch", "scratch (the book's equations, fast), book (the book's step-by-step "
                        "loop) or builtin (torch.nn)")
    num_layers: int = setting(1, "stacked recurrent layers (d2l §9.3)")
    embedding: int | None = setting(None, "learned embedding width; omit for one-hot input (the book's)",
                                    shown="one-hot")
    activation: str = setting("tanh", "RNN activation: tanh or relu")
    dropout: float = setting(0.0, "dropout between recurrent layers, in [0, 1); needs --num-layers 2 or more")
    # A bidirectional model sees the token it predicts (d2l §9.4): it cannot generate, and trained as
    # a language model its loss would mean nothing. API only.
    bidirectional: bool = setting(False, "read the sequence in both directions (cannot generate)", cli=False)
    # None = each impl's own form: the book's (False) for scratch, torch's (True) for builtin, which
    # cannot compute the book's form; `reset_after` resolves it. Kept unresolved, so that a config
    # derived with another cell or impl gets that one's form.
    gru_reset_after: bool | None = setting(
        None, "GRU: apply the reset gate after the hidden-to-hidden product (torch.nn's form); "
        "--no-gru-reset-after is the book's; default: the book's for scratch, torch's for builtin",
        shown="per --impl")
    # Jozefowicz, Zaremba & Sutskever (2015): a forget-gate bias of 1 keeps the cell's memory open
    # early in training, when the gate would otherwise forget half of it at every step.
    forget_bias: float = setting(0.0, "LSTM: the forget gate's initial bias; 1 keeps memories from the first "
                                 "step (Jozefowicz et al. 2015); 0 = the book's initialisation")
    init: str = setting("default", "builtin weights: default (torch.nn's) or normal (N(0, 0.01^2), zero "
                        "biases, as the scratch models); scratch is always normal")
    # Regularisation (models/regularize.py); all off by default, which is the book's model. Every
    # dropout acts in training mode only.
    dropout_input: float = setting(0.0, "dropout on the first layer's inputs (embeddings or one-hot rows), "
                                   "in [0, 1)")
    dropout_output: float = setting(0.0, "dropout on the top layer's outputs, before the output layer, "
                                    "in [0, 1)")
    dropout_embedding: float = setting(0.0, "probability of dropping a whole embedding row (a token type) "
                                       "per batch, in [0, 1); needs --embedding (AWD-LSTM)")
    locked_dropout: bool = setting(False, "variational dropout: --dropout-input, --dropout and "
                                   "--dropout-output keep one mask per sequence for all time steps "
                                   "(Gal & Ghahramani 2016)")
    weight_drop: float = setting(0.0, "DropConnect on the hidden-to-hidden weights, a fresh mask per batch, "
                                 "in [0, 1) (AWD-LSTM)")
    tie_weights: bool = setting(False, "share the embedding matrix with the output layer (Press & Wolf "
                                "2017); needs --embedding equal to --num-hiddens")

    def __post_init__(self) -> None:
        check_types(self)
        if self.vocab_size is not None:
            at_least("vocab_size", self.vocab_size, 1)
        at_least("num_hiddens", self.num_hiddens, 1)
        at_least("num_layers", self.num_layers, 1)
        if self.embedding is not None:
            at_least("embedding", self.embedding, 1)
        choice("cell", self.cell, CELLS)
        choice("impl", self.impl, IMPLS)
        choice("activation", self.activation, tuple(ACTIVATIONS))
        choice("init", self.init, INITS)
        if self.activation != "tanh" and self.cell != "rnn":
            raise ValueError(f"--activation {self.activation} applies only to --cell rnn, "
                             f"got --cell {self.cell}")
        boolean("bidirectional", self.bidirectional)
        if number("forget_bias", self.forget_bias) != 0 and self.cell != "lstm":
            raise ValueError(f"--forget-bias applies only to --cell lstm, got --cell {self.cell}")
        self._check_dropout()
        self._check_reset_after()

    def _check_dropout(self) -> None:
        for name in ("dropout", "dropout_input", "dropout_output", "dropout_embedding", "weight_drop"):
            fraction(name, getattr(self, name))
        boolean("locked_dropout", self.locked_dropout)
        boolean("tie_weights", self.tie_weights)
        if self.dropout > 0 and self.num_layers < 2:
            raise ValueError(f"--dropout acts between recurrent layers and needs --num-layers 2 or more, "
                             f"got --dropout {self.dropout} with --num-layers {self.num_layers}")
        if self.dropout_embedding > 0 and self.embedding is None:
            raise ValueError("--dropout-embedding drops rows of the embedding matrix and needs --embedding")
        width = self.num_hiddens * self.num_directions
        if self.tie_weights and self.embedding != width:
            raise ValueError(f"--tie-weights shares the embedding matrix with the output layer and needs "
                             f"--embedding equal to --num-hiddens"
                             f"{' x 2 directions' if self.bidirectional else ''} ({width}), "
                             f"got {self.embedding}")

    def _check_reset_after(self) -> None:
        value = self.gru_reset_after
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{flag('gru_reset_after')} must be true, false or unset, got {value!r}")
        if value and self.cell != "gru":
            raise ValueError(f"--gru-reset-after applies only to --cell gru, got --cell {self.cell}")
        if value is False and self.cell == "gru" and self.impl == "builtin":
            raise ValueError("--no-gru-reset-after (the book's GRU) is not available with --impl builtin: "
                             "torch.nn.GRU applies the reset gate after the hidden product")

    @property
    def reset_after(self) -> bool:
        """Whether the GRU applies its reset gate after the hidden product (False for other cells)."""
        if self.cell != "gru":
            return False
        return self.impl == "builtin" if self.gru_reset_after is None else self.gru_reset_after

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Rebuild from :meth:`to_dict`'s output, refusing keys this version does not know."""
        check_known(cls, data, "ModelConfig keys")
        missing = sorted(name for name in ("vocab_size", "num_hiddens") if name not in data)
        if missing:
            raise ValueError(f"ModelConfig is missing required keys {missing}")
        return cls(**data)
