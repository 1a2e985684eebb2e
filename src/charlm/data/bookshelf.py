"""A corpus made of many books, listed in a manifest: split by author, and put together from the
books' public files.

``pg-authors`` (the English model's corpus, docs/english.md) is 260 Project Gutenberg books by 77
authors in one file. A model that is to be scored on writers it never read must be held out whole
authors, not the file's last pages (its books are in title order): the manifest, which ships with
charlm, lists each book's path (``Author/Title.txt``), the SHA-1 of its raw bytes, the encoding it
was read with, and its length in characters in the joined file, blank line included. That is enough
to cut the file back into its books while it streams, and to rebuild it from the published books
where no copy is at hand.
"""

from __future__ import annotations

import csv
import hashlib
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .gutenberg import between_stars
from .textfiles import CorpusError

SEPARATOR = "\n\n"  # a blank line after each book


@dataclass(frozen=True)
class Book:
    path: str  # Author/Title.txt in the source repository
    sha1: str  # of its raw bytes there
    encoding: str
    characters: int  # in the joined corpus: the book, and the blank line after it (the last one too)

    @property
    def author(self) -> str:
        return self.path.split("/")[0]


def read_manifest(path: Path) -> list[Book]:
    with path.open(encoding="utf-8", newline="") as f:
        return [Book(row["path"], row["sha1"], row["encoding"], int(row["characters"]))
                for row in csv.DictReader(f, delimiter="\t")]


def part_of(index: int) -> str:
    """The split of the author at `index` in name order: every tenth from the fifth validates, every
    tenth from the tenth tests, the rest trains (8, 7 and 62 of pg-authors's 77 authors)."""
    return "val" if index % 10 == 4 else "test" if index % 10 == 9 else "train"


def author_parts(books: list[Book]) -> dict[str, str]:
    return {author: part_of(i) for i, author in enumerate(sorted({book.author for book in books}))}


def books_of(chunks: Iterable[str], books: list[Book], part: str) -> Iterator[str]:
    """The text of the books whose authors are in `part`, in the corpus's order, from the corpus
    given in chunks (never held whole). CorpusError if the text and the manifest disagree in length."""
    parts = author_parts(books)
    keep = [parts[book.author] == part for book in books]
    ends = [0]
    for book in books:
        ends.append(ends[-1] + book.characters)
    index, at = 0, 0  # the book being read, and where the chunk starts in the corpus
    for chunk in chunks:
        start = 0
        while start < len(chunk):
            if index == len(books):
                raise CorpusError(f"the corpus is longer than its manifest says ({ends[-1]:,} characters)")
            stop = min(len(chunk), ends[index + 1] - at)
            if keep[index]:
                yield chunk[start:stop]
            if at + stop == ends[index + 1]:
                index += 1
            start = stop
        at += len(chunk)
    if at != ends[-1]:
        raise CorpusError(f"the corpus has {at:,} characters; its manifest says {ends[-1]:,}")


def book_url(base: str, book: Book) -> str:
    return base.rstrip("/") + "/" + urllib.parse.quote(book.path)


def cleaned(data: bytes, book: Book) -> str:
    """A book's published bytes as the corpus holds it: decoded, line ends made "\\n", the text
    between its ``*** START OF`` and ``*** END OF`` lines, without blank lines at either end."""
    text = data.decode(book.encoding).removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return between_stars(text)


def assemble(books: list[Book], fetch: Callable[[str], bytes], base: str) -> Iterator[str]:
    """The corpus rebuilt from its books, fetched one by one (`fetch(url)` gives a book's bytes), each
    checked against its SHA-1 and its length; the caller checks the whole against the corpus's."""
    for book in books:
        url = book_url(base, book)
        data = fetch(url)
        if hashlib.sha1(data).hexdigest() != book.sha1:
            raise CorpusError(f"{url}: SHA-1 {hashlib.sha1(data).hexdigest()}, the manifest says {book.sha1}")
        text = cleaned(data, book) + SEPARATOR
        if len(text) != book.characters:
            raise CorpusError(f"{url}: {len(text):,} characters once cleaned, the manifest says "
                              f"{book.characters:,}")
        yield text
