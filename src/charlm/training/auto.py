"""The auto recipe: what `charlm train PATH` trains on a text of the user's own.

It is chosen from three things: the text (its length in characters and its vocabulary), the machine
(how many tokens per second it trains each candidate model, measured here in a few steps) and the
time budget (``--max-minutes``, 10 by default). The rules, fitted on the grid of docs/auto.md:

1. **Each candidate's token budget.** A model of the :data:`LADDER` trains on
   ``speed x seconds`` tokens in the budget, at the speed measured for it on this machine; divided
   by the text's length, that is the number of passes (epochs) it makes over the text.
2. **Compute bounds the size.** The largest candidate that gets at least
   ``TOKENS_PER_PARAM / sqrt(passes)`` tokens per parameter. On a large text, which a budget
   covers once or a few times, that asks for about 20 tokens per parameter (the compute-optimal
   ratio Hoffmann et al. 2022 found for transformers): a larger model stops before it learns what
   it can hold. On a small text read many times over, the text runs out before the budget does, and
   a larger model with dropout learns more from it on fewer tokens per parameter.
3. **The text bounds it too.** No more than :data:`PARAMS_PER_CHAR` parameters per character of
   training text, however fast the machine: beyond that a model only memorises a small text faster.
4. **Dropout follows the passes.** :func:`dropout_for`: none up to :data:`FREE_PASSES` passes, then
   :data:`DROPOUT_PER_DOUBLING` more for each doubling of the passes, up to :data:`MAX_DROPOUT`.
5. **A small text gets smaller batches** (:func:`batch_shape`), so that an epoch still holds
   :data:`MIN_BATCHES` updates.
6. **About 40 validations, each keeping the best weights** (:func:`cadences`): every so many epochs,
   or, for a text the budget reads fewer than 40 times, by the clock, at most every 10 minutes.

7. **A text in English starts from charlm's English model** (:func:`choose_start`), fine-tuned with
   AdamW 1e-3 and a cosine to 1e-4 (its shape kept; rules 5 and 6 still choose the batch and
   the cadences), unless one of these sends it to a new model:

   - ``--from-scratch``, a model shape given, or tokens other than characters;
   - a text in another script: English's alphabet holds less than :data:`MIN_COVERAGE` of its
     characters;
   - a text in another language of the same script: the English model, untouched, reads the first
     :data:`READ_SAMPLE` characters at more than :data:`MAX_READ_BITS` bits each (German and
     Spanish trained better from nothing, docs/auto.md);
   - a text that teaches more than the English model knows: the budget trains a new model on more
     tokens than the English model was trained on, and the text holds them (:data:`USEFUL_PASSES`).

   Characters of the text that the English model lacks get rows of their own when the text holds
   each at least :data:`NEW_ROW_MIN` times, and count as ``<unk>`` otherwise.

Everything else is the 10-minute recipe's (docs/quality.md): raw text, whole; an LSTM on torch.nn
with an embedding of 64; batches of 32 x 128; AdamW 3e-3 with warm-up and a cosine fitted to the
budget. Every choice yields to a flag the user gives, and the rest are chosen around it: with
``--num-hiddens 1024`` only the depth and the dropout are left to choose.

>>> speed = lambda config: 2e11 / (6 * num_params(config.model))     # a machine of 200 GFLOP/s
>>> choice = choose(1_000_000, 65, 10.0, speed)                      # 1 MB of English, 10 minutes
>>> choice.settings["num_hiddens"], choice.settings["num_layers"]    # doctest: +SKIP
(512, 2)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .. import checkpoint as ckpt
from ..config import TrainConfig
from ..data.dataset import Splits
from ..evaluation import cross_entropy, evaluate_ids
from ..fields import flag
from ..hardware import distributed, machine
from ..hardware.device import autocast, resolve_device
from ..models import RNNLM
from ..models.config import ModelConfig, between_layers
from . import finetune
from .loop import load_data
from .optim import make_optimizer

log = logging.getLogger(__name__)

# Candidate sizes, (num_hiddens, num_layers), smallest first. Two layers from 256 units up: at the
# same parameter count a stack of two learned more per minute than one wide layer in the grid.
LADDER = ((128, 1), (256, 1), (256, 2), (384, 2), (512, 2), (768, 2), (1024, 2), (1536, 2))
# Rule 2. Fitted on the grid (docs/auto.md, 2-core AMD EPYC): in 2 minutes on 1.5 M characters a
# 2 x 256 LSTM given 5 tokens per parameter (3 passes) ended 7 % behind a 1 x 256 given 20; on
# 90,000 characters the 2 x 256 won with 4 per parameter (38 passes); in 10 minutes on 1 M, a
# 2 x 384 with 5.5 (10 passes) was 1 % ahead of the 2 x 256 this rule picks, and 2.5 % ahead of a
# 2 x 512 with 1.9 (6 passes). 16 would take the 2 x 384 there, and a 2 x 256 for 2 minutes on The
# War of the Worlds, 6 % behind a 1 x 256: 20 errs on the side of the smaller model.
TOKENS_PER_PARAM = 20.0
# Rule 3. On 90,000 characters a 2 x 384 (21 parameters per character) was no better than a
# 2 x 256 (10 per character), each at its best dropout.
PARAMS_PER_CHAR = 10.0
# Rule 4. At about 40 passes the grid's best dropout was 0.2-0.4; at 3 passes, none.
FREE_PASSES = 5.0
DROPOUT_PER_DOUBLING = 0.1
MAX_DROPOUT = 0.5
MIN_BATCHES = 16  # rule 5: batches in one epoch of a small text
# The budget's share left to training: validations, checkpoints and samples take the rest.
TRAINING_SHARE = 0.9

# The 10-minute recipe's settings (docs/quality.md), for any text; the rules fill in the rest.
BASE = dict(clean="raw", max_tokens=-1, cell="lstm", impl="builtin", embedding=64, optimizer="adamw",
            lr=3e-3, weight_decay=0.01, lr_schedule="cosine", warmup_steps=50, min_lr=1e-4, clip=1.0,
            batch_size=32, num_steps=128, num_preds=200, max_minutes=10.0,
            epochs=1_000_000)


# Rule 7, fitted on the grid of docs/auto.md (2-core Zen 3).
ENGLISH = "english"
# The share of a text's characters the English model's alphabet must hold. English prose is all in
# it; a text in another script shares only digits, spaces and punctuation with it.
MIN_COVERAGE = 0.9
# A text holds about this many passes' worth of what it teaches (rule 2 gives the passes after the
# first less weight); a budget of more tokens than it holds learns no more from it.
USEFUL_PASSES = 4.0
# A new character gets its own row when the text holds it this often: a row is fresh weights that
# only the new text trains, and fewer examples than this teach it less than they teach <unk>'s row,
# which every rare character shares.
NEW_ROW_MIN = 20
# A text the English model reads, measured on its first READ_SAMPLE characters before any
# fine-tuning: on the grid, verse drama (2.6 bits/char) still fine-tuned better from it, German
# (5.6) and Spanish (4.9) trained better from nothing. The bound lies between the two ends measured.
MAX_READ_BITS = 3.5
READ_SAMPLE = 20_000
# How it is fine-tuned (docs/auto.md: the first grid): a tenth of the learning rate of training it,
# with a short warm-up, since its weights already mean something.
FINE_TUNE = dict(lr=1e-3, min_lr=1e-4, warmup_steps=20)
# Settings that ask for a new model: the English model has a shape of its own.
SHAPED = tuple(f for f in finetune.SHAPE if f != "vocab_size")


@dataclass(frozen=True)
class Start:
    """Where rule 7 starts a run: from a trained run (its name) or from nothing (None), and why."""

    run: str | None
    why: str


@dataclass(frozen=True)
class AutoChoice:
    """The settings the rules chose, and the facts they were chosen from."""

    settings: dict[str, Any]  # flat, as the flags name them: everything but what the user gave
    chars: int  # training characters (tokens)
    vocab_size: int
    tokens_per_sec: float  # measured for the chosen model
    epochs: float  # passes over the training text the budget buys it (inf: no time budget)
    params: int
    device: str = "cpu"  # where and in what precision the speeds were measured (configure)
    precision: str = "fp32"
    start: Start = Start(None, "")  # rule 7


def num_params(model: ModelConfig) -> int:
    """Parameters of an :class:`RNNLM` with an embedding on torch.nn (two bias vectors per gate, as
    torch keeps them): ``num_params(ModelConfig(65, 512, "lstm", "builtin", 2, embedding=64))`` is
    65*64 + 4*512*(64+512+2) + 4*512*(512+512+2) + 512*65 + 65 = 3,322,177."""
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[model.cell]
    V, H, L = model.vocab_size or 1, model.num_hiddens, model.num_layers
    inputs = model.embedding or V
    embedding = V * model.embedding if model.embedding else 0
    recurrent = gates * H * (inputs + H + 2) + (L - 1) * gates * H * (2 * H + 2)
    return embedding + recurrent + H * V + V


def dropout_for(epochs: float) -> float:
    """Rule 4: the dropout rate for a model that will see each character `epochs` times.

    >>> dropout_for(3), dropout_for(10), dropout_for(40), dropout_for(1000)
    (0.0, 0.1, 0.3, 0.5)
    """
    if not epochs > FREE_PASSES:
        return 0.0
    rate = DROPOUT_PER_DOUBLING * math.log2(epochs / FREE_PASSES)
    return round(min(MAX_DROPOUT, rate), 2)


def enough_tokens(tokens: float, params: int, chars: int) -> bool:
    """Rule 2: does a model of `params` parameters, trained on `tokens` tokens of a text of `chars`,
    get the tokens per parameter it needs (``TOKENS_PER_PARAM / sqrt(passes)``)?"""
    passes = max(1.0, tokens / chars)
    return tokens / params >= TOKENS_PER_PARAM / math.sqrt(passes)


def batch_shape(chars: int, given: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Rule 5: the recipe's batch of 32 x 128, made smaller for a small text until an epoch holds
    :data:`MIN_BATCHES` batches: first fewer rows (down to 8), then shorter ones (down to 32), so a
    poem of a few pages still gets many updates per pass. A size the user gave is kept.

    >>> batch_shape(1_000_000), batch_shape(20_000)
    ({'batch_size': 32, 'num_steps': 128}, {'batch_size': 8, 'num_steps': 128})
    """
    given = given or {}
    rows, steps = given.get("batch_size", BASE["batch_size"]), given.get("num_steps", BASE["num_steps"])
    while rows * steps * MIN_BATCHES > chars and rows > 8 and "batch_size" not in given:
        rows //= 2
    while rows * steps * MIN_BATCHES > chars and steps > 32 and "num_steps" not in given:
        steps //= 2
    return {"batch_size": rows, "num_steps": steps}


