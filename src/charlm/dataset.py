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

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch

from .corpora import CORPORA, CorpusError, has_own_splits, read_source
from .text import clean_lines, flatten, tokenize
from .vocab import Vocab

SPLITS = ("train", "val", "test")
DEFAULT_SPLIT_FRACS = (0.05, 0.05)


def read_tokens(source: str | Path, *, clean: str = "d2l", token: str = "char", eos: bool = False,
                split: str = "all", encoding: str | None = None) -> list[str]:
    """The cleaned token stream of a corpus name or text file (one split's file for PTB)."""
    tokens = flatten(tokenize(clean_lines(read_source(source, split, encoding), clean), token, eos=eos))
    if not tokens:
        raise CorpusError(f"{source}: no tokens are left after {clean!r} cleaning")
    return tokens


def encode(tokens: list[str], vocab: Vocab) -> torch.Tensor:
    """Token ids as a 1-D int64 tensor; tokens the vocabulary lacks become ``vocab.unk``."""
    lookup, unk = vocab.token_to_idx, vocab.unk
    return torch.tensor([lookup.get(tok, unk) for tok in tokens], dtype=torch.int64)


def _check_max_tokens(max_tokens: int) -> None:
    if max_tokens == 0 or max_tokens < -1:
        raise ValueError(f"max_tokens must be a positive count or -1 for all, got {max_tokens}")


def load_corpus(source: str | Path, *, clean: str = "d2l", token: str = "char", max_tokens: int = -1,
                eos: bool = False, encoding: str | None = None,
                vocab: Vocab | None = None) -> tuple[torch.Tensor, Vocab]:
    """Token ids of a whole corpus and its vocabulary (the book's `load_corpus_time_machine`).

    `source` is a corpus name (see `charlm.CORPORA`) or a text file. With `max_tokens` > 0 only the
    first `max_tokens` tokens are kept (-1 keeps all); the vocabulary, unless given, is built from the
    tokens kept. For *The Time Machine* with the defaults: 170,580 ids and 28 vocabulary entries.
    """
    _check_max_tokens(max_tokens)
    tokens = read_tokens(source, clean=clean, token=token, eos=eos, encoding=encoding)
    if max_tokens > 0:
        tokens = tokens[:max_tokens]
    vocab = vocab if vocab is not None else Vocab(tokens)
    return encode(tokens, vocab), vocab


@dataclass
class Splits:
    """Token ids of the three splits and the vocabulary built from the training part.

    An empty split (tinyshakespeare has no test part) is a tensor of length 0.
    """

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    vocab: Vocab

    def __getitem__(self, split: str) -> torch.Tensor:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        return getattr(self, split)


def split_fracs(source: str | Path) -> tuple[float, float]:
    """(validation, test) fractions of the token stream for this source."""
    spec = CORPORA.get(str(source)) if isinstance(source, str) else None
    return spec.split_fracs if spec else DEFAULT_SPLIT_FRACS


def split_stream(tokens: list[str], val_frac: float, test_frac: float) -> tuple[list[str], ...]:
    """Cut a token stream into contiguous ``[train | val | test]`` parts by fraction.

    >>> split_stream(list("abcdefghij"), 0.2, 0.1)
    (['a', 'b', 'c', 'd', 'e', 'f', 'g'], ['h', 'i'], ['j'])

    Boundaries are ``floor(n * (1 - val - test))`` and ``floor(n * (1 - test))``: for
    tinyshakespeare (n = 1,115,394, 10 % validation) that is 1,003,854 / 111,540 tokens.
    """
    n = len(tokens)
    # Exact rational arithmetic: 1 - 0.05 - 0.05 in floats is 0.8999..., which would move a boundary.
    val, test = Fraction(str(val_frac)), Fraction(str(test_frac))
    train_end, val_end = math.floor(n * (1 - val - test)), math.floor(n * (1 - test))
    return tokens[:train_end], tokens[train_end:val_end], tokens[val_end:]


def load_splits(source: str | Path, *, clean: str = "d2l", token: str = "char", max_tokens: int = -1,
                eos: bool = False, encoding: str | None = None, vocab: Vocab | None = None) -> Splits:
    """Train / validation / test token ids of a corpus (see the module docstring for the rule)."""
    _check_max_tokens(max_tokens)
    opts = dict(clean=clean, token=token, eos=eos, encoding=encoding)
    if isinstance(source, str) and has_own_splits(source):
        train, val, test = (read_tokens(source, split=s, **opts) for s in SPLITS)
    else:
        train, val, test = split_stream(read_tokens(source, **opts), *split_fracs(source))
    if max_tokens > 0:
        train = train[:max_tokens]
    if not train:
        raise CorpusError(f"{source}: too short to hold a training split")
    vocab = vocab if vocab is not None else Vocab(train)
    return Splits(encode(train, vocab), encode(val, vocab), encode(test, vocab), vocab)
