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
NUM_BUCKETS = 12  # a mixing weight per order and per log2 of the context's count


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
        """``(lanes, K, A)`` float32 log-probabilities and ``(lanes, K)`` long confidence buckets."""
        counts = self.table[self._index].float()  # (lanes, K, A)
        seen = counts.sum(-1, keepdim=True)
        logp = torch.log((counts + self.prior) / (seen + self.prior * self.alphabet))
        buckets = torch.log2(seen.squeeze(-1) + 1).long().clamp_(max=NUM_BUCKETS - 1)
        return logp, buckets

    def update(self, symbols: Tensor) -> None:
        """Count ``symbols`` (lanes,) in the current contexts, then shift them into the history."""
        if self.orders:
            K = len(self.orders)
            self.table.index_put_((self._index.reshape(-1), symbols.repeat_interleave(K)),
                                  torch.ones(symbols.numel() * K, dtype=torch.int32), accumulate=True)
            self.history = torch.cat([symbols.view(-1, 1), self.history[:, :-1]], dim=1)
            self._index = self._rows()