def validation_rows(chars: int) -> int:
    """Rows the validation text is scored in while training: 16 (four times faster on a CPU, for 15
    cold starts that cost a few thousandths of a nat) once the text is long enough that each row
    holds thousands of characters (the held-out part is about a ninth of `chars`); else one exact pass."""
    return 16 if chars >= 16 * 4_000 * 9 else 1


# Rule 6: validations are spread over the run, about this many of them, each keeping the best weights.
VALIDATIONS = 40
# The clock's bounds on the cadence: a checkpoint at least every 5 minutes and a validation at least
# every 10 (issue 29), never more often than every minute (a validation of 1 M characters takes
# seconds on a CPU, which a minute's training should outweigh).
SAVE_MINUTES, EVAL_MINUTES, MIN_MINUTES = 5, 10, 1


def cadences(epochs: float, minutes: float) -> dict[str, str]:
    """Rule 6: when to validate, save and sample, for `epochs` passes over the text in `minutes`.

    Every ``epochs / 40`` epochs (at least one), or every ``minutes / 40`` by the clock, bounded to
    [1, 10] minutes for validation and [1, 5] for checkpoints: a 100 MB text read once in 20 minutes
    validates every minute and saves every minute; 1 MB read 20 times, every epoch or 10 minutes.

    >>> cadences(0.2, 20.0)
    {'eval_every': '1,1m', 'save_every': '1,1m', 'sample_every': '4,4m'}
    """
    every = max(1, math.floor(epochs / VALIDATIONS))
    clock = minutes / VALIDATIONS if minutes else math.inf
    eval_minutes = min(max(clock, MIN_MINUTES), EVAL_MINUTES)
    save_minutes = min(eval_minutes, SAVE_MINUTES)
    return {"eval_every": f"{every},{eval_minutes:g}m", "save_every": f"{every},{save_minutes:g}m",
            "sample_every": f"{4 * every},{4 * eval_minutes:g}m"}


