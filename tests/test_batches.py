"""Mini-batch iterators: the book's random sampling and sequential partitioning, exactly; then the
same windows (d2l §8.3.4) for any corpus length, batch size, num_steps and id dtype (hypothesis)."""

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from charlm import random_batches, sequential_batches
from charlm.data.batches import BatchStream, num_batches
from strategies import PROPERTY

CORPUS = torch.arange(1000)  # token id == position, so every X shows where it came from


@pytest.mark.parametrize("make", [random_batches, sequential_batches])
def test_y_is_x_shifted_by_one_against_the_corpus(make):
    for X, Y in make(CORPUS, 4, 7, seed=0):
        assert X.shape == Y.shape == (4, 7) and X.dtype == torch.int64
        assert torch.equal(Y, X + 1)
        # Each row is a contiguous run of the corpus.
        assert torch.equal(X[:, 1:] - X[:, :-1], torch.ones(4, 6, dtype=torch.int64))


def test_sequential_rows_continue_across_batches():
    batches = list(sequential_batches(CORPUS, 5, 6, seed=3))
    for (X0, _), (X1, _) in zip(batches, batches[1:]):
        assert torch.equal(X1[:, 0], X0[:, -1] + 1)


def test_sequential_counts_follow_the_book_formula():
    stream = sequential_batches(CORPUS, 5, 6, seed=1)
    for _ in range(10):
        expected = len(stream)
        batches = list(stream)
        offset = int(batches[0][0][0, 0])  # first token of row 0 is the offset
        assert 0 <= offset <= 6
        num_tokens = ((1000 - offset - 1) // 5) * 5
        assert len(batches) == expected == (num_tokens // 5) // 6
        # Row i starts num_tokens / batch_size tokens after row i-1.
        assert torch.equal(batches[0][0][:, 0], offset + torch.arange(5) * (num_tokens // 5))


def test_random_batches_never_overlap_and_cover_what_the_book_says():
    stream = random_batches(CORPUS, 4, 7, seed=2)
    for _ in range(10):
        expected = len(stream)
        starts = torch.cat([X[:, 0] for X, _ in stream])
        offset = int(starts.min()) % 7
        num_subseqs = (1000 - offset - 1) // 7
        assert 0 <= offset <= 6
        assert len(starts) == expected * 4 == (num_subseqs // 4) * 4
        # Every start is offset + k * num_steps for a distinct k < num_subseqs: no two overlap.
        assert torch.all((starts - offset) % 7 == 0)
        ks = (starts - offset) // 7
        assert len(set(ks.tolist())) == len(ks) and int(ks.max()) < num_subseqs


def test_random_batches_are_shuffled_not_adjacent():
    X0, X1 = list(random_batches(CORPUS, 4, 7, seed=0))[:2]
    assert not torch.equal(X1[0][:, 0], X0[0][:, -1] + 1)


@pytest.mark.parametrize("make", [random_batches, sequential_batches])
def test_same_seed_same_batches_different_epochs_differ(make):
    a, b = make(CORPUS, 3, 5, seed=42), make(CORPUS, 3, 5, seed=42)
    epoch_a0, epoch_b0 = [x for x, _ in a], [x for x, _ in b]
    assert all(torch.equal(x, y) for x, y in zip(epoch_a0, epoch_b0))
    epoch_a1 = [x for x, _ in a]
    assert not all(torch.equal(x, y) for x, y in zip(epoch_a0, epoch_a1))


@pytest.mark.parametrize("make", [random_batches, sequential_batches])
def test_set_epoch_replays_an_epoch_exactly(make):
    stream = make(CORPUS, 3, 5, seed=7)
    epochs = [[x.clone() for x, _ in stream] for _ in range(3)]
    stream.set_epoch(2)
    replay = [x for x, _ in stream]
    assert len(replay) == len(epochs[2]) and all(torch.equal(x, y) for x, y in zip(replay, epochs[2]))


def test_iterators_leave_the_global_random_state_alone():
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    list(random_batches(CORPUS, 4, 7, seed=1))
    list(sequential_batches(CORPUS, 4, 7))  # seed=None draws from OS entropy, not torch's RNG
    assert torch.equal(torch.rand(1), before)


@pytest.mark.parametrize("sampling", ["random", "sequential"])
def test_shortest_corpus_gives_a_batch_and_one_less_is_a_clear_error(sampling):
    probe = BatchStream(CORPUS, 4, 7, sampling=sampling, seed=0)
    shortest = probe.min_tokens
    for seed in range(30):  # whatever the offset, at least one batch
        assert len(list(BatchStream(torch.arange(shortest), 4, 7, sampling=sampling, seed=seed))) >= 1
    with pytest.raises(ValueError, match=rf"corpus of {shortest - 1} tokens is too short for one batch "
                                         r"of batch_size=4 x num_steps=7"):
        BatchStream(torch.arange(shortest - 1), 4, 7, sampling=sampling)


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=0, num_steps=5), "batch_size must be >= 1, got 0"),
    (dict(batch_size=2, num_steps=-1), "num_steps must be >= 1, got -1"),
    (dict(batch_size=2, num_steps=5, sampling="shuffle"), "sampling must be one of random, sequential"),
])
def test_bad_sizes_are_errors_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchStream(CORPUS, **kwargs)


def test_corpus_must_be_one_dimensional():
    with pytest.raises(ValueError, match="1-D"):
        random_batches(torch.zeros(10, 10, dtype=torch.int64), 2, 2)


def test_num_batches_formula_is_the_same_for_both_modes():
    # (len - offset - 1) // T // B == ((len - offset - 1) // B) // T: the grid's columns over T.
    for length in range(50, 90):
        for offset in range(6):
            assert num_batches(length, 3, 5, offset) == ((length - offset - 1) // 3) // 5


@pytest.mark.parametrize("sampling", ["random", "sequential"])
def test_without_random_offset_every_epoch_starts_at_token_zero(sampling):
    # The Chinese edition's iterators: the same subsequences every epoch (random: in a new order).
    stream = BatchStream(CORPUS, 4, 7, sampling=sampling, seed=0, random_offset=False)
    assert stream.min_tokens == 4 * 7 + 1
    for _ in range(5):
        starts = torch.cat([X[:, 0] for X, _ in stream])
        assert int(starts.min()) == 0
        if sampling == "random":
            assert torch.all(starts % 7 == 0)  # subsequences cut at 0, 7, 14, ...
    with_offset = BatchStream(CORPUS, 4, 7, sampling=sampling, seed=0)
    assert {int(torch.cat([X[:, 0] for X, _ in with_offset]).min()) for _ in range(10)} != {0}


# ---- for any corpus and sizes (d2l §8.3.4) ---------------------------------------------------------

stream_args = st.fixed_dictionaries({
    "length": st.integers(0, 300), "batch_size": st.integers(1, 6), "num_steps": st.integers(1, 9),
    "sampling": st.sampled_from(["random", "sequential"]), "random_offset": st.booleans(),
    "seed": st.integers(0, 2**32), "shuffle": st.integers(0, 2**32),
    "dtype": st.sampled_from([torch.int64, torch.int32, torch.int16, list])})


def _stream(args):
    """A stream over a corpus of distinct ids in shuffled order, and each id's corpus position.
    The corpus is handed over as an int64, int32 or int16 tensor or a list; batches are int64."""
    g = torch.Generator().manual_seed(args["shuffle"])
    corpus = torch.randperm(args["length"], generator=g) + 1000  # ids are not positions
    position = {int(token): pos for pos, token in enumerate(corpus)}
    given = corpus.tolist() if args["dtype"] is list else corpus.to(args["dtype"])
    stream = BatchStream(given, args["batch_size"], args["num_steps"], sampling=args["sampling"],
                         seed=args["seed"], random_offset=args["random_offset"])
    return stream, corpus, position


def _min_tokens(args):
    # One batch needs batch_size * num_steps inputs plus one target after them, whatever the
    # offset: up to num_steps - 1 for random sampling and num_steps for sequential (the book's ranges).
    largest_offset = {"random": args["num_steps"] - 1, "sequential": args["num_steps"]}[args["sampling"]]
    return args["batch_size"] * args["num_steps"] + (largest_offset if args["random_offset"] else 0) + 1


@PROPERTY
@given(args=stream_args)
def test_a_corpus_too_short_for_one_batch_is_a_value_error(args):
    if args["length"] < _min_tokens(args):
        with pytest.raises(ValueError, match=f"corpus of {args['length']} tokens is too short for one batch"):
            _stream(args)
    else:
        stream, _, _ = _stream(args)
        assert stream.min_tokens == _min_tokens(args)
        for _ in range(3):
            assert len(list(stream)) >= 1


@PROPERTY
@given(args=stream_args)
def test_every_batch_is_windows_of_the_corpus_and_y_is_x_one_token_later(args):
    assume(args["length"] >= _min_tokens(args))
    stream, corpus, position = _stream(args)
    B, T = args["batch_size"], args["num_steps"]
    for _ in range(2):
        for X, Y in stream:
            assert X.shape == Y.shape == (B, T) and X.dtype == Y.dtype == torch.int64
            for i in range(B):
                pos = position[int(X[i, 0])]
                assert torch.equal(X[i], corpus[pos:pos + T])
                assert torch.equal(Y[i], corpus[pos + 1:pos + T + 1])


def _starts(batches, position):
    return [[position[int(t)] for t in X[:, 0]] for X, _ in batches]  # (num_batches, B) positions


@PROPERTY
@given(args=stream_args.filter(lambda a: a["sampling"] == "sequential"))
def test_sequential_rows_continue_across_batches_and_the_count_is_the_books(args):
    assume(args["length"] >= _min_tokens(args))
    stream, _, position = _stream(args)
    B, T, L = args["batch_size"], args["num_steps"], args["length"]
    for _ in range(2):
        expected = len(stream)
        starts = _starts(list(stream), position)
        offset = starts[0][0]
        assert 0 <= offset <= (T if args["random_offset"] else 0)
        # Book: num_tokens = ((L - offset - 1) // B) * B, rows of num_tokens // B, cut every T columns.
        row_len = (L - offset - 1) // B
        assert len(starts) == expected == row_len // T
        for k, row_starts in enumerate(starts):  # row i of batch k starts k * T into row i
            assert row_starts == [offset + i * row_len + k * T for i in range(B)]


@PROPERTY
@given(args=stream_args.filter(lambda a: a["sampling"] == "random"))
def test_random_sampling_uses_each_subsequence_at_most_once_per_epoch(args):
    assume(args["length"] >= _min_tokens(args))
    stream, _, position = _stream(args)
    B, T, L = args["batch_size"], args["num_steps"], args["length"]
    for _ in range(2):
        expected = len(stream)
        starts = [s for row in _starts(list(stream), position) for s in row]
        offset = starts[0] % T
        assert offset == 0 or args["random_offset"]
        # Book: num_subseqs = (L - offset - 1) // T subsequences at offset + k * T; num_subseqs // B batches.
        num_subseqs = (L - offset - 1) // T
        assert len(starts) == expected * B == (num_subseqs // B) * B
        assert all((s - offset) % T == 0 and (s - offset) // T < num_subseqs for s in starts)
        assert len(set(starts)) == len(starts)  # same grid, distinct starts: no two windows overlap
