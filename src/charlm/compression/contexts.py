"""Order-k context counts: how often each symbol followed the last k symbols, learned while coding.

A recurrent model fresh from its initialisation needs many thousands of symbols before it predicts
well; counting what followed each recent context predicts a repeated word from its second
occurrence on. charlm's compressor mixes the two (:class:`charlm.compression.model.Mixture`): the
counts of each order become a log-probability vector, added to the network's logits with weights
that the network learns along with its own.

All lanes share one table per order, so a context seen in one part of the text helps the others.
Contexts are hashed into a fixed number of rows (collisions only blur statistics; both sides
collide alike). Everything here is integer arithmetic, hence bit-identical on encoder and decoder.
"""

from __future__ import annotations

import torch
from torch import Tensor

_MULTIPLIER = 0x9E3779B1  # Knuth's golden-ratio hash constant (odd, 32-bit)
NUM_BUCKETS = 12
# The match expert's one-hot value: with the mixing weights' start of 0.3, a found match adds 2.4 to
# its symbol's logit from the first step, which the weights then tune per run length.
MATCH_SCALE = 8.0  # a mixing weight per order and per log2 of the context's count


class ContextCounts:
    """Counts for orders ``orders`` over an alphabet of `alphabet` symbols, for `lanes` lanes.

    ``features()`` gives, for the next symbol of every lane, each order's log-probabilities
    ``log((c + a) / (n + A a))`` and a confidence bucket ``floor(log2(n + 1))``; ``update(symbols)``
    counts the symbols just coded and moves each lane's context on.
    """

    def __init__(self, orders: tuple[int, ...], alphabet: int, lanes: int, rows: int,
                 prior: float = 0.05) -> None:
        if any(k < 1 for k in orders) or len(set(orders)) != len(orders):
            raise ValueError(f"context orders must be distinct and >= 1, got {orders}")
        self.orders, self.alphabet, self.rows, self.prior = orders, alphabet, rows, prior
        depth = max(orders, default=0)
        self.history = torch.zeros(lanes, depth, dtype=torch.long)  # the last symbols, newest first
        # One table for all orders: order i owns rows [i * rows, (i + 1) * rows).
        self.table = torch.zeros(len(orders) * rows, alphabet, dtype=torch.int32)
        # h_k = sum_{j < k} history[:, j] * 257^j (small enough never to overflow int64), then hashed.
        weights = torch.zeros(depth, len(orders), dtype=torch.long)
        for i, k in enumerate(orders):
            for j in range(k):
                weights[j, i] = 257 ** j % (1 << 31)
        self._weights = weights
        self._offsets = torch.arange(len(orders)) * rows
        self._salt = torch.tensor(orders, dtype=torch.long) * 0x51ED27
        self._index = self._rows()

    def _rows(self) -> Tensor:
        """(lanes, K) table rows of each lane's current contexts."""
        if not self.orders:
            return torch.zeros(self.history.shape[0], 0, dtype=torch.long)
        h = self.history @ self._weights  # (lanes, K), < 2^9 * 2^31 * 8: no overflow in int64
        h = (h + self._salt) % (1 << 31) * _MULTIPLIER  # < 2^63; the high bits are the well-mixed ones
        return (h >> 24) % self.rows + self._offsets

    def features(self) -> tuple[Tensor, Tensor]:
        """``(lanes, K, A)`` float32 log-probabilities and ``(lanes, K)`` long confidence buckets in
        ``[0, 2 * NUM_BUCKETS)``: log2 of the count, plus NUM_BUCKETS where one symbol alone was seen."""
        counts = self.table[self._index].float()  # (lanes, K, A)
        seen = counts.sum(-1, keepdim=True)
        logp = torch.log((counts + self.prior) / (seen + self.prior * self.alphabet))
        buckets = torch.log2(seen.squeeze(-1) + 1).long().clamp_(max=NUM_BUCKETS - 1)
        # A context that was always followed by the same symbol is a strong hint: buckets of its own.
        single = (counts > 0).sum(-1) == 1
        return logp, buckets + NUM_BUCKETS * single

    def update(self, symbols: Tensor) -> None:
        """Count ``symbols`` (lanes,) in the current contexts, then shift them into the history."""
        if self.orders:
            K = len(self.orders)
            self.table.index_put_((self._index.reshape(-1), symbols.repeat_interleave(K)),
                                  torch.ones(symbols.numel() * K, dtype=torch.int32), accumulate=True)
            self.history = torch.cat([symbols.view(-1, 1), self.history[:, :-1]], dim=1)
            self._index = self._rows()


class MatchModel:
    """The longest-match expert: where the last `length` symbols occurred before, predict the symbol
    that followed them then, and keep following that earlier text while it keeps being right.

    Count tables forget which occurrence came when; a repeated line, name or phrase is predicted
    best by the text it repeats. The expert's feature is a one-hot vector on the predicted symbol;
    its bucket is how many symbols in a row the match has been right (0 to NUM_BUCKETS - 1), so the
    mixer learns how far to trust a match of each length. Positions count steps times lanes, so a
    lane can follow text in any lane coded before the current step.
    """

    def __init__(self, length: int, alphabet: int, lanes: int, steps: int, rows: int) -> None:
        self.length, self.alphabet, self.lanes, self.rows = length, alphabet, lanes, rows
        self.coded = torch.zeros(max(steps, 1) * lanes, dtype=torch.int32)  # every symbol coded, in order
        self.where = torch.full((rows,), -1, dtype=torch.long)  # context hash -> position that followed
        self.history = torch.zeros(lanes, length, dtype=torch.long)
        self.pointer = torch.full((lanes,), -1, dtype=torch.long)  # position of the predicted symbol
        self.run = torch.zeros(lanes, dtype=torch.long)  # how many predictions in a row were right
        self.step = 0
        self._powers = torch.tensor([257 ** j % (1 << 31) for j in range(length)], dtype=torch.long)
        self._lane_ids = torch.arange(lanes)

    def _hash(self) -> Tensor:
        h = (self.history @ self._powers) % (1 << 31) * _MULTIPLIER
        return (h >> 24) % self.rows

    def feature(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(lanes, 1, A)`` one-hot predictions (zeros where none), ``(lanes, 1)`` buckets, and the
        predicted symbols (-1 where none)."""
        known = (self.pointer >= 0) & (self.pointer < self.step * self.lanes)
        predicted = torch.where(known, self.coded[self.pointer.clamp(min=0)],
                                torch.full_like(self.pointer, -1))
        onehot = torch.zeros(self.lanes, 1, self.alphabet)
        onehot[self._lane_ids[known], 0, predicted[known]] = MATCH_SCALE
        buckets = self.run.clamp(max=NUM_BUCKETS - 1).view(-1, 1)
        return onehot, buckets, predicted

    def update(self, symbols: Tensor, predicted: Tensor) -> None:
        """Record the step's symbols; follow matches that were right, look up new ones otherwise."""
        positions = self.step * self.lanes + self._lane_ids
        self.coded[positions] = symbols.to(torch.int32)
        hit = predicted == symbols
        self.run = torch.where(hit, self.run + 1, torch.zeros_like(self.run))
        self.pointer = torch.where(hit, self.pointer + self.lanes, torch.full_like(self.pointer, -1))
        if self.step >= self.length:  # the last `length` symbols before this one are real ones
            self.where[self._hash()] = positions
        self.history = torch.cat([symbols.view(-1, 1), self.history[:, :-1]], dim=1)
        self.step += 1
        found = self.where[self._hash()]  # what followed the new context last time, if it occurred
        self.pointer = torch.where(hit, self.pointer, found)