def candidates(given: Mapping[str, Any], ladder: Sequence[tuple[int, int]] = LADDER) -> list[tuple[int, int]]:
    """The `ladder`, with the width or depth the user gave put in (duplicates dropped)."""
    sizes = [(given.get("num_hiddens", h), given.get("num_layers", n)) for h, n in ladder]
    return list(dict.fromkeys(sizes))


def choose(chars: int, vocab_size: int, minutes: float, speed: Callable[[TrainConfig], float],
           given: Mapping[str, Any] | None = None, ladder: Sequence[tuple[int, int]] = LADDER) -> AutoChoice:
    """The rules (module docstring) for a text of `chars` training characters and `vocab_size`
    tokens, a budget of `minutes` (0: none; then ``given["epochs"]`` is the budget), and
    `speed(config)`, the training tokens per second of a config's model on this machine. `given`:
    the settings the user typed, which the choice keeps; `ladder`: the candidate sizes, smallest first."""
    given = dict(given or {})
    if not minutes and "epochs" not in given:
        raise ValueError("--max-minutes 0 leaves the auto recipe no budget to choose a model for: give "
                         "--epochs too, or a time budget")
    shape = batch_shape(chars, given)
    base = TrainConfig.of(**{**BASE, **shape, **given, "vocab_size": vocab_size, "corpus": "auto"})

    def budget(config: TrainConfig) -> tuple[float, float]:  # (tokens it trains on, its speed)
        if not minutes:  # no clock: the epochs are the budget, whatever the speed
            return config.epochs * chars, math.nan
        tokens_per_sec = speed(config)
        return min(tokens_per_sec * 60 * minutes * TRAINING_SHARE, config.epochs * chars), tokens_per_sec

    config, (tokens, tokens_per_sec) = largest_fitting(
        [base.replace(num_hiddens=h, num_layers=n) for h, n in candidates(given, ladder)], chars, budget)
    epochs = tokens / chars
    rate = dropout_for(epochs)
    model = config.model
    settings = {**BASE, **shape, "num_hiddens": model.num_hiddens, "num_layers": model.num_layers,
                "dropout": between_layers(rate, model.num_layers), "dropout_output": rate,
                **cadences(epochs, minutes), "val_rows": validation_rows(chars)}
    settings = {k: v for k, v in settings.items() if k not in given}
    return AutoChoice(settings, chars, vocab_size, tokens_per_sec, epochs, num_params(model))


