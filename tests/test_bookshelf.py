"""pg-authors, a corpus of many books: split by whole authors while it streams, and rebuilt from the
books' published files, each checked."""

from __future__ import annotations

import hashlib
import random

import pytest

from charlm.data import bookshelf
from charlm.data.bookshelf import Book, author_parts, books_of
from charlm.data.textfiles import CorpusError


def _library(num_authors: int = 23) -> tuple[list[Book], list[str]]:
    """Books by `num_authors` authors (two each, in title order, so authors interleave) and their texts."""
    rng = random.Random(0)
    entries = []
    for a in range(num_authors):
        for b in range(2):
            title = f"{chr(65 + (a * 7 + b * 3) % 26)}{a}{b}"
            entries.append((title, f"Author {a:02d}", f"{title} by author {a}.\n" * rng.randint(1, 30)))
    entries.sort()
    books = [Book(f"{author}/{title}.txt", "-", "utf-8", len(text) + 2) for title, author, text in entries]
    return books, [text + "\n\n" for _, _, text in entries]


def test_every_tenth_author_from_the_fifth_validates_and_from_the_tenth_tests():
    parts = [bookshelf.part_of(i) for i in range(20)]
    assert [i for i, p in enumerate(parts) if p == "val"] == [4, 14]
    assert [i for i, p in enumerate(parts) if p == "test"] == [9, 19]
    books, _ = _library()
    by_author = author_parts(books)
    assert sorted(by_author)[4] == "Author 04" and by_author["Author 04"] == "val"


@pytest.mark.parametrize("size", [1, 13, 1000, 10**9])
def test_a_split_is_its_authors_books_whole_however_the_text_is_cut(size):
    books, texts = _library()
    corpus = "".join(texts)
    chunks = [corpus[i:i + size] for i in range(0, len(corpus), size)]
    parts = author_parts(books)
    for part in ("train", "val", "test"):
        expected = "".join(t for b, t in zip(books, texts) if parts[b.author] == part)
        assert "".join(books_of(chunks, books, part)) == expected
    assert sum(len("".join(books_of(chunks, books, p))) for p in ("train", "val", "test")) == len(corpus)


def test_a_corpus_that_disagrees_with_its_manifest_is_an_error():
    books, texts = _library()
    with pytest.raises(CorpusError, match="its manifest says"):
        list(books_of(["".join(texts)[:-1]], books, "train"))
    with pytest.raises(CorpusError, match="longer than its manifest says"):
        list(books_of(["".join(texts) + "x"], books, "train"))


PUBLISHED = ("\ufeffThe Project Gutenberg EBook of Emma, by Jane Austen\r\n\r\n"
             "*** START OF THIS PROJECT GUTENBERG EBOOK EMMA ***\r\n\r\n\r\nProduced by A Volunteer\r\n\r\n"
             "EMMA\r\n\r\nEmma Woodhouse, handsome, clever, and rich.\r\n\r\n\r\n"
             "End of the Project Gutenberg EBook of Emma, by Jane Austen\r\n\r\n"
             "*** END OF THIS PROJECT GUTENBERG EBOOK EMMA ***\r\n\r\nThe licence.\r\n").encode()
CLEANED = ("Produced by A Volunteer\n\nEMMA\n\nEmma Woodhouse, handsome, clever, and rich.\n\n\n"
           "End of the Project Gutenberg EBook of Emma, by Jane Austen\n\n")


def test_a_book_is_rebuilt_as_the_corpus_holds_it_and_checked():
    book = Book("Austen, Jane/Emma.txt", hashlib.sha1(PUBLISHED).hexdigest(), "utf-8", len(CLEANED))
    fetched = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return PUBLISHED
    assert list(bookshelf.assemble([book], fetch, "https://example.org/repo/abc/")) == [CLEANED]
    assert fetched == ["https://example.org/repo/abc/Austen%2C%20Jane/Emma.txt"]
    with pytest.raises(CorpusError, match="Emma.txt: SHA-1 .*, the manifest says 00"):
        list(bookshelf.assemble([Book(book.path, "00", "utf-8", book.characters)], fetch, "https://e/"))
    with pytest.raises(CorpusError, match="characters once cleaned, the manifest says 5"):
        list(bookshelf.assemble([Book(book.path, book.sha1, "utf-8", 5)], fetch, "https://e/"))


def test_the_shipped_manifest_splits_pg_authors_into_its_authors(data_dir):
    from charlm.data.corpora import manifest_of

    books = manifest_of("pg-authors")
    parts = author_parts(books)
    assert len(books) == 260 and len(parts) == 77
    assert sorted(a for a, p in parts.items() if p == "val")[0].startswith("Balzac")
    assert sum(b.characters for b in books) == 99_471_481
