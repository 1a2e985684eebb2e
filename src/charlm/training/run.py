"""A training run from a config, or continued from its folder: :func:`train` and :func:`resume`, the
API that ``charlm train`` and ``charlm resume`` call. The loop itself is :mod:`.loop`'s Trainer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .. import checkpoint as ckpt
from ..config import TrainConfig
from ..data.dataset import Splits
from ..data.vocab import Vocab
from ..fields import flag
from ..hardware import launch
from . import finetune
from .loop import Trainer, TrainResult, load_data

log = logging.getLogger(__name__)


def train(config: TrainConfig | None = None, *, out: str | Path | None = None, data: Splits | None = None,
          **changes: Any) -> TrainResult:
    """Train a language model from `config` (default: the book's RNN on The Time Machine) with any
    settings in `changes`, named as the flags are (``cell="lstm"``, ``epochs=5``). With `out`, the run
    is saved there; :func:`resume` continues it. `data`: the text, if already read with these text
    settings (the auto recipe reads it to choose the model), so a huge text is read once.

    >>> result = train(TrainConfig(epochs=5), out="runs/tm")        # doctest: +SKIP
    >>> result = train(cell="lstm", num_hiddens=256, epochs=5)       # doctest: +SKIP
    >>> result.perplexity, result.tokens_per_sec                     # doctest: +SKIP
    """
    config = (config or TrainConfig()).replace(**changes)
    run_dir = Path(out) if out is not None else None
    start = ckpt.load(config.init_from, which="best") if config.init_from else None
    if start is not None:
        config = finetune.inherit(config, start)
    if run_dir is not None and launch.rank() == 0:
        # Before the data is read: a folder we cannot save into fails now. Rank 0 alone, which alone
        # saves: two ranks probing at once could each remove the folder the other is probing.
        ckpt.check_writable(run_dir)
    vocab, weights = (start.vocab, start.model) if start is not None else (None, None)
    if start is not None and config.extend_vocab:  # one more pass over the text, for its own tokens
        vocab = finetune.extended_vocab(start, load_data(config).vocab, config.extend_min_count)
        weights = finetune.grow(start.model, len(vocab), config.seed)
    if start is not None and data is not None:
        raise ValueError("data read with the text's own vocabulary cannot train a run started from another")
    trainer = Trainer(config, run_dir, vocab=vocab, data=data)
    if weights is not None:
        trainer.model.load_state_dict(weights.state_dict())  # in place: the optimizer holds these
        train_ids = trainer.data.train
        finetune.note_unknown(int((train_ids == vocab.unk).sum()), len(train_ids), start, config.corpus)
    if run_dir is not None and trainer.dist.is_main:
        _prepare_run_dir(run_dir)
        ckpt.save_run_files(run_dir, trainer.model, trainer.data.vocab, trainer.config)
    return trainer.fit()


# What a resumed run may change: how long it goes on, where, and how often it reports. Anything else
# would make it a different run than the one it continues.
RESUMABLE = ("epochs", "device", "eval_every", "sample_every", "save_every")


def resume(run: str | Path, **changes: Any) -> TrainResult:
    """Continue a saved run exactly where it stopped, even mid-epoch. ``epochs`` counts all epochs,
    old and new; only the settings in :data:`RESUMABLE` can change.

    >>> resume("runs/tm", epochs=10)                                 # doctest: +SKIP
    """
    run_dir = Path(run)
    unknown = sorted(set(changes) - set(RESUMABLE))
    if unknown:
        raise ValueError(f"{flag(unknown[0])}: resuming continues the saved run; only "
                         f"{', '.join(flag(k) for k in RESUMABLE)} can change")
    _, saved = ckpt.run_configs(run_dir)
    if saved is None:
        raise ckpt.CheckpointError(f"{run_dir}: the run has no training settings, so it cannot be resumed")
    config = saved.replace(**changes)
    if launch.rank() == 0:
        ckpt.check_writable(run_dir, None)
    # A fine-tuned run reads its text with the vocabulary it started from, saved in its own folder.
    vocab = Vocab.load(run_dir / "vocab.json") if config.init_from else None
    trainer = Trainer(config, run_dir, vocab=vocab)
    trainer.restore(ckpt.load_trainer(run_dir / "trainer.pt"))
    if trainer.dist.is_main:
        for path in ckpt.remove_temp_files(run_dir):  # left by a process killed while it saved
            log.info("removed %s, a temporary file left by an interrupted save", path)
        ckpt.save_run_files(run_dir, trainer.model, trainer.data.vocab, trainer.config)
        _rewrite_metrics(run_dir, trainer.history)
    return trainer.fit()


def _prepare_run_dir(run_dir: Path) -> None:
    if (run_dir / "trainer.pt").exists():
        raise ValueError(f"--out {run_dir} already holds a run; continue it with `charlm resume {run_dir}` "
                         "or choose another folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)


def _rewrite_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Make metrics.jsonl agree with the checkpoint (records after it were lost with the crash)."""
    text = "".join(ckpt.json_line(r) for r in history)
    ckpt.save_file(run_dir / "metrics.jsonl", lambda f: f.write(text.encode("utf-8")))
