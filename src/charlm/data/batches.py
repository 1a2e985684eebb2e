"""Mini-batches for language models: random sampling and sequential partitioning (d2l §8.3.4).

Both iterators yield ``(X, Y)`` int64 tensors of shape ``(batch_size, num_steps)`` with ``Y`` the
tokens that follow ``X`` in the corpus. Each pass (`iter`) is one epoch with a fresh random offset;
the randomness of epoch ``e`` depends only on ``(seed, e)``, so an epoch can be replayed exactly
(`set_epoch`, used to resume training) and nothing touches the global random state.

Sequential partitioning, batch_size = 2, num_steps = 3, corpus = tokens 0..14, offset 1:
``num_tokens = ((15 - 1 - 1) // 2) * 2 = 12`` tokens (1..12) become two rows of six::

            batch 0      batch 1
    row 0   1  2  3  |   4  5  6        X
    row 1   7  8  9  |  10 11 12
    row 0   2  3  4  |   5  6  7        Y: the same grid, one token later
    row 1   8  9 10  |  11 12 13

Row i of batch k+1 continues row i of batch k, so a hidden state can be carried across batches.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence

import torch

Batch = tuple[torch.Tensor, torch.Tensor]
SAMPLING_MODES = ("random", "sequential")


def _as_corpus(corpus: Sequence[int] | torch.Tensor) -> torch.Tensor:
    # Integer tensors are kept as they are: a very long corpus comes in a compact dtype (uint8 ids
    # for 2 GB of characters), and only each batch becomes int64.
    if isinstance(corpus, torch.Tensor) and not corpus.is_floating_point() and corpus.dtype != torch.bool:
        tensor = corpus
    else:
        tensor = torch.as_tensor(corpus, dtype=torch.int64)
    if tensor.dim() != 1:
        raise ValueError(f"corpus must be a 1-D sequence of token ids, got shape {tuple(tensor.shape)}")
    return tensor


def max_offset(sampling: str, num_steps: int) -> int:
    """Largest random offset: ``num_steps - 1`` for random sampling, ``num_steps`` for sequential
    (the book draws them from these two ranges)."""
    return num_steps - 1 if sampling == "random" else num_steps


def num_batches(corpus_len: int, batch_size: int, num_steps: int, offset: int) -> int:
    """Batches in an epoch with this offset. Random: ``num_subseqs // batch_size`` with
    ``num_subseqs = (len - offset - 1) // num_steps``; sequential: the columns of the
    ``(batch_size, (len - offset - 1) // batch_size)`` grid divided by `num_steps`. The two
    formulas agree: both are ``(len - offset - 1) // num_steps // batch_size``, since
    ``a // b // c == a // c // b`` for positive integers."""
    return max(corpus_len - offset - 1, 0) // num_steps // batch_size


def random_epoch(corpus: torch.Tensor, batch_size: int, num_steps: int, offset: int,
                 gen: torch.Generator) -> Iterator[Batch]:
    """One epoch of random sampling (d2l §8.3.4.1): subsequences from `offset` on, in shuffled order."""
    num_subseqs = (len(corpus) - offset - 1) // num_steps
    starts = offset + torch.randperm(num_subseqs, generator=gen) * num_steps
    steps = torch.arange(num_steps)
    for k in range(num_subseqs // batch_size):
        index = starts[k * batch_size:(k + 1) * batch_size, None] + steps  # (B,) -> (B, T)
        yield corpus[index].long(), corpus[index + 1].long()


def sequential_epoch(corpus: torch.Tensor, batch_size: int, num_steps: int,
                     offset: int) -> Iterator[Batch]:
    """One epoch of sequential partitioning (d2l §8.3.4.2): column slices of a (B, L) grid."""
    num_tokens = ((len(corpus) - offset - 1) // batch_size) * batch_size
    Xs = corpus[offset:offset + num_tokens].reshape(batch_size, -1)  # (B, L)
    Ys = corpus[offset + 1:offset + 1 + num_tokens].reshape(batch_size, -1)
    for k in range(Xs.shape[1] // num_steps):
        cols = slice(k * num_steps, (k + 1) * num_steps)
        yield Xs[:, cols].long(), Ys[:, cols].long()


class BatchStream:
    """Mini-batches of a corpus, one epoch per `iter`, by random sampling or sequential partitioning.

    Random sampling: drop a random offset in ``[0, num_steps - 1]``; cut the rest into
    ``(len - offset - 1) // num_steps`` subsequences; shuffle their start indices; yield
    ``num_subseqs // batch_size`` batches. Adjacent batches are not adjacent in the text.
    Sequential partitioning: drop a random offset in ``[0, num_steps]``; keep
    ``((len - offset - 1) // batch_size) * batch_size`` tokens as `batch_size` rows; yield
    `num_steps`-wide column slices (see the module diagram).

    Epoch ``e`` draws its randomness from a generator seeded by ``(seed, e)`` alone. With
    ``random_offset=False`` the offset is always 0 (the Chinese edition's iterators).
    """

    def __init__(self, corpus: Sequence[int] | torch.Tensor, batch_size: int, num_steps: int, *,
                 sampling: str = "sequential", seed: int | None = None,
                 random_offset: bool = True) -> None:
        if sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLING_MODES)}, got {sampling!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.corpus = _as_corpus(corpus)
        self.batch_size, self.num_steps, self.sampling = batch_size, num_steps, sampling
        # The English edition drops a random offset every epoch; the Chinese edition (d2l-zh) always
        # starts at 0, so every epoch cuts the same subsequences, which are easier to memorise.
        self.max_offset = max_offset(sampling, num_steps) if random_offset else 0
        self.seed = secrets.randbits(62) if seed is None else int(seed)
        self.epoch = 0
        if num_batches(len(self.corpus), batch_size, num_steps, self.max_offset) < 1:
            raise ValueError(
                f"corpus of {len(self.corpus)} tokens is too short for one batch of batch_size="
                f"{batch_size} x num_steps={num_steps} (needs at least {self.min_tokens} tokens)")

    @property
    def min_tokens(self) -> int:
        """Shortest corpus that gives at least one batch whatever the offset."""
        return self.batch_size * self.num_steps + self.max_offset + 1

    def _generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % (1 << 63))

    def _offset(self, gen: torch.Generator) -> int:
        return int(torch.randint(0, self.max_offset + 1, (1,), generator=gen))

    def set_epoch(self, epoch: int) -> None:
        """Make the next `iter` produce epoch `epoch` (0-based) of this seed's sequence."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Batches the next `iter` yields (it depends on that epoch's random offset)."""
        offset = self._offset(self._generator(self.epoch))
        return num_batches(len(self.corpus), self.batch_size, self.num_steps, offset)

    def __iter__(self) -> Iterator[Batch]:
        gen = self._generator(self.epoch)
        self.epoch += 1
        offset = self._offset(gen)
        if self.sampling == "random":
            return random_epoch(self.corpus, self.batch_size, self.num_steps, offset, gen)
        return sequential_epoch(self.corpus, self.batch_size, self.num_steps, offset)


def random_batches(corpus: Sequence[int] | torch.Tensor, batch_size: int, num_steps: int, *,
                   seed: int | None = None, random_offset: bool = True) -> BatchStream:
    """Random-sampling mini-batches of `corpus` (see `BatchStream`)."""
    return BatchStream(corpus, batch_size, num_steps, sampling="random", seed=seed,
                       random_offset=random_offset)


def sequential_batches(corpus: Sequence[int] | torch.Tensor, batch_size: int, num_steps: int, *,
                       seed: int | None = None, random_offset: bool = True) -> BatchStream:
    """Sequential-partitioning mini-batches of `corpus` (see `BatchStream`)."""
    return BatchStream(corpus, batch_size, num_steps, sampling="sequential", seed=seed,
                       random_offset=random_offset)
