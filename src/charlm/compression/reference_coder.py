"""The arithmetic coder in plain Python: the reference that kernel.c's coder is held to (issue 8).

``charlm compress`` codes in C (:mod:`charlm.compression.kernel`), which writes exactly this module's
stream; the tests encode and decode with both and compare the bytes. This module is the coder's
readable specification and its test oracle; the compressor itself takes only ``MAX_TOTAL`` from it
(the largest ``--total``).

A model that gives the next symbol probability p lets an arithmetic coder spend -log2 p bits on
it, so bits per character *is* the compressed size (the book's exercise, d2l §8.4). This is the
integer coder of Witten, Neal & Cleary (1987): the interval ``[low, high]`` of 32-bit integers
narrows to each symbol's share of it, and whenever its leading bit is settled that bit is sent
(when the interval straddles the middle without settling, the bit is *pending* until it does)::

    symbol s with cumulative counts cum[s] <= . < cum[s + 1] of total:
        high = low + range * cum[s + 1] // total - 1
        low  = low + range * cum[s] // total
    then shift settled bits out, keeping range > 2^30.

Frequencies must be integers >= 1 (a symbol of probability 0 could never be coded) adding up to
at most ``MAX_TOTAL``, so that every symbol keeps a sub-interval of at least 64 values. The decoder
must be given exactly the frequencies the encoder used, symbol by symbol:
the compression kernel (``frequencies`` in compression/kernel.c) turns a model's probabilities into
such frequencies deterministically.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

PRECISION = 32
_FULL = (1 << PRECISION) - 1
_HALF = 1 << (PRECISION - 1)
_QUARTER = 1 << (PRECISION - 2)
MAX_TOTAL = 1 << 24  # the range never drops below 2^30, so each count >= 1 gets >= 2^6 values


class CoderError(ValueError):
    """Frequencies that cannot be coded, or a stream that does not decode (damaged data)."""


def cumulative(freqs: Sequence[int]) -> list[int]:
    """``[0, f0, f0 + f1, ...]``: symbol s covers ``[cum[s], cum[s + 1])``.

    >>> cumulative([3, 1, 4])
    [0, 3, 4, 8]
    """
    cum = [0]
    for f in freqs:
        if f < 1:
            raise CoderError(f"every frequency must be >= 1, got {f}")
        cum.append(cum[-1] + f)
    if cum[-1] > MAX_TOTAL:
        raise CoderError(f"frequencies add up to {cum[-1]}, more than {MAX_TOTAL}")
    return cum


def _narrow(low: int, high: int, cum_low: int, cum_high: int, total: int) -> tuple[int, int]:
    """The part of ``[low, high]`` that the counts ``[cum_low, cum_high)`` of `total` own."""
    span = high - low + 1
    return low + span * cum_low // total, low + span * cum_high // total - 1


class Encoder:
    """Feed symbols as ``(cum_low, cum_high, total)``, then :meth:`finish` for the bytes."""

    def __init__(self) -> None:
        self.low, self.high, self.pending = 0, _FULL, 0
        self._bits: list[int] = []

    def encode(self, cum_low: int, cum_high: int, total: int) -> None:
        self.low, self.high = _narrow(self.low, self.high, cum_low, cum_high, total)
        while True:
            if self.high < _HALF:
                self._emit(0)
            elif self.low >= _HALF:
                self._emit(1)
                self.low, self.high = self.low - _HALF, self.high - _HALF
            elif self.low >= _QUARTER and self.high < 3 * _QUARTER:
                self.pending += 1  # straddles the middle: the next settled bit decides this one
                self.low, self.high = self.low - _QUARTER, self.high - _QUARTER
            else:
                return
            self.low, self.high = 2 * self.low, 2 * self.high + 1

    def encode_symbol(self, symbol: int, cum: Sequence[int]) -> None:
        self.encode(cum[symbol], cum[symbol + 1], cum[-1])

    def _emit(self, bit: int) -> None:
        self._bits.append(bit)
        self._bits.extend([1 - bit] * self.pending)
        self.pending = 0

    def finish(self) -> bytes:
        """Two more bits pick a point inside the final interval; the decoder reads zeros past the end."""
        self.pending += 1
        self._emit(0 if self.low < _QUARTER else 1)
        bits = self._bits + [0] * (-len(self._bits) % 8)
        return bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8))


class Decoder:
    """Reads the symbols back: :meth:`decode_symbol` with the same cumulative counts, in order."""

    def __init__(self, data: bytes) -> None:
        self.data, self.position = data, 0  # position: the next bit to read
        self.low, self.high = 0, _FULL
        self.code = 0
        for _ in range(PRECISION):
            self.code = 2 * self.code + self._bit()

    def _bit(self) -> int:
        byte = self.position >> 3
        bit = (self.data[byte] >> (7 - (self.position & 7))) & 1 if byte < len(self.data) else 0
        self.position += 1
        return bit

    def decode_symbol(self, cum: Sequence[int]) -> int:
        total = cum[-1]
        span = self.high - self.low + 1
        target = ((self.code - self.low + 1) * total - 1) // span
        if not 0 <= target < total:
            raise CoderError("the coded stream is damaged (it points outside every symbol)")
        symbol = bisect.bisect_right(cum, target) - 1
        self._consume(cum[symbol], cum[symbol + 1], total)
        return symbol

    def _consume(self, cum_low: int, cum_high: int, total: int) -> None:
        self.low, self.high = _narrow(self.low, self.high, cum_low, cum_high, total)
        while True:
            if self.high < _HALF:
                pass
            elif self.low >= _HALF:
                self.low, self.high, self.code = self.low - _HALF, self.high - _HALF, self.code - _HALF
            elif self.low >= _QUARTER and self.high < 3 * _QUARTER:
                self.low, self.high = self.low - _QUARTER, self.high - _QUARTER
                self.code -= _QUARTER
            else:
                return
            self.low, self.high = 2 * self.low, 2 * self.high + 1
            self.code = 2 * self.code + self._bit()


def encode(symbols: Iterable[int], cums: Iterable[Sequence[int]]) -> bytes:
    """Code each symbol with its own cumulative counts (a static model: ``itertools.repeat(cum)``)."""
    encoder, counts = Encoder(), iter(cums)
    for symbol in symbols:
        cum = next(counts, None)
        if cum is None:
            raise CoderError("fewer frequency lists than symbols")
        if not 0 <= symbol < len(cum) - 1:
            raise CoderError(f"symbol {symbol} is outside the {len(cum) - 1} the frequencies cover")
        encoder.encode_symbol(symbol, cum)
    return encoder.finish()


def decode(data: bytes, cums: Iterable[Sequence[int]]) -> list[int]:
    """The inverse of :func:`encode`: one symbol per cumulative-count list given."""
    decoder = Decoder(data)
    return [decoder.decode_symbol(cum) for cum in cums]
