"""A text read piece by piece gives exactly the token stream of the whole text, and a large file
is never held as a Python list of its characters.

The reference is the book's way: the whole text, cleaned into lines, tokenized, flattened.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from charlm.data import textfiles, tokenstream
from charlm.data.batches import BatchStream
from charlm.data.corpora import CorpusError
from charlm.data.dataset import load_corpus, load_splits, split_bounds
from charlm.data.text import CLEAN_MODES, clean_lines, flatten, tokenize
from charlm.data.vocab import Vocab

# Characters that make the cuts interesting: spaces of several kinds, newlines, letters whose
# lowercase depends on what follows (final sigma), non-ASCII letters that d2l cleaning removes.
TRICKY = st.text(alphabet=st.sampled_from(list("ab Σσ\n\r\t.\u00a0\u2003éz")), min_size=1, max_size=60)
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)
KINDS = [("char", False), ("word", False), ("word", True)]


# The reference the streamed pipeline is held to: the book's way, the whole text as one list of
# tokens, cut into splits and looked up one token at a time.

def whole_text_tokens(text: str, clean: str, token: str, eos: bool) -> list[str]:
    return flatten(tokenize(clean_lines(text, clean), token, eos=eos))


def split_stream(tokens: list[str], val_frac: float, test_frac: float) -> tuple[list[str], ...]:
    """A token list cut into contiguous ``[train | val | test]`` parts where `split_bounds` puts them.

    >>> split_stream(list("abcdefghij"), 0.2, 0.1)
    (['a', 'b', 'c', 'd', 'e', 'f', 'g'], ['h', 'i'], ['j'])
    """
    train_end, val_end = split_bounds(len(tokens), val_frac, test_frac)
    return tokens[:train_end], tokens[train_end:val_end], tokens[val_end:]


def encode(tokens: list[str], vocab: Vocab) -> torch.Tensor:
    """Token ids one lookup per token, as a 1-D int64 tensor; tokens the vocabulary lacks are ``<unk>``."""
    return torch.tensor([vocab.token_to_idx.get(tok, vocab.unk) for tok in tokens], dtype=torch.int64)


def chunked(text: str, sizes: list[int]) -> list[str]:
    chunks, i = [], 0
    for size in sizes:
        chunks.append(text[i:i + size])
        i += size
    return [c for c in chunks if c] + ([text[i:]] if text[i:] else [])


@SETTINGS
@given(text=st.one_of(TRICKY, st.text(min_size=1, max_size=60)),  # empty files are refused earlier
       sizes=st.lists(st.integers(1, 9), max_size=20),
       clean=st.sampled_from(CLEAN_MODES), kind=st.sampled_from(KINDS))
def test_pieces_give_the_tokens_of_the_whole_text(text, sizes, clean, kind):
    token, eos = kind
    stream = tokenstream.token_pieces(chunked(text, sizes), clean, token, eos)
    assert [tok for piece in stream for tok in piece] == whole_text_tokens(text, clean, token, eos)


def _write(path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


BOOK = textwrap.dedent("""\
    The Time Traveller (for so it will be convenient to speak of him)
    was expounding a recondite matter to us.   His grey eyes shone and
    twinkled, and his usually pale face was flushed and animated. ΣΑΣ Σ
    """) * 40


@pytest.mark.parametrize("clean, token, eos", [("d2l", "char", False), ("raw", "char", False),
                                               ("lower", "word", False), ("lines", "word", True)])
def test_a_file_read_in_tiny_chunks_gives_the_same_splits_as_the_book_way(tmp_path, monkeypatch,
                                                                          clean, token, eos):
    path = _write(tmp_path / "book.txt", BOOK)
    monkeypatch.setattr(textfiles, "CHUNK_BYTES", 13)
    splits = load_splits(path, clean=clean, token=token, eos=eos, max_tokens=1000)
    tokens = whole_text_tokens(BOOK, clean, token, eos)
    train, val, test = split_stream(tokens, 0.05, 0.05)
    vocab = Vocab(train[:1000])
    assert splits.vocab == vocab and splits.vocab.token_freqs == vocab.token_freqs
    for got, want in zip((splits.train, splits.val, splits.test), (train[:1000], val, test), strict=True):
        assert torch.equal(got, encode(want, vocab))
    ids, corpus_vocab = load_corpus(path, clean=clean, token=token, eos=eos)
    assert torch.equal(ids, encode(tokens, Vocab(tokens))) and corpus_vocab == Vocab(tokens)


def test_a_bad_byte_after_the_first_chunk_is_reported_at_its_offset(tmp_path, monkeypatch):
    monkeypatch.setattr(textfiles, "CHUNK_BYTES", 16)
    path = tmp_path / "bad.txt"
    path.write_bytes(b"plain text " * 10 + b"\xff and more")
    with pytest.raises(CorpusError, match="byte 0xff at offset 110"):
        load_splits(str(path), encoding="utf-8")  # without it, the file is detected as Windows-1252


@pytest.mark.parametrize("data, match", [(b"", "the file is empty"), (b" \n\t " * 100, "only whitespace"),
                                         (b"text\x00\x01\x02", "binary")])
def test_streamed_files_get_the_same_errors_as_whole_ones(tmp_path, monkeypatch, data, match):
    monkeypatch.setattr(textfiles, "CHUNK_BYTES", 16)
    path = tmp_path / "f.txt"
    path.write_bytes(data)
    with pytest.raises(CorpusError, match=match):
        load_splits(str(path))


def test_a_very_long_corpus_keeps_compact_ids_and_batches_are_int64(tmp_path, monkeypatch):
    path = _write(tmp_path / "book.txt", BOOK)
    wide = load_splits(path)
    monkeypatch.setattr(tokenstream, "COMPACT_FROM", 10)  # as if the text had 2^26 tokens or more
    compact = load_splits(path)
    assert wide.train.dtype == torch.int64 and compact.train.dtype == torch.uint8
    assert torch.equal(compact.train.long(), wide.train)
    for sampling in ("sequential", "random"):
        streams = [BatchStream(s.train, 4, 10, sampling=sampling, seed=0) for s in (wide, compact)]
        for (X, Y), (Xc, Yc) in zip(*streams, strict=True):
            assert Xc.dtype == Yc.dtype == torch.int64
            assert torch.equal(X, Xc) and torch.equal(Y, Yc)


@pytest.mark.slow
def test_a_large_file_is_never_a_python_list_of_its_characters(tmp_path):
    """64 MiB of text: as a list of characters it would take 512 MiB of pointers alone; streamed,
    the resident memory grows by its ids (one byte each) and a few chunks."""
    path = tmp_path / "big.txt"
    line = b"the time traveller was expounding a recondite matter to us\n"
    path.write_bytes(line * (64 * 2**20 // len(line)))
    script = textwrap.dedent(f"""
        import resource, sys
        from charlm.data import textfiles, tokenstream
        from charlm.data.dataset import load_splits
        textfiles.CHUNK_BYTES = 1 << 20
        tokenstream.COMPACT_FROM = 0
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        splits = load_splits({str(path)!r})
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(len(splits.train) + len(splits.val) + len(splits.test), (after - before) / 1024)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    tokens, grown_mib = out.stdout.split()
    assert int(tokens) > 60 * 2**20  # d2l cleaning drops only the newlines
    assert float(grown_mib) < 2 * 64, f"resident memory grew by {grown_mib} MiB"
