"""The training configuration: one typed dataclass whose fields the CLI mirrors as kebab-case flags.

The defaults are the book's headline setup (d2l §8.5): *The Time Machine*, letters-only lowercase
text, characters, the first 10,000 tokens, a from-scratch RNN with 512 hidden units, batch 32 x 35
steps, plain SGD with learning rate 1, gradient clipping at 1, 500 epochs, sequential partitioning.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from . import machine
from .batches import SAMPLING_MODES
from .machine import PRECISIONS
from .models.lm import IMPLS, check_known_fields
from .suggest import did_you_mean
from .text import CLEAN_MODES, TOKEN_KINDS

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "plateau", "cosine")

# A prefix the book uses for each corpus; other texts start from their own first tokens.
DEFAULT_PREFIXES = {"timemachine": "time traveller", "war-of-the-worlds": "the planet mars",
                    "jaychou-lyrics": "分开"}


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved in the run folder's config.json."""

    # data
    corpus: str = "timemachine"  # a corpus name (charlm corpora) or the path of a text file
    clean: str = "d2l"  # d2l | lower | lyrics | raw | lines (see text.py)
    token: str = "char"  # char | word
    max_tokens: int = 10_000  # the book keeps the first 10,000 tokens; -1 = all
    eos: bool = False  # word tokens: an <eos> after every line (PTB)
    encoding: str | None = None  # text encoding of a user file; None = UTF-8
    # model
    model: str = "rnn"  # rnn | gru | lstm
    impl: str = "scratch"  # scratch (the book's equations, fast) | book (its loop) | builtin (torch.nn)
    num_hiddens: int = 512
    num_layers: int = 1
    embedding: int | None = None  # None = one-hot input (the book's); else an embedding width
    activation: str = "tanh"  # rnn only: tanh | relu
    dropout: float = 0.0  # between recurrent layers
    # regularisation for small data (models/regularize.py); 0 / False = off, the book's model
    dropout_input: float = 0.0  # on the first layer's inputs (embedding outputs or one-hot rows)
    dropout_output: float = 0.0  # on the top layer's outputs, before the output layer
    dropout_embedding: float = 0.0  # whole rows (token types) of the embedding matrix; needs embedding
    locked_dropout: bool = False  # one dropout mask per sequence, reused at every step (Gal & Ghahramani)
    weight_drop: float = 0.0  # DropConnect on the hidden-to-hidden weights (AWD-LSTM)
    tie_weights: bool = False  # the output layer uses the embedding matrix; needs embedding = num_hiddens
    init: str = "default"  # builtin: default (torch.nn's) | normal (N(0, 0.01²), zero biases)
    # optimisation
    batch_size: int = 32
    num_steps: int = 35  # BPTT length in tokens
    sampling: str = "sequential"  # sequential (state carried, detached) | random (state re-initialised)
    random_offset: bool = True  # a random start offset each epoch (English edition); False: the
    # Chinese edition's iterators, which always start at token 0
    reset_state: bool = False  # begin every batch from a zero state even with sequential batches
    # (the book's train_ch8(use_random_iter=True) on its sequential loader); random sampling always does
    detach: bool = True  # False: full BPTT over each epoch, one update per epoch (the book's exercise)
    epochs: int = 500
    lr: float = 1.0
    optimizer: str = "sgd"  # sgd (the book's p -= lr * grad) | adam | adamw
    weight_decay: float = 0.0
    lr_schedule: str = "none"  # none | step (x lr_gamma every lr_step epochs) | plateau (on validation)
    # | cosine (per step: warm-up, then a cosine from lr down to min_lr at the end of the run)
    lr_step: int = 100  # epochs between step decays; for plateau, evaluations without improvement
    lr_gamma: float = 0.5
    warmup_steps: int = 0  # cosine: optimizer steps of linear warm-up from 0 to lr
    min_lr: float = 0.0  # cosine: the rate the decay ends at (when the epochs or --max-minutes run out)
    clip: float = 1.0  # gradient clipping threshold on the global L2 norm; 0 = off
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "auto"  # auto (bf16 where the hardware computes it natively, else fp32) | fp32 | bf16
    # reporting and checkpoints
    eval_every: int = 50  # epochs between validations (and at the end); 0 = only at the end
    val_rows: int = 1  # the validation text is scored as this many rows side by side: 1 = one pass with
    # the whole text as context; 16 is ~4x faster on a CPU and costs 15 cold starts (a few thousandths)
    sample_every: int = 10  # epochs between samples after the prefix; 0 = never
    prefix: str | None = None  # None = the book's prefix for its corpora, else the text's first tokens
    num_preds: int = 50  # tokens in each sample
    save_every: int = 50  # epochs between checkpoints (also at the best validation, the end, Ctrl-C)
    patience: int = 0  # stop after this many validations without a better loss; 0 = never stop early
    max_minutes: float = 0.0  # wall-clock budget: stop, evaluate and save when it is spent; 0 = none

    def __post_init__(self) -> None:
        for name in ("num_hiddens", "num_layers", "batch_size", "num_steps", "epochs", "val_rows"):
            _at_least(name, getattr(self, name), 1)
        for name in ("eval_every", "sample_every", "save_every", "num_preds", "lr_step", "warmup_steps",
                     "patience"):
            _at_least(name, getattr(self, name), 0)
        _choice("clean", self.clean, CLEAN_MODES)
        _choice("token", self.token, TOKEN_KINDS)
        _choice("model", self.model, ("rnn", "gru", "lstm"))
        _choice("impl", self.impl, IMPLS)
        _choice("sampling", self.sampling, SAMPLING_MODES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("lr_schedule", self.lr_schedule, SCHEDULES)
        _choice("precision", self.precision, PRECISIONS)
        if self.max_tokens == 0 or self.max_tokens < -1:
            raise ValueError(f"--max-tokens must be a positive count or -1 for all, got {self.max_tokens}")
        if not self.lr > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        for name in ("clip", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.lr_gamma <= 1:
            raise ValueError(f"--lr-gamma must be in (0, 1], got {self.lr_gamma}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"--min-lr must be in [0, --lr={self.lr}], got {self.min_lr}")
        if not 0 <= self.max_minutes < math.inf:
            raise ValueError(f"--max-minutes must be >= 0 (0 = no limit), got {self.max_minutes}")
        self._check_regularizers()

    def _check_regularizers(self) -> None:
        """The flags' own checks, so a user reads the flag; ModelConfig checks the model again."""
        for name in ("dropout_input", "dropout_output", "dropout_embedding", "weight_drop"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"--{_flag(name)} must be in [0, 1), got {value!r}")
        if self.dropout_embedding > 0 and self.embedding is None:
            raise ValueError("--dropout-embedding drops rows of the embedding matrix and needs --embedding")
        if self.tie_weights and self.embedding != self.num_hiddens:
            raise ValueError(f"--tie-weights shares the embedding matrix with the output layer and needs "
                             f"--embedding equal to --num-hiddens ({self.num_hiddens}), got {self.embedding}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        data = _upgrade(data)
        check_known_fields(cls, data, "training settings")
        return cls(**data)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


RECIPE_FORMAT = "charlm-recipe"


def recipe_names() -> list[str]:
    """The recipes shipped with charlm (files ``charlm/recipes/NAME.json``)."""
    folder = resources.files("charlm") / "recipes"
    return sorted(f.name[:-5] for f in folder.iterdir() if f.name.endswith(".json"))


def load_recipe(name: str) -> dict[str, Any]:
    """A recipe: a description, what the book reports, and the training settings it changes."""
    if name not in recipe_names():
        raise ValueError(f"--recipe {name!r} does not exist{did_you_mean(name, recipe_names())}; "
                         f"choose one of {', '.join(recipe_names())}")
    data = json.loads((resources.files("charlm") / "recipes" / f"{name}.json").read_text("utf-8"))
    if data.get("format") != RECIPE_FORMAT or data.get("version") != 1:
        raise ValueError(f"recipe {name!r} is not a version-1 charlm recipe")
    return data


def from_recipe(name: str | None = None, **overrides: Any) -> TrainConfig:
    """The defaults, then the recipe's settings (with those for the precision this machine trains
    in), then `overrides` (the flags the user typed)."""
    recipe = load_recipe(name) if name else {"settings": {}}
    settings = {**recipe["settings"], **for_precision(recipe, {**recipe["settings"], **overrides})}
    return TrainConfig.from_dict({**settings, **overrides})


def for_precision(recipe: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """A recipe's ``by_precision`` settings for the precision `settings` resolve to on this machine.

    A budgeted recipe's best model depends on the speed it gets: where bf16 runs in hardware a CPU
    trains a 2 x 512 LSTM about 2.7 times faster than in fp32, so in fp32 the same minutes buy more
    from a smaller model (docs/quality.md). Nothing here when the device or precision cannot be had:
    training then says why in one line.
    """
    variants = recipe.get("by_precision") or {}
    if not variants:
        return {}
    facts = machine.probe()
    try:
        device = machine.choose_device(str(settings.get("device", "auto")), facts).value
        precision = machine.choose_precision(str(settings.get("precision", "auto")), facts, device).value
    except ValueError:
        return {}
    chosen = dict(variants.get(precision, {}))
    if chosen:
        log.info("recipe settings for %s on this machine: %s", precision,
                 ", ".join(f"{k} {v}" for k, v in chosen.items()))
    return chosen


def check_recipe_device(name: str, overrides: Mapping[str, Any]) -> None:
    """A recipe that names a device needs it, unless the user's own ``device`` overrides the recipe's:
    without one, a one-line error before any data is read."""
    wanted = load_recipe(name)["settings"].get("device")
    if wanted is None or "device" in overrides:
        return
    try:
        machine.choose_device(wanted, machine.probe())
    except ValueError:
        kind = {"cuda": "CUDA", "mps": "MPS"}.get(wanted.split(":")[0], wanted)
        raise ValueError(f"recipe {name} needs a {kind} device; none was found "
                         f"(--device cpu runs it on the CPU, far slower)") from None


def _upgrade(data: Mapping[str, Any]) -> dict[str, Any]:
    """Settings saved before `precision` replaced the `bf16` switch: a run keeps the precision it
    trained in (False was plain fp32), so a resumed run goes on exactly as it began."""
    data = dict(data)
    if "bf16" in data and "precision" not in data:
        data["precision"] = "bf16" if data.pop("bf16") else "fp32"
    return data


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _at_least(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"--{_flag(name)} must be an integer >= {minimum}, got {value!r}")


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"--{_flag(name)} must be one of {', '.join(choices)}, got {value!r}"
                         f"{did_you_mean(value, choices)}")
