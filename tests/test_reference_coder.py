"""The reference arithmetic coder: every stream of symbols comes back exactly, and costs what the
probabilities say it should (-log2 p bits a symbol, plus a few bits at the end)."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charlm.compression.reference_coder import (
    MAX_TOTAL,
    CoderError,
    Decoder,
    Encoder,
    cumulative,
    decode,
    encode,
)

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True)
FREQS = st.lists(st.integers(1, 5000), min_size=1, max_size=300)


def ideal_bits(symbols, cums):
    return sum(-math.log2((cum[s + 1] - cum[s]) / cum[-1]) for s, cum in zip(symbols, cums, strict=False))


@SETTINGS
@given(freqs=FREQS, data=st.data())
def test_any_symbols_round_trip_under_a_static_distribution(freqs, data):
    symbols = data.draw(st.lists(st.integers(0, len(freqs) - 1), max_size=300))
    cum = cumulative(freqs)
    coded = encode(symbols, itertools.repeat(cum))
    assert decode(coded, [cum] * len(symbols)) == symbols
    assert len(coded) * 8 <= ideal_bits(symbols, [cum] * len(symbols)) + 2 + 8  # 2 bits to end, a byte pad


@pytest.mark.slow
@SETTINGS
@given(data=st.data(), length=st.integers(0, 200))
def test_a_different_distribution_for_every_symbol_round_trips(data, length):
    cums = [cumulative(data.draw(FREQS)) for _ in range(length)]
    symbols = [data.draw(st.integers(0, len(c) - 2)) for c in cums]
    assert decode(encode(symbols, cums), cums) == symbols


@pytest.mark.parametrize("likely", [True, False])
def test_probabilities_near_0_and_1(likely):
    """p = 1 - 2^-24 and 2^-24: the likely symbol costs almost nothing, the unlikely one 24 bits."""
    cum = cumulative([MAX_TOTAL - 1, 1])
    symbols = [0] * 5000 + [1] * 20 if likely else [1] * 200
    coded = encode(symbols, itertools.repeat(cum))
    assert decode(coded, [cum] * len(symbols)) == symbols
    assert len(coded) * 8 <= ideal_bits(symbols, [cum] * len(symbols)) + 10


def test_a_long_run_of_one_symbol_costs_its_information_only():
    rng = random.Random(0)
    freqs = [rng.randint(1, 100) for _ in range(60)] + [40_000]
    cum = cumulative(freqs)
    symbols = [60] * 100_000
    coded = encode(symbols, itertools.repeat(cum))
    assert decode(coded, [cum] * len(symbols)) == symbols
    ideal = ideal_bits(symbols, [cum] * len(symbols))
    assert ideal / 8 <= len(coded) <= ideal / 8 * 1.001 + 2


def test_the_empty_stream_is_one_byte_and_decodes_to_nothing():
    coded = encode([], itertools.repeat(cumulative([1, 1])))
    assert len(coded) == 1 and decode(coded, []) == []


def test_the_coded_size_matches_the_entropy_of_a_source():
    """10^5 symbols drawn from the distribution itself: within 0.1 % of their information."""
    rng = random.Random(1)
    freqs = [rng.randint(1, 1000) for _ in range(65)]
    cum = cumulative(freqs)
    symbols = rng.choices(range(65), weights=freqs, k=100_000)
    coded = encode(symbols, itertools.repeat(cum))
    assert decode(coded, [cum] * len(symbols)) == symbols
    assert len(coded) * 8 == pytest.approx(ideal_bits(symbols, [cum] * len(symbols)), rel=1e-3)


@pytest.mark.parametrize("freqs, match", [([3, 0, 1], ">= 1"), ([MAX_TOTAL, 1], "more than")])
def test_frequencies_that_cannot_be_coded_are_refused(freqs, match):
    with pytest.raises(CoderError, match=match):
        cumulative(freqs)


def test_a_symbol_outside_the_frequencies_or_a_missing_list_is_refused():
    with pytest.raises(CoderError, match="outside"):
        encode([3], [cumulative([1, 1])])
    with pytest.raises(CoderError, match="fewer frequency lists"):
        encode([0, 1], [cumulative([1, 1])])


def test_the_encoder_and_decoder_classes_code_one_symbol_at_a_time():
    cum = cumulative([5, 1, 10])
    encoder = Encoder()
    for s in [2, 0, 1, 2]:
        encoder.encode_symbol(s, cum)
    decoder = Decoder(encoder.finish())
    assert [decoder.decode_symbol(cum) for _ in range(4)] == [2, 0, 1, 2]
