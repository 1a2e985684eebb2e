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

from . import cadence
from .data.batches import SAMPLING_MODES
from .data.text import CLEAN_MODES, TOKEN_KINDS
from .data.textfiles import ERRORS
from .fields import at_least, boolean, check_known, check_types, choice, flag, from_flat, number, setting
from .hardware import machine
from .hardware.machine import PRECISIONS
from .models.config import ModelConfig
from .suggest import did_you_mean

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam", "adamw")
CADENCES = ("eval_every", "sample_every", "save_every")  # the fields that take a cadence
SCHEDULES = ("none", "step", "plateau", "cosine")

# A prefix the book uses for each corpus; other texts start from their own first tokens.
DEFAULT_PREFIXES = {"timemachine": "time traveller", "war-of-the-worlds": "the planet mars",
                    "jaychou-lyrics": "分开"}


@dataclass
class TrainConfig:
    """Everything a training run depends on: the model (a :class:`ModelConfig`), the data and the
    optimisation. Saved in the run folder's config.json. Each field's help is its flag's help."""

    # data
    corpus: str = setting("timemachine", "corpus name (see `charlm corpora`) or path of a text file")
    clean: str = setting("d2l", "cleaning: d2l (letters only, lowercase: the book's), lower (punctuation "
                         "kept), lyrics (newlines to spaces), raw (untouched), lines (untouched, one <eos> "
                         "line each)")
    token: str = setting("char", "tokens: char or word")
    # checked where the text is cut (dataset.py)
    max_tokens: int = setting(10_000, "keep the first N training tokens (the book: 10000); -1 = all")
    eos: bool = setting(False, "word tokens: add <eos> after every line (PTB)")
    # None: found by charlm.data.textfiles; the run then records what it found, so evaluation reads alike
    encoding: str | None = setting(None, "text encoding of a user file, such as utf-8, cp1252 or latin-1",
                                   shown="detected")
    errors: str = setting("strict", "bytes of a user file that cannot be decoded: strict (an error naming "
                          "the first) or replace (each becomes U+FFFD)")
    keep_boilerplate: bool = setting(False, "read a Project Gutenberg file whole: by default its header and "
                                     "licence are left out (one line says how much)")
    # a new run from a trained one (finetune.py): its weights and vocabulary, a fresh optimizer
    init_from: str | None = setting(None, "start from a trained run's weights (its best) and vocabulary, "
                                    "with a fresh optimizer: fine-tuning; its model's shape is kept, and the "
                                    "text settings not given are the run's", shown="a fresh model",
                                    metavar="RUN")
    extend_vocab: bool = setting(False, "with --init-from: tokens of the new text that the run's "
                                 "vocabulary lacks get rows of their own (fresh weights); without it they "
                                 "count as <unk>")
    extend_min_count: int = setting(1, "with --extend-vocab: a new token gets a row of its own only if the "
                                    "new text holds it at least this many times; rarer ones count as <unk>",
                                    metavar="N")
    preamble: str = setting("", "text the model reads, from a zero state, before every text it is given "
                            "(generation, scoring, the explorer, training): the state a model trained on "
                            "a carried state knows how to read from; charlm's English model reads a "
                            "blank line, the separator of its books")
    from_scratch: bool = setting(False, "train a new model even where the auto recipe would start from "
                                 "charlm's English model (docs/auto.md, rule 7)")
    # the model
    model: ModelConfig = setting(default_factory=ModelConfig, help="the model to train")
    # optimisation
    batch_size: int = setting(32, "sequences per mini-batch")
    num_steps: int = setting(35, "BPTT length in tokens")
    sampling: str = setting("sequential", "mini-batches: sequential (state carried across batches) or "
                            "random (state reset)")
    random_offset: bool = setting(True, "start each epoch's batches at a random offset (the English "
                                  "edition); --no-random-offset always starts at token 0 (the Chinese "
                                  "edition)")
    reset_state: bool = setting(False, "begin every batch from a zero state even with sequential batches "
                                "(the book's use_random_iter=True on its sequential loader)")
    detach: bool = setting(True, "detach the state between batches (truncated BPTT); --no-detach "
                           "backpropagates through the whole epoch: one update per epoch, memory grows "
                           "with the epoch")
    epochs: int = setting(500, "epochs in total (when resuming: including those already done)")
    lr: float = setting(1.0, "learning rate")
    optimizer: str = setting("sgd", "sgd (the book's p -= lr * grad), adam or adamw")
    weight_decay: float = setting(0.0, "L2 weight decay")
    lr_schedule: str = setting("none", "none, step (x --lr-gamma every --lr-step epochs), plateau (on "
                               "validation loss) or cosine (per step: --warmup-steps, then down to "
                               "--min-lr by the end of --epochs / --max-minutes)")
    lr_step: int = setting(100, "epochs between step decays; for plateau, evaluations without improvement")
    lr_gamma: float = setting(0.5, "learning-rate decay factor, in (0, 1]")
    warmup_steps: int = setting(0, "cosine schedule: optimizer steps of linear warm-up from 0 to --lr")
    min_lr: float = setting(0.0, "cosine schedule: the learning rate at the end of the run")
    clip: float = setting(1.0, "clip gradients to this global L2 norm; 0 = off")
    seed: int = setting(0, "random seed (same seed, same machine, same thread count: same losses; "
                        "CHARLM_THREADS=N fixes the count, which otherwise follows the machine's load)")
    device: str = setting("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    precision: str = setting("auto", "auto (bf16 where the device computes it in hardware: AVX-512 BF16, "
                             "AMX, a CUDA GPU of compute capability 8.0+; else fp32), fp32, or bf16 "
                             "(autocast); `charlm info` says what auto picks here")
    # reporting and checkpoints
    # Cadences (cadence.py): epochs, steps or a duration, whichever comes first; the time triggers
    # make a text whose epoch outlasts the budget report and save while it trains.
    eval_every: int | str = setting("50,10m", "when to validate: every N epochs, Nsteps, or a duration "
                                    "(30s, 5m, 1h), several joined by commas (whichever comes first); "
                                    "0 = only at the end", parse=cadence.from_flag, metavar="EVERY")
    val_tokens: int = setting(1_000_000, "validate on the first N tokens of the validation text, so a huge "
                              "text's validation takes seconds, not minutes; -1 = all of it")
    # 16 rows are ~4x faster on a CPU and cost 15 cold starts (a few thousandths of a nat)
    val_rows: int = setting(1, "score the validation text as this many rows at once (1 = exact, one "
                            "pass; 16 = ~4x faster)")
    sample_every: int | str = setting("10,10m", "when to print a sample after --prefix: every N epochs, "
                                      "Nsteps or a duration, as --eval-every; 0 = only at the end",
                                      parse=cadence.from_flag, metavar="EVERY")
    prefix: str | None = setting(None, "text that starts each sample", shown="the book's for its corpora, "
                                 "else the text's first tokens")
    num_preds: int = setting(100, "tokens per sample")
    save_every: int | str = setting("50,5m", "when to save a checkpoint: every N epochs, Nsteps or a "
                                    "duration, as --eval-every (also at a best validation, at the end, on "
                                    "Ctrl-C); kill -9 loses at most this much", parse=cadence.from_flag,
                                    metavar="EVERY")
    patience: int = setting(0, "stop after this many validations without a better loss (best.safetensors "
                            "kept); 0 = off")
    max_minutes: float = setting(0.0, "stop after this many minutes of wall-clock time, then validate and "
                                 "save; 0 = no limit")

    def __post_init__(self) -> None:
        check_types(self)
        at_least("seed", self.seed, 0)
        for name in ("batch_size", "num_steps", "epochs", "val_rows"):
            at_least(name, getattr(self, name), 1)
        for name in ("num_preds", "lr_step", "warmup_steps", "patience"):
            at_least(name, getattr(self, name), 0)
        for name in CADENCES:
            cadence.parse(name, getattr(self, name))
        if self.val_tokens != -1 and not (isinstance(self.val_tokens, int) and self.val_tokens >= 2):
            raise ValueError(f"--val-tokens must be -1 (all) or an integer >= 2, got {self.val_tokens!r}")
        choice("clean", self.clean, CLEAN_MODES)
        choice("token", self.token, TOKEN_KINDS)
        choice("errors", self.errors, ERRORS)
        choice("sampling", self.sampling, SAMPLING_MODES)
        choice("optimizer", self.optimizer, OPTIMIZERS)
        choice("lr_schedule", self.lr_schedule, SCHEDULES)
        choice("precision", self.precision, PRECISIONS)
        for name in ("eos", "random_offset", "reset_state", "detach", "from_scratch"):
            boolean(name, getattr(self, name))
        if self.extend_vocab and self.init_from is None:
            raise ValueError("--extend-vocab extends the vocabulary of the run given with --init-from; "
                             "without one, every token of the text has its row anyway")
        if self.from_scratch and self.init_from is not None:
            raise ValueError(f"--from-scratch and --init-from {self.init_from}: a run starts from a trained "
                             "model or from nothing; give one or the other")
        if number("extend_min_count", self.extend_min_count) < 1:
            raise ValueError(f"--extend-min-count must be >= 1, got {self.extend_min_count}")
        if not number("lr", self.lr) > 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        for name in ("clip", "weight_decay"):
            if number(name, getattr(self, name)) < 0:
                raise ValueError(f"{flag(name)} must be >= 0, got {getattr(self, name)}")
        if not 0 < number("lr_gamma", self.lr_gamma) <= 1:
            raise ValueError(f"--lr-gamma must be in (0, 1], got {self.lr_gamma}")
        if not 0 <= number("min_lr", self.min_lr) <= self.lr:
            raise ValueError(f"--min-lr must be in [0, --lr={self.lr}], got {self.min_lr}")
        if not 0 <= number("max_minutes", self.max_minutes) < math.inf:
            raise ValueError(f"--max-minutes must be >= 0 (0 = no limit), got {self.max_minutes}")

    @classmethod
    def of(cls, **settings: Any) -> TrainConfig:
        """From flat settings, named as the flags are: ``TrainConfig.of(cell="lstm", epochs=5)``."""
        return from_flat(cls, upgrade(settings))

    def to_dict(self) -> dict[str, Any]:
        """Nested as the fields are: ``{"model": {...}, "corpus": ..., ...}``."""
        return {**dataclasses.asdict(self), "model": self.model.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """From :meth:`to_dict`'s output, or from flat settings (a recipe, flags, an older run's file)."""
        data = upgrade(data)
        if isinstance(data.get("model"), Mapping):
            model = data.pop("model")
            check_known(ModelConfig, model, "model settings")
            return from_flat(cls, data, cls(model=ModelConfig(**model)))
        return from_flat(cls, data)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some settings changed, named flat: ``config.replace(cell="lstm", epochs=5)``."""
        return from_flat(TrainConfig, changes, self)


RECIPE_FORMAT = "charlm-recipe"


# Not files: "auto" is chosen for the text and the machine (auto.py), "book" is the defaults.
CHOSEN_RECIPES = ("auto", "book")


def default_recipe(given: Mapping[str, Any]) -> str:
    """The recipe a run gets when none is named: the auto recipe for a text file of the user's own
    (unless it fine-tunes a run, whose settings it inherits), the book's setup for everything else,
    the book's own corpora included."""
    from .data.corpora import is_file_source

    corpus = given.get("corpus")
    if corpus is not None and "init_from" not in given and is_file_source(corpus):
        return "auto"
    return "book"


def recipe_names() -> list[str]:
    """The recipes shipped with charlm (files ``charlm/recipes/NAME.json``)."""
    folder = resources.files("charlm") / "recipes"
    return sorted(f.name[:-5] for f in folder.iterdir() if f.name.endswith(".json"))


def load_recipe(name: str) -> dict[str, Any]:
    """A recipe: a description, what the book reports, and the training settings it changes."""
    if name not in recipe_names():
        known = [*CHOSEN_RECIPES, *recipe_names()]
        raise ValueError(f"--recipe {name!r} does not exist{did_you_mean(name, known)}; "
                         f"choose one of {', '.join(known)}")
    data = json.loads((resources.files("charlm") / "recipes" / f"{name}.json").read_text("utf-8"))
    if data.get("format") != RECIPE_FORMAT or data.get("version") != 1:
        raise ValueError(f"recipe {name!r} is not a version-1 charlm recipe")
    return data


def from_recipe(name: str | None = None, **overrides: Any) -> TrainConfig:
    """The defaults, then the recipe's settings (with those for the precision this machine trains
    in), then `overrides` (the flags the user typed)."""
    recipe = load_recipe(name) if name else {"settings": {}}
    overrides = upgrade(overrides)
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


def upgrade(data: Mapping[str, Any]) -> dict[str, Any]:
    """Settings in an older spelling, as this version names them, so old runs and recipes keep
    working and a resumed run goes on exactly as it began:

    - ``bf16: true/false`` became ``precision`` (False was plain fp32);
    - ``model: "lstm"`` (the cell, when the settings were flat) became ``cell``.
    """
    data = dict(data)
    if "bf16" in data and "precision" not in data:
        data["precision"] = "bf16" if data.pop("bf16") else "fp32"
    if isinstance(data.get("model"), str):
        data.setdefault("cell", data["model"])
        del data["model"]
    return data
