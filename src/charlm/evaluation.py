"""Perplexity and bits per token of a model on a token stream, independent of any batch shape.

The stream is read as one sequence from a zero state, in chunks of `num_steps` tokens with the
state carried from chunk to chunk, so every token after the first is predicted from everything
before it and the score does not depend on the batch size or sequence length used in training.
With ``rows > 1`` the stream is cut into that many contiguous rows read side by side (faster, and
each row starts from a zero state); the default of one row is the exact score.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as nnf
from torch import Tensor

from .models import RNNLM, evaluating

log = logging.getLogger(__name__)


# Nats per token past which exp() overflows a float64: the perplexity is then infinite, and in
# training the run has diverged even while the loss is still finite (uniform guessing over a million
# tokens costs only 14 nats).
MAX_LOSS = 700.0


def cross_entropy(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """The loss of predicting `targets` (B, T) from `logits` (B, T, V), over all B x T targets (the
    book flattens them the same way), computed in float32 whatever the model's precision."""
    return nnf.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1).long(),
                             reduction=reduction)


def perplexity(loss: float) -> float:
    """exp(mean loss in nats) (d2l §8.4.4), infinite rather than an overflow error for a huge loss."""
    return math.exp(loss) if loss < MAX_LOSS else math.inf


def bits(loss: float) -> float:
    """Nats to bits: for a character model, bits per character."""
    return loss / math.log(2)


@dataclass
class EvalResult:
    """Mean cross-entropy `loss` (nats per token) over `num_tokens` predicted tokens."""

    loss: float
    num_tokens: int

    @property
    def perplexity(self) -> float:
        return perplexity(self.loss)

    @property
    def bits_per_token(self) -> float:
        return bits(self.loss)

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "perplexity": self.perplexity, "bits_per_token": self.bits_per_token}


def evaluate_ids(model: RNNLM, ids: torch.Tensor, *, num_steps: int = 256, rows: int = 1,
                 device: torch.device | str | None = None) -> EvalResult:
    """Score `ids` (1-D int64) with `model`: the mean loss of predicting ids[1:] from what precedes."""
    if rows < 1 or num_steps < 1:
        raise ValueError(f"rows and num_steps must be >= 1, got rows={rows}, num_steps={num_steps}")
    ids = torch.as_tensor(ids)  # int64, or a compact integer type for a very long text (see tokenstream)
    usable = (len(ids) - 1) // rows * rows  # tokens that have a successor, in equal rows
    if usable < rows or usable == 0:
        raise ValueError(f"cannot evaluate a stream of {len(ids)} tokens: at least 2 are needed"
                         + (f" per row (rows={rows})" if rows > 1 else ""))
    device = device or next(model.parameters()).device
    X = ids[:usable].reshape(rows, -1).to(device)  # (rows, L)
    Y = ids[1:usable + 1].reshape(rows, -1).to(device)
    total, state = 0.0, model.begin_state(rows, device)
    with evaluating(model):
        for start in range(0, X.shape[1], num_steps):
            logits, state = model(X[:, start:start + num_steps].long(), state)
            total += float(cross_entropy(logits, Y[:, start:start + num_steps], reduction="sum"))
    return EvalResult(total / usable, usable)


def evaluate_run(run_dir: str | Path, *, corpus: str | None = None, split: str | None = None,
                 which: str = "best", device: str = "auto", encoding: str | None = None,
                 errors: str | None = None, keep_boilerplate: bool | None = None
                 ) -> tuple[EvalResult, str, str]:
    """Score a saved run on a split of its own corpus (default: validation) or on any corpus/file
    (default: the whole text), cleaned and tokenized as the run was. The run's own corpus is read in
    the encoding the run recorded, with or without Gutenberg boilerplate as it was; another file in
    `encoding`, or the one detected, without it unless `keep_boilerplate`. `errors` defaults to the
    run's. Returns the result, the run's token kind (``char`` or ``word``) and a description of the
    data and the weights used."""
    from .checkpoint import load
    from .config import TrainConfig
    from .data.dataset import load_corpus, load_splits
    from .data.vocab import check_coverage
    from .hardware.device import resolve_device

    run = load(run_dir, which=which, device=resolve_device(device))
    if run.config is None and corpus is None:
        raise ValueError(f"{run_dir}: the run does not name its corpus; pass --corpus")
    # A model saved without training settings reads text as training does by default.
    cfg = run.config or TrainConfig(model=run.model.config)
    own_text = corpus is None or corpus == cfg.corpus
    if keep_boilerplate is None:
        keep_boilerplate = cfg.keep_boilerplate if own_text else False
    opts = dict(clean=cfg.clean, token=cfg.token, eos=cfg.eos, vocab=run.vocab, errors=errors or cfg.errors,
                encoding=encoding or (cfg.encoding if own_text else None), keep_boilerplate=keep_boilerplate)
    source = corpus or cfg.corpus
    split = split or ("val" if corpus is None else "all")
    if split == "all":
        ids, _ = load_corpus(source, **opts)
    else:
        max_tokens = cfg.max_tokens if corpus is None else -1
        ids = load_splits(source, max_tokens=max_tokens, **opts)[split]
    unknown = int((ids == run.vocab.unk).sum())
    check_coverage(unknown, len(ids), cfg.token, source, str(run_dir),
                   f"train a run on it (charlm train {source})")
    if unknown:
        log.warning("%d of %d tokens are not in the run's vocabulary and count as <unk>", unknown, len(ids))
    result = evaluate_ids(run.model, ids)
    return result, cfg.token, f"{source} ({split}) with {run.weights}"