def largest_fitting(configs: Sequence[TrainConfig], chars: int,
                    budget: Callable[[TrainConfig], tuple[float, float]]) -> tuple[TrainConfig, tuple]:
    """Rules 2 and 3 over candidates that grow: the last that fits before the first that does not
    (the first when none fits), with its ``(tokens, tokens per second)``. The search stops at the
    first misfit, so no larger model is ever measured."""
    chosen = None
    for config in configs:
        params = num_params(config.model)
        facts = budget(config)
        fits = enough_tokens(facts[0], params, chars) and params <= PARAMS_PER_CHAR * chars
        if chosen is None or fits:
            chosen = config, facts
        if not fits:
            break
    return chosen


def choose_start(given: Mapping[str, Any], token: str, counts: Mapping[str, int], scratch_tokens: float,
                 english: ckpt.Run | str, reads: Callable[[ckpt.Run], float]) -> Start:
    """Rule 7: start from the English model, or from nothing? `given`: the settings the user typed;
    `token`: the kind of tokens; `counts`: each token's count in the training text; `scratch_tokens`:
    the tokens the budget trains a new model on (rules 1-3); `english`: the English model, or why it
    could not be read; `reads`: the English model's bits per character on the text (a second or two:
    asked only when nothing else has decided)."""
    shaped = [name for name in SHAPED if name in given]
    total = sum(counts.values())
    if given.get("from_scratch"):
        return Start(None, "--from-scratch")
    if shaped:
        return Start(None, f"{flag(shaped[0])} asks for a model of that shape")
    if token != "char":
        return Start(None, f"{token} tokens: the English model reads characters")
    if isinstance(english, str):
        return Start(None, english)
    known = sum(n for t, n in counts.items() if t in english.vocab.token_to_idx) / max(total, 1)
    if known < MIN_COVERAGE:
        return Start(None, f"only {known:.0%} of its characters are in the English model's alphabet")
    learnable, learned = min(scratch_tokens, USEFUL_PASSES * total), ckpt.trained_tokens(english)
    if learnable > learned:
        return Start(None, f"the budget teaches a new model {learnable:,.0f} characters, more than the "
                           f"English model's {learned:,.0f}")
    bits = reads(english)
    if bits > MAX_READ_BITS:
        return Start(None, f"the English model reads it at {bits:.1f} bits/char, more than "
                           f"{MAX_READ_BITS:g}: another language")
    return Start(ENGLISH, f"{known:.1%} of its characters are in its alphabet, read at {bits:.2f} bits/char")


