"""From a corpus name or file to token ids and a vocabulary; the train / validation / test split.

`load_corpus` is the book's `load_corpus_time_machine` (d2l §8.2.4) for any text: the whole token
stream, optionally cut to its first `max_tokens` tokens, and a vocabulary built from the tokens kept.

`load_splits` adds held-out text. The split is fixed by the token stream alone, never by batch size
or sequence length: the validation and test sets are contiguous tails of the stream —
``[ train | val | test ]`` — by default 90 % / 5 % / 5 %; tinyshakespeare uses 90 % / 10 % / none,
the split other tools publish numbers on; PTB uses its own three files. `max_tokens` then keeps
the first tokens of the training part only (the book's 10,000), and the vocabulary comes from the
training tokens kept, so validation text may contain `<unk>`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from . import tokenstream
from .corpora import CORPORA, CorpusError, has_own_splits, is_file_source, iter_source_text
from .textfiles import resolve_encoding
from .vocab import Vocab

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DEFAULT_SPLIT_FRACS = (0.05, 0.05)


def _stream(source: str | Path, *, clean: str = "d2l", token: str = "char", eos: bool = False,
            split: str = "all", encoding: str | None = None, errors: str = "strict",
            keep_boilerplate: bool = False, left_out: list[int] | None = None) -> Iterator[tokenstream.Piece]:
    """The cleaned token stream of a corpus name or text file, piece by piece (see tokenstream)."""
    chunks = iter_source_text(source, split, encoding, errors, keep_boilerplate, left_out)
    return tokenstream.token_pieces(chunks, clean, token, eos)


def _reading(source: str | Path, encoding: str | None, errors: str, keep_boilerplate: bool) -> dict:
    """How every pass reads `source`: a user's file in one encoding, found once (detection reads the
    whole file, and says what it found in one line), with or without a Gutenberg header and licence;
    a named corpus in its own encoding, as published."""
    if is_file_source(source):
        encoding = resolve_encoding(source, encoding)
    return {"encoding": encoding, "errors": errors, "keep_boilerplate": keep_boilerplate}


def _count_tokens(source: str | Path, clean: str, **opts) -> int:
    """Pass 1 over a text: how many tokens it has (which fixes where the splits fall). It says, once,
    how much of a Project Gutenberg file was left out."""
    left_out: list[int] = []
    n = tokenstream.count_tokens(_stream(source, clean=clean, left_out=left_out, **opts))
    if left_out and left_out[0]:
        log.info("left out %s characters of Project Gutenberg's header and licence (--keep-boilerplate "
                 "keeps them)", f"{left_out[0]:,}")
    if n == 0:
        raise CorpusError(f"{source}: no tokens are left after {clean!r} cleaning")
    return n


def _vocab(source: str | Path, limit: int, opts: dict) -> Vocab:
    """Pass 2: the vocabulary of the first `limit` tokens."""
    return Vocab.from_counts(tokenstream.count(_stream(source, **opts), limit))


def _encode(source: str | Path, vocab: Vocab, sizes: list[int], dtype: torch.dtype, opts: dict,
            skip_after_first: int = 0) -> list[torch.Tensor]:
    """Pass 3: the ids of consecutive parts of the stream of these sizes (after the first part,
    `skip_after_first` tokens are passed over: those that `max_tokens` left out)."""
    parts = [torch.empty(size, dtype=dtype) for size in sizes]
    outputs: list[torch.Tensor | int] = [parts[0], skip_after_first, *parts[1:]]
    tokenstream.encode_into(_stream(source, **opts), vocab.token_to_idx, vocab.unk, outputs)
    return parts


def _check_max_tokens(max_tokens: int) -> None:
    if max_tokens == 0 or max_tokens < -1:
        raise ValueError(f"--max-tokens must be a positive count or -1 for all, got {max_tokens}")


def load_corpus(source: str | Path, *, clean: str = "d2l", token: str = "char", max_tokens: int = -1,
                eos: bool = False, encoding: str | None = None, errors: str = "strict",
                keep_boilerplate: bool = False, vocab: Vocab | None = None) -> tuple[torch.Tensor, Vocab]:
    """Token ids of a whole corpus and its vocabulary (the book's `load_corpus_time_machine`).

    `source` is a corpus name (see `charlm.CORPORA`) or a text file. With `max_tokens` > 0 only the
    first `max_tokens` tokens are kept (-1 keeps all); the vocabulary, unless given, is built from the
    tokens kept. For *The Time Machine* with the defaults: 170,580 ids and 28 vocabulary entries.
    A user's file is read in `encoding` (None: detected; see :mod:`charlm.data.textfiles`), without
    a Project Gutenberg header and licence unless `keep_boilerplate` (:mod:`charlm.data.gutenberg`).
    """
    _check_max_tokens(max_tokens)
    opts = dict(clean=clean, token=token, eos=eos, **_reading(source, encoding, errors, keep_boilerplate))
    n = _count_tokens(source, **opts)
    keep = min(n, max_tokens) if max_tokens > 0 else n
    vocab = vocab if vocab is not None else _vocab(source, keep, opts)
    (ids,) = _encode(source, vocab, [keep], tokenstream.id_dtype(keep, len(vocab)), opts)
    return ids, vocab


@dataclass
class Splits:
    """Token ids of the three splits and the vocabulary built from the training part.

    An empty split (tinyshakespeare has no test part) is a tensor of length 0.
    """

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    vocab: Vocab
    encoding: str | None = None  # what a user's file was read as (detected or given); None for a named corpus

    def __getitem__(self, split: str) -> torch.Tensor:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return getattr(self, split)


def split_fracs(source: str | Path) -> tuple[float, float]:
    """(validation, test) fractions of the token stream for this source."""
    spec = CORPORA.get(str(source)) if isinstance(source, str) else None
    return spec.split_fracs if spec else DEFAULT_SPLIT_FRACS


def split_bounds(n: int, val_frac: float, test_frac: float) -> tuple[int, int]:
    """Where validation and test begin in a stream of `n` tokens: ``floor(n * (1 - val - test))``
    and ``floor(n * (1 - test))``; for tinyshakespeare (n = 1,115,394, 10 % validation) that is
    1,003,854 training tokens, then 111,540 validation tokens."""
    # Exact rational arithmetic: 1 - 0.05 - 0.05 in floats is 0.8999..., which would move a boundary.
    val, test = Fraction(str(val_frac)), Fraction(str(test_frac))
    return math.floor(n * (1 - val - test)), math.floor(n * (1 - test))


def load_splits(source: str | Path, *, clean: str = "d2l", token: str = "char", max_tokens: int = -1,
                eos: bool = False, encoding: str | None = None, errors: str = "strict",
                keep_boilerplate: bool = False, vocab: Vocab | None = None) -> Splits:
    """Train / validation / test token ids of a corpus (see the module docstring for the rule).

    Three passes over the text, none holding more than a piece of it: count the tokens, count each
    token of the training part (the vocabulary), encode (see :mod:`charlm.data.tokenstream`)."""
    _check_max_tokens(max_tokens)
    opts = dict(clean=clean, token=token, eos=eos, **_reading(source, encoding, errors, keep_boilerplate))
    if isinstance(source, str) and has_own_splits(source):
        return _own_splits(source, max_tokens, vocab, opts)
    n = _count_tokens(source, **opts)
    train_end, val_end = split_bounds(n, *split_fracs(source))
    keep = min(train_end, max_tokens) if max_tokens > 0 else train_end
    _note_cut(keep, train_end, token)
    if keep == 0:
        raise CorpusError(f"{source}: too short to hold a training split")
    vocab = vocab if vocab is not None else _vocab(source, keep, opts)
    dtype = tokenstream.id_dtype(n, len(vocab))
    train, val, test = _encode(source, vocab, [keep, val_end - train_end, n - val_end], dtype, opts,
                               skip_after_first=train_end - keep)
    return Splits(train, val, test, vocab, opts["encoding"])


def _note_cut(keep: int, total: int, token: str) -> None:
    """Say so when --max-tokens leaves most of the training text unused (the book's 10,000 default
    on a user's whole book would otherwise train on its first pages without a word)."""
    if keep < total:
        unit = "characters" if token == "char" else "tokens"
        log.info("using the first %s of %s training %s (--max-tokens -1 for all)", f"{keep:,}", f"{total:,}",
                 unit)


def _own_splits(source: str, max_tokens: int, vocab: Vocab | None, opts: dict) -> Splits:
    """A corpus that ships its own train / valid / test files (PTB): each file is one split."""
    sizes = {s: _count_tokens(source, split=s, **opts) for s in SPLITS}
    keep = min(sizes["train"], max_tokens) if max_tokens > 0 else sizes["train"]
    _note_cut(keep, sizes["train"], opts["token"])
    vocab = vocab if vocab is not None else _vocab(source, keep, {**opts, "split": "train"})
    dtype = tokenstream.id_dtype(sum(sizes.values()), len(vocab))
    parts = [_encode(source, vocab, [keep if s == "train" else sizes[s]], dtype, {**opts, "split": s})[0]
             for s in SPLITS]
    return Splits(*parts, vocab)
