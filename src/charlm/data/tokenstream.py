"""A corpus's token stream in pieces, so that a text of gigabytes never becomes one Python list.

The book reads a whole text, cleans it into lines and tokenizes it into a Python list of tokens:
fine for a book, but a list costs 8 bytes of pointer per character, 16 GB for a 2 GB file. Here the
text arrives in chunks (:func:`charlm.data.corpora.iter_source_text`), each cut where no cleaning mode
or tokenizer looks across the cut, and each piece is cleaned and tokenized on its own; the pieces'
tokens, one after the other, are exactly the stream the whole text gives (tests/test_tokenstream.py)::

    chunks --cut after the last newline (line modes) / before the last whitespace run--> pieces
    pieces --clean_lines, tokenize--> a string of characters, or a list of words, per piece

:func:`count` and :func:`encode_into` then work one piece at a time: the vocabulary comes from
counts, and the ids go straight into preallocated tensors.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator

import torch

from .text import clean_lines, tokenize

LINE_MODES = ("d2l", "lines")  # cleaned line by line: a piece must hold whole lines
_COMMON_SPACES = (" ", "\n", "\t", "\r")

Piece = str | list[str]  # the characters of a piece as one string, or its word tokens


def _space_cut(text: str, start: int) -> int:
    """Where the last whitespace run of ``text[start:]`` begins (0 if it has none): the pieces
    then end on a non-space and the cut splits neither a word nor a run of spaces."""
    i = max(text.rfind(c, start) for c in _COMMON_SPACES) + 1
    if i == 0:
        return 0
    while i > 0 and text[i - 1].isspace():
        i -= 1
    return i


def _cut(text: str, start: int, clean: str, token: str) -> int:
    """How much of ``text`` can be processed now; ``text[start:]`` is the newly arrived chunk."""
    if clean in LINE_MODES:
        return text.rfind("\n", start) + 1 or 0
    if clean == "lower" or token == "word":  # whitespace is collapsed or split on: cut before it
        return _space_cut(text, start)
    return len(text)  # raw and lyrics characters: every character is cleaned on its own


def pieces(chunks: Iterable[str], clean: str, token: str) -> Iterator[tuple[str, bool]]:
    """Cut the text into pieces that clean and tokenize independently; yields (piece, is_last)."""
    carry, previous = "", None
    for chunk in chunks:
        text = carry + chunk
        cut = _cut(text, len(carry), clean, token)  # 0: no safe cut yet (a very long line), wait
        carry = text[cut:]
        if cut:
            if previous is not None:
                yield previous, False
            previous = text[:cut]
    if carry:
        if previous is not None:
            yield previous, False
        previous = carry
    if previous is not None:
        yield previous, True


def piece_tokens(piece: str, clean: str, token: str, eos: bool, *, first: bool, last: bool) -> Piece:
    """The tokens of one piece: a string of its characters, or a list of its words."""
    lines = clean_lines(piece, clean)
    if clean == "lower" and not first and piece[:1].isspace() and lines[0]:
        lines = [" " + lines[0]]  # the whitespace run before this piece, collapsed to one space
    if token == "char":
        return "".join(lines)
    # One-line modes: the whole text is one line, so only its very end gets an <eos>.
    return [tok for line in tokenize(lines, "word", eos=eos and (last or clean in LINE_MODES))
            for tok in line]


def token_pieces(chunks: Iterable[str], clean: str, token: str, eos: bool) -> Iterator[Piece]:
    """The token stream of a text given in chunks, one piece at a time (empty pieces skipped)."""
    if token == "char" and eos:
        tokenize([], "char", eos=True)  # raises the usual error
    first = True
    for piece, last in pieces(chunks, clean, token):
        tokens = piece_tokens(piece, clean, token, eos, first=first, last=last)
        first = False
        if tokens:
            yield tokens


def count_tokens(stream: Iterable[Piece]) -> int:
    return sum(len(piece) for piece in stream)


def _code_points(chars: str) -> torch.Tensor:
    """The characters of a string as int32 code points, without a Python object per character."""
    return torch.frombuffer(bytearray(chars.encode("utf-32-le", "surrogatepass")), dtype=torch.int32)


def count(stream: Iterable[Piece], limit: int) -> collections.Counter:
    """How often each of the first ``limit`` tokens occurs, in order of first appearance (as
    ``Counter(tokens)`` orders them, which the vocabulary's tie-breaking relies on)."""
    counter: collections.Counter = collections.Counter()
    seen = 0
    for piece in stream:
        piece = piece[:limit - seen]
        seen += len(piece)
        if isinstance(piece, str):
            _count_chars(piece, counter)
        else:
            counter.update(piece)
        if seen >= limit:
            break
    return counter


def _count_chars(chars: str, counter: collections.Counter) -> None:
    counts = torch.bincount(_code_points(chars).long())
    present = torch.nonzero(counts).squeeze(1).tolist()
    new = [chr(point) for point in present if chr(point) not in counter]
    for char in sorted(new, key=chars.find):  # new characters join in order of first appearance
        counter[char] = 0
    for point in present:
        counter[chr(point)] += int(counts[point])


COMPACT_FROM = 1 << 26  # tokens; below this, ids are int64 (512 MiB at most)


def id_dtype(num_tokens: int, vocab_size: int) -> torch.dtype:
    """int64 as everywhere else, but for a stream too long for that the smallest type that holds
    every id (2 GB of characters: 2 GB of uint8 ids instead of 16 GB of int64)."""
    if num_tokens < COMPACT_FROM:
        return torch.int64
    for dtype in (torch.uint8, torch.int16, torch.int32):
        if vocab_size - 1 <= torch.iinfo(dtype).max:
            return dtype
    return torch.int64


def encode_into(stream: Iterable[Piece], lookup: dict[str, int], unk: int,
                outputs: list[torch.Tensor | int]) -> None:
    """Write the ids of the stream's tokens into ``outputs``, one after the other, until all are
    full; an int in ``outputs`` skips that many tokens. Tokens missing from ``lookup`` become ``unk``."""
    targets = iter(outputs)
    out, filled = next(targets, None), 0
    table = _char_table(lookup, unk)
    for piece in stream:
        ids = _piece_ids(piece, lookup, unk, table)
        while len(ids) and out is not None:
            size = out if isinstance(out, int) else len(out)
            take = min(len(ids), size - filled)
            if not isinstance(out, int):
                out[filled:filled + take] = ids[:take]
            ids, filled = ids[take:], filled + take
            if filled == size:
                out, filled = next(targets, None), 0
        if out is None:
            return


def _char_table(lookup: dict[str, int], unk: int) -> torch.Tensor:
    """Code point -> id for the single-character tokens, ``unk`` elsewhere."""
    points = {ord(t): i for t, i in lookup.items() if len(t) == 1}
    table = torch.full((max(points, default=0) + 2,), unk, dtype=torch.int64)
    for point, i in points.items():
        table[point] = i
    return table


def _piece_ids(piece: Piece, lookup: dict[str, int], unk: int, table: torch.Tensor) -> torch.Tensor:
    if isinstance(piece, str):
        points = _code_points(piece).long().clamp_(max=len(table) - 1)  # the last entry is unk
        return table[points]
    return torch.tensor([lookup.get(tok, unk) for tok in piece], dtype=torch.int64)
