"""Fine-tuning: a new run that starts from a trained run's weights and vocabulary (``--init-from RUN``).

The model keeps the run's shape, so its weights mean what they meant; the optimizer, the schedule
and the step count start fresh. Which settings come from the run, and which from the user::

    the model's shape (cell, impl, sizes, ...)   the run's; a different value given is an error
    the model's regularisers (dropouts, ...)     the user's where given, else the run's
    how text becomes tokens (clean, token, eos,  the user's where given, else the run's; a different
      max_tokens) and what the model reads       token kind is an error (the vocabulary cannot read it)
      before it (preamble)
    everything else (lr, epochs, corpus, ...)    the user's, as in any run

Characters of the new text that the run's vocabulary lacks become ``<unk>`` by default: every weight
keeps its meaning, nothing is added that has not been trained, and a note says how many there were.
With ``--extend-vocab`` they get rows of their own instead (:func:`grow`), fresh weights that only
the new text trains: worth it when the new text has many of them (another alphabet, an accented
language after an English run). ``--extend-min-count N`` gives rows only to those the text holds at
least N times; the auto recipe starting from charlm's English model does that by itself (auto.py, rule 7).
"""

from __future__ import annotations

import logging

import torch

from ..checkpoint import Run
from ..config import TrainConfig
from ..data.vocab import Vocab, check_coverage
from ..fields import flag, to_flat
from ..models import RNNLM, ModelConfig

log = logging.getLogger(__name__)

# What fixes the shape of the weights, or how many there are: these cannot change.
SHAPE = ("vocab_size", "cell", "impl", "num_hiddens", "num_layers", "embedding", "activation",
         "bidirectional", "gru_reset_after", "tie_weights")
TEXT = ("clean", "token", "eos", "max_tokens", "preamble")


def inherit(config: TrainConfig, run: Run, given: set[str] | None = None) -> TrainConfig:
    """`config` with what it takes from `run` (see the module docstring). `given` names the settings
    the user chose; by default, those that differ from the defaults."""
    mine, base = to_flat(config), to_flat(run.config or TrainConfig(model=run.model.config))
    base["vocab_size"] = run.model.config.vocab_size
    defaults = to_flat(TrainConfig())
    given = given if given is not None else {k for k, v in mine.items() if v != defaults[k]}
    changes = {}
    for name in (*[f for f in base if f in _model_fields()], *TEXT):
        if name not in given:
            changes[name] = base[name]
        elif name in SHAPE and mine[name] != base[name]:
            raise ValueError(f"{flag(name)} {mine[name]}: --init-from {run.path} has {base[name]}; "
                             f"fine-tuning keeps the run's model, so its shape cannot change")
        elif name == "token" and mine[name] != base[name]:
            raise ValueError(f"--token {mine[name]}: --init-from {run.path} reads {base[name]} tokens, and "
                             f"its vocabulary cannot read {mine[name]} tokens")
    return config.replace(**changes)


def _model_fields() -> set[str]:
    return set(ModelConfig.__dataclass_fields__)


def note_unknown(num_unknown: int, num_tokens: int, run: Run, text: str) -> None:
    """Say how much of the new text the run's vocabulary does not cover; a text in a script the run
    never saw is an error (check_coverage)."""
    check_coverage(num_unknown, num_tokens, run.token, text, str(run.path),
                   "train it from scratch, or give --extend-vocab to add its characters")
    if num_unknown:
        log.warning("%d of %d tokens of the new text are not in the vocabulary of %s and count as <unk>",
                    num_unknown, num_tokens, run.path)


def extended_vocab(run: Run, text_vocab: Vocab, min_count: int = 1) -> Vocab:
    """The run's vocabulary with the new text's tokens that it lacks appended, those the text holds
    at least `min_count` times (see :meth:`Vocab.extended`); says how many there are, and how many
    rarer ones stay <unk>."""
    vocab = run.vocab.extended(text_vocab, min_count)
    if len(vocab) > len(run.vocab):
        added = vocab.idx_to_token[len(run.vocab):]
        log.info("%d tokens of the new text get rows of their own (--extend-vocab): %s", len(added),
                 " ".join(repr(t) for t in added[:20]))
    rare = len(run.vocab.unknown(text_vocab.idx_to_token[1:])) - (len(vocab) - len(run.vocab))
    if rare:
        log.info("%d tokens of the new text that occur fewer than %d times count as <unk> "
                 "(--extend-min-count)", rare, min_count)
    return vocab


def grow(model: RNNLM, vocab_size: int, seed: int) -> RNNLM:
    """`model` for a vocabulary of `vocab_size` tokens, the first ones being its own.

    Every tensor with the vocabulary on an axis (the embedding or one-hot input weights, the output
    layer) grows on that axis: the old values fill the leading block, the new rows are initialised as
    in any new model of this config (seeded by `seed`), so the model computes what it did for every
    text of the old tokens except that the softmax now also spreads over the new ones."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bigger = RNNLM(model.config.replace(vocab_size=vocab_size))
    tensors = bigger.state_dict()
    with torch.no_grad():
        for name, old in model.state_dict().items():
            tensors[name][tuple(slice(0, n) for n in old.shape)] = old
    bigger.load_state_dict(tensors)
    return bigger