def english_bits(english: ckpt.Run, tokens: Sequence[str]) -> float:
    """Bits per character of the English model, as shipped, on the characters it knows among the
    first :data:`READ_SAMPLE` of `tokens`, read in a few rows side by side. Those it lacks are left
    out: it never learned to predict ``<unk>``, so each would cost it tens of bits, and a few
    symbols in an English text would read as another language (MIN_COVERAGE bounds how many)."""
    known = [t for t in tokens[:READ_SAMPLE] if t in english.vocab.token_to_idx]
    ids = torch.tensor(english.vocab[known] if known else [], dtype=torch.long)
    if len(ids) < 2:
        return math.inf  # nothing it can read
    rows = max(1, min(8, len(ids) // 1000))
    return evaluate_ids(english.model, ids, rows=rows, num_steps=256).bits_per_token


def fine_tuning(chars: int, vocab_size: int, english: ckpt.Run, minutes: float,
                speed: Callable[[TrainConfig], float], given: Mapping[str, Any], start: Start) -> AutoChoice:
    """Rule 7's settings for fine-tuning the English model on a text of `chars` training characters
    (`vocab_size` distinct):
    its model, :data:`FINE_TUNE`, and rules 5 and 6 for the passes it makes in `minutes` at `speed`."""
    shape = batch_shape(chars, given)
    config = TrainConfig.of(**{**BASE, **FINE_TUNE, **shape, **given, "corpus": "auto"})
    config = finetune.inherit(config, english, set(given))
    tokens_per_sec = speed(config) if minutes else math.nan
    tokens = min(tokens_per_sec * 60 * minutes * TRAINING_SHARE, config.epochs * chars) if minutes else \
        config.epochs * chars
    epochs = tokens / chars
    model = {name: getattr(config.model, name) for name in ModelConfig.__dataclass_fields__
             if name != "vocab_size"}
    settings = {**BASE, **FINE_TUNE, **shape, **model, **cadences(epochs, minutes),
                "val_rows": validation_rows(chars), "init_from": ENGLISH, "extend_vocab": True,
                "extend_min_count": NEW_ROW_MIN}
    settings = {k: v for k, v in settings.items() if k not in given}
    return AutoChoice(settings, chars, vocab_size, tokens_per_sec, epochs,
                      num_params(config.model), start=start)


def _english() -> ckpt.Run | str:
    """The English model, or why it cannot be read (a damaged installation trains from scratch)."""
    try:
        return ckpt.load(ENGLISH)
    except (ckpt.CheckpointError, OSError) as err:
        log.warning("the auto recipe trains from scratch: %s", err)
        return f"the English model could not be read ({err})"


def configure(given: Mapping[str, Any], start: str | None = None
              ) -> tuple[TrainConfig, AutoChoice, Splits | None]:
    """The auto recipe for the settings the user gave (`given`, flat, with the corpus): reads the
    text once for its length and vocabulary, measures the candidates' speed on the run's device and
    precision (a few seconds in all), and returns the run's config with the choice it came from, and
    the text as read, for training to take on (reading 1 GB again would cost it a minute). A run that
    starts from the English model reads the text again, in its vocabulary: no text is returned then.
    `start`: ``"english"`` or ``"scratch"`` overrules rule 7 (the grid of docs/auto.md measures both)."""
    config = TrainConfig.of(**{**BASE, **given})
    data = load_data(config)
    # Under torchrun, rank 0 measures and chooses for every process: each measuring for itself could
    # choose another model, and DDP needs the same one everywhere.
    info, device = distributed.setup(resolve_device(config.device))
    precision = machine.choose_precision(config.precision, machine.probe(), device.type).value
    speeds: dict[str, float] = {}

    def speed(candidate: TrainConfig) -> float:
        key = json.dumps(candidate.to_dict(), sort_keys=True)
        if key not in speeds:
            speeds[key] = measure_speed(candidate, device, precision)
        return speeds[key]

    def decide() -> AutoChoice:
        scratch = choose(len(data.train), len(data.vocab), config.max_minutes, speed, given)
        english = _english()
        sample = data.vocab.to_tokens(data.train[:READ_SAMPLE].tolist())
        rule = choose_start(given, config.token, dict(data.vocab.token_freqs), scratch.epochs * scratch.chars,
                            english, reads=lambda model: english_bits(model, sample))
        chosen = {None: rule.run, "english": ENGLISH, "scratch": None}[start]
        if chosen is None or isinstance(english, str):
            return dataclasses.replace(scratch, start=Start(None, rule.why if rule.run is None else
                                                            "the grid asked for a new model"))
        return fine_tuning(len(data.train), len(data.vocab), english, config.max_minutes, speed, given,
                           rule if rule.run else Start(ENGLISH, f"the grid asked for it ({rule.why})"))

    choice = distributed.from_main(decide, info)
    choice = dataclasses.replace(choice, device=str(device), precision=precision)
    # The encoding found once: training reads the text in it, without finding (and saying) it again.
    config = TrainConfig.of(**{**BASE, **choice.settings, **given, "encoding": data.encoding})
    return config, choice, data if choice.start.run is None else None


def measure_speed(config: TrainConfig, device: torch.device, precision: str, steps: int = 2) -> float:
    """Training tokens per second of `config`'s model and batch shape on `device`, from `steps`
    timed steps of forward, backward and AdamW on random tokens, after one untimed step (oneDNN and
    cuDNN set up their kernels on the first). About a second for a 2 x 512 LSTM on two CPU cores."""
    model = RNNLM(config.model).to(device)
    optimizer = make_optimizer(config, model.parameters())
    generator = torch.Generator().manual_seed(0)
    shape = (config.batch_size, config.num_steps)
    X, Y = (torch.randint(config.model.vocab_size, shape, generator=generator).to(device) for _ in range(2))
    start = 0.0
    for k in range(steps + 1):
        if k == 1:
            _synchronize(device)
            start = time.perf_counter()
        with autocast(device, precision):
            logits, _ = model(X)
        optimizer.zero_grad(set_to_none=True)
        cross_entropy(logits, Y).backward()
        optimizer.step()
    _synchronize(device)
    return steps * X.numel() / max(time.perf_counter() - start, 1e-9)


def _synchronize(device: torch.device) -> None:
    """Wait for the device's queued work: a GPU's kernels run after the call that launched them."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def describe(choice: AutoChoice, config: TrainConfig) -> str:
    """The one line said before training: the model, its training, and what it was chosen for.

    auto: a new 2 x 512 LSTM (only 3% of its characters are in the English model's alphabet),
    embedding 64, dropout 0.3, batch 32 x 128, AdamW 3e-3 with a cosine over 10 min (about 12 passes
    over the text) - for 1,003,854 characters of text (2,865 distinct) on 2 CPU cores, AVX512
    kernels, bf16

    auto: fine-tunes charlm's English model (2 x 512 LSTM; 99.9% of its characters are in its
    alphabet, read at 2.07 bits/char), embedding 64, no dropout, batch 8 x 128, AdamW 0.001 with a
    cosine over 2 min (about 19 passes over the text) - for 18,000 characters of text (287 distinct)
    on ...
    """
    model = config.model
    rates = sorted({r for r in (model.dropout, model.dropout_output) if r})
    dropout = "dropout " + "/".join(f"{r:g}" for r in rates) if rates else "no dropout"
    budget = f"a cosine over {config.max_minutes:g} min" if config.max_minutes else \
        f"a cosine over {config.epochs} epochs"
    passes = f"about {choice.epochs:.0f} passes" if choice.epochs >= 1.5 else \
        f"{choice.epochs:.1f} of a pass" if choice.epochs < 1 else "about one pass"
    kinds = "characters" if config.token == "char" else "words"
    where = _where(torch.device(choice.device), choice.precision)
    shape = f"{model.num_layers} x {model.num_hiddens} {model.cell.upper()}"
    if choice.start.run is not None:
        what = f"fine-tunes charlm's English model ({shape}; {choice.start.why})"
    else:
        what = f"a new {shape}" + (f" ({choice.start.why})" if choice.start.why else "")
    return (f"auto: {what}, "
            f"{'embedding ' + str(model.embedding) if model.embedding else 'one-hot input'}, {dropout}, "
            f"batch {config.batch_size} x {config.num_steps}, {config.optimizer.replace('adamw', 'AdamW')} "
            f"{config.lr:g} with {budget} ({passes} over the text) \N{EM DASH} for {choice.chars:,} {kinds} "
            f"of text ({choice.vocab_size:,} distinct) on {where}")


def _where(device: torch.device, precision: str) -> str:
    facts = machine.probe()
    if device.type == "cuda":
        return f"{facts.cuda}, cuDNN, {precision}"
    if device.type == "mps":
        return f"Apple's GPU (MPS), {precision}"
    kernels = torch.backends.cpu.get_cpu_capability()  # the instruction set torch's CPU kernels use
    return f"{facts.cores} CPU cores, {kernels} kernels, {precision}"
