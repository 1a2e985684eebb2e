"""Named corpora and user text files: find them, download them, check them, read them.

A named corpus is looked for, in order, in the folder named by ``CHARLM_DATA`` (an offline data
folder), then in the user cache (``$XDG_CACHE_HOME/charlm`` or ``~/.cache/charlm``); failing both,
*The Time Machine* is unpacked from the copy charlm ships, and the others are downloaded into the
cache — streamed to a temporary file, SHA-1 checked, then renamed, so the
cache never holds a partial or wrong file. Any other path is read as a user text file.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ..cache import cache_dir
from ..suggest import did_you_mean
from . import bookshelf
from .gutenberg import without_boilerplate
from .textfiles import CorpusError, iter_file_text

log = logging.getLogger(__name__)

DATA_ENV = "CHARLM_DATA"
MIRROR_ENV = "CHARLM_MIRROR"
_SNIFF_BYTES = 1 << 16


@dataclass(frozen=True)
class CorpusSpec:
    """Where a named corpus comes from and how to read it."""

    name: str
    filename: str  # name in CHARLM_DATA and in the cache
    url: str
    sha1: str
    description: str
    # Zip member holding each split's text; a plain text file has {"all": None}.
    members: dict[str, str | None] = field(default_factory=lambda: {"all": None})
    # Publishers that revise their files (Project Gutenberg): a new hash is a warning, not an error.
    publisher_updates: bool = False
    # Validation and test fractions, taken as contiguous tails of the token stream (see dataset.py).
    split_fracs: tuple[float, float] = (0.05, 0.05)
    # Encodings tried in turn; the offline copy of #36 is Windows-1252, the publisher's is UTF-8.
    encodings: tuple[str, ...] = ("utf-8",)
    # A gzip copy inside the package (charlm/data/), so the book's default runs with no network and
    # no data folder; SHA-1 checked like a download when it is unpacked into the cache.
    embedded: str | None = None
    # A corpus of many books: its manifest inside the package (charlm/data/) lists them, splits them by
    # author and rebuilds the file from the books published at `url` (charlm.data.bookshelf).
    manifest: str | None = None


CORPORA: dict[str, CorpusSpec] = {spec.name: spec for spec in [
    CorpusSpec("timemachine", "timemachine.txt",
               "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt",
               "090b5e7e70c295757f55df93cb0a180b9691891a",
               "H. G. Wells, The Time Machine: the d2l book's file (public domain; shipped with charlm)",
               embedded="timemachine.txt.gz"),
    CorpusSpec("war-of-the-worlds", "36-0.txt", "https://www.gutenberg.org/files/36/36-0.txt",
               "fdf575eff02987ac9da1ca5623679883b38cdfdd",
               "H. G. Wells, The War of the Worlds (Project Gutenberg #36)", publisher_updates=True,
               encodings=("utf-8", "cp1252")),
    CorpusSpec("jaychou-lyrics", "jaychou_lyrics.txt.zip",
               "https://github.com/d2l-ai/d2l-zh/raw/v1.0.0/data/jaychou_lyrics.txt.zip",
               "9529987e701a4f37048ab778270a5dde9a762a0b",
               "Jay Chou album lyrics (Chinese), the d2l-zh teaching set",
               members={"all": "jaychou_lyrics.txt"}),
    CorpusSpec("tinyshakespeare", "tinyshakespeare.txt",
               "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
               "04486597058d11dcc2c556b1d0433891eb639d2e",
               "Tiny Shakespeare, the char-rnn benchmark text",
               split_fracs=(0.1, 0.0)),  # validation = the last 10 %, the split others publish on
    CorpusSpec("ptb", "ptb.zip", "http://d2l-data.s3-accelerate.amazonaws.com/ptb.zip",
               "319d85e578af0cdc590547f26231e4e31cdf1e42",
               "Penn Treebank (Mikolov's split), its own train/valid/test files",
               members={"train": "ptb/ptb.train.txt", "val": "ptb/ptb.valid.txt",
                        "test": "ptb/ptb.test.txt"}),
    CorpusSpec("pg-authors", "pg-authors.txt",
               "https://raw.githubusercontent.com/rcdm-uga/Gutenberg_Text/a0b16d35a9851168ce9ac649851c17b7ab08d48e/",
               "951c391b52fcd4062182d49c6f5b75acc2018316",
               "100 MB of public-domain English: 260 Project Gutenberg books by 77 authors, split by author "
               "(the English model's corpus, docs/english.md)",
               members={"train": None, "val": None, "test": None}, manifest="pg-authors.manifest.tsv"),
]}


def sha1_of(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha1(spec: CorpusSpec, path: Path) -> bool:
    """True if `path` has the expected SHA-1; a revised publisher file passes with a warning."""
    actual = sha1_of(path)
    if actual == spec.sha1:
        return True
    if spec.publisher_updates:
        log.warning("%s: SHA-1 %s differs from the recorded %s; the publisher revises this file, "
                    "so it is used anyway", path, actual, spec.sha1)
        return True
    return False


def source_url(spec: CorpusSpec) -> str:
    """Where a corpus is fetched from: its public address, or ``$CHARLM_MIRROR/<file name>`` where a
    mirror is set (a machine that reaches no corpus host, a local copy served over HTTP); the SHA-1
    check is the same either way."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    return f"{mirror.rstrip('/')}/{spec.filename}" if mirror else spec.url


def _store_checked(spec: CorpusSpec, dest: Path, write: Callable[[IO[bytes]], None], origin: str,
                   advice: str) -> Path:
    """Have `write` fill `dest` through a temporary file beside it, renamed into place only when whole
    and of the right SHA-1: the cache never holds a partial or wrong file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        if not _check_sha1(spec, tmp):
            raise CorpusError(f"corpus {spec.name!r}: {origin} has SHA-1 {sha1_of(tmp)}, expected "
                              f"{spec.sha1}; {advice}")
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def _copied(open_source: Callable[[], IO[bytes]]) -> Callable[[IO[bytes]], None]:
    def write(out: IO[bytes]) -> None:
        with open_source() as stream:
            shutil.copyfileobj(stream, out)
    return write


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def _assembled(spec: CorpusSpec, url: str) -> Callable[[IO[bytes]], None]:
    """How a corpus of many books is written: each book fetched from under `url` and checked, in turn."""
    def write(out: IO[bytes]) -> None:
        for text in bookshelf.assemble(manifest_of(spec.name), _fetch, url):
            out.write(text.encode("utf-8"))
    return write


def download(spec: CorpusSpec, dest: Path) -> Path:
    """Fetch the corpus into `dest` atomically, checking the SHA-1; raise CorpusError on failure. A
    corpus of many books is rebuilt from them, each checked (:func:`charlm.data.bookshelf.assemble`)."""
    url = source_url(spec)
    write = _assembled(spec, url) if spec.manifest else \
        _copied(lambda: urllib.request.urlopen(url, timeout=60))
    try:
        return _store_checked(spec, dest, write, f"the file downloaded from {url}", "it was not kept")
    except CorpusError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise CorpusError(f"corpus {spec.name!r} is not in ${DATA_ENV} "
                          f"({os.environ.get(DATA_ENV) or 'unset'}) nor in the cache ({dest.parent}), "
                          f"and downloading {url} failed ({err}); set {DATA_ENV} to a folder "
                          f"holding {spec.filename}") from None


def locate(name: str) -> Path:
    """The local file of the named corpus: CHARLM_DATA, else the cache, else downloaded to the cache."""
    spec = corpus_spec(name)
    data_dir = os.environ.get(DATA_ENV)
    if data_dir:
        candidate = Path(data_dir) / spec.filename
        if candidate.is_file():
            if not _check_sha1(spec, candidate):
                raise CorpusError(f"{candidate}: SHA-1 {sha1_of(candidate)} does not match corpus "
                                  f"{name!r} (expected {spec.sha1})")
            return candidate
    cached = cache_dir() / spec.filename
    if cached.is_file():
        if _check_sha1(spec, cached):
            return cached
        log.warning("%s: SHA-1 mismatch, removing it and downloading again", cached)
        cached.unlink()
    if spec.embedded:
        return unpack_embedded(spec, cached)
    log.info("downloading corpus %s from %s", name, source_url(spec))
    return download(spec, cached)


def embedded_file(spec: CorpusSpec) -> Path | None:
    """The gzip copy of a corpus that ships inside the package, if it has one."""
    return Path(__file__).with_name(spec.embedded) if spec.embedded else None


def unpack_embedded(spec: CorpusSpec, dest: Path) -> Path:
    """Unpack the package's copy into `dest` (the cache) atomically, SHA-1 checked like a download."""
    source = embedded_file(spec)
    advice = f"reinstall charlm, or set {DATA_ENV} to a folder holding {spec.filename}"
    try:
        return _store_checked(spec, dest, _copied(lambda: gzip.open(source, "rb")),
                              f"the copy inside charlm ({source})", advice)
    except CorpusError:
        raise
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise CorpusError(f"corpus {spec.name!r}: the copy inside charlm ({source}) cannot be read "
                          f"({err}); {advice}") from None


def corpus_spec(name: str) -> CorpusSpec:
    try:
        return CORPORA[name]
    except KeyError:
        raise CorpusError(f"unknown corpus {name!r}{did_you_mean(name, CORPORA)}: choose one of "
                          f"{', '.join(CORPORA)} or give the path of a text file") from None


def is_cached(name: str) -> Path | None:
    """Where the named corpus is already available locally, without downloading; None if nowhere."""
    spec = corpus_spec(name)
    for folder in (os.environ.get(DATA_ENV), cache_dir()):
        if folder and (Path(folder) / spec.filename).is_file():
            return Path(folder) / spec.filename
    return embedded_file(spec)


def decode_text(data: bytes, origin: str, encoding: str = "utf-8", *, sniff_only: bool = False) -> str:
    """Decode a text file's bytes; empty, binary or wrongly-encoded data is a CorpusError.
    ``sniff_only``: only the checks that the file's first bytes allow (for streamed files)."""
    if not data:
        raise CorpusError(f"{origin}: the file is empty")
    if not data.strip() and not sniff_only:
        raise CorpusError(f"{origin}: the file holds only whitespace")
    if b"\x00" in data[:_SNIFF_BYTES] and not encoding.lower().startswith("utf-16"):
        raise CorpusError(f"{origin}: looks like a binary file (it has NUL bytes), not text")
    if sniff_only:
        return ""
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        raise CorpusError(f"{origin}: not valid {encoding} (byte {data[err.start]:#04x} at offset "
                          f"{err.start}); pass another encoding (--encoding) if it is not {encoding}"
                          ) from None
    except LookupError:
        raise CorpusError(f"unknown text encoding {encoding!r}") from None
    return text.removeprefix("\ufeff")  # a byte-order mark is not part of the text


def manifest_of(name: str) -> list[bookshelf.Book]:
    """The books of a corpus of many books, from its manifest inside the package."""
    spec = corpus_spec(name)
    if spec.manifest is None:
        raise CorpusError(f"corpus {name!r} is one text, not a list of books")
    return bookshelf.read_manifest(Path(__file__).parent / spec.manifest)


def read_corpus_text(name: str, split: str = "all", encoding: str | None = None) -> str:
    """The text of a named corpus (one split's file for corpora that ship their own splits).

    Without an explicit `encoding`, the corpus's known encodings are tried in turn.
    """
    spec = corpus_spec(name)
    if split not in spec.members:
        raise CorpusError(f"corpus {name!r} has no file for split {split!r} "
                          f"(it has: {', '.join(spec.members)})")
    path, member = locate(name), spec.members[split]
    data = path.read_bytes() if member is None else _zip_member(path, member)
    origin = str(path) if member is None else f"{path}:{member}"
    encodings = (encoding,) if encoding else spec.encodings
    for enc in encodings[:-1]:
        try:
            return decode_text(data, origin, enc)
        except CorpusError:
            log.info("%s is not %s; trying %s", origin, enc, encodings[-1])
    return decode_text(data, origin, encodings[-1])


def _zip_member(path: Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read(member)
    except (zipfile.BadZipFile, KeyError) as err:
        raise CorpusError(f"{path}: cannot read {member} from the zip ({err})") from None


def has_own_splits(source: str) -> bool:
    """True for named corpora that ship separate train/val/test files (PTB)."""
    return source in CORPORA and "train" in CORPORA[source].members


def read_source(source: str | Path, split: str = "all", encoding: str | None = None,
                errors: str = "strict", keep_boilerplate: bool = True) -> str:
    """Text of a corpus name or a file path. An existing file path wins over a name."""
    return "".join(iter_source_text(source, split, encoding, errors, keep_boilerplate))


def iter_source_text(source: str | Path, split: str = "all", encoding: str | None = None,
                     errors: str = "strict", keep_boilerplate: bool = True,
                     left_out: list[int] | None = None) -> Iterator[str]:
    """:func:`read_source` in chunks: a user's file streamed (:func:`charlm.data.textfiles.iter_file_text`:
    its encoding detected unless given, `errors` applied, line endings made "\n"), a named corpus
    (a book, a few MB at most, in its known encodings, as published) as one chunk.

    Without `keep_boilerplate`, a user's Project Gutenberg file is read without its header and
    licence (:mod:`charlm.data.gutenberg`; how many characters that left out is appended to
    `left_out`). A named corpus is always read as published: the book's experiments read it so."""
    if not is_file_source(source):
        spec = corpus_spec(str(source))
        if spec.manifest:  # a split of whole authors' books, streamed out of the corpus file
            chunks = iter_file_text(locate(spec.name), encoding or "utf-8", "strict")
            yield from bookshelf.books_of(chunks, manifest_of(spec.name), _split_of(spec.name, split))
        else:
            yield read_corpus_text(source, _split_of(source, split), encoding)
    elif keep_boilerplate:
        yield from iter_file_text(source, encoding, errors)
    else:
        yield from without_boilerplate(iter_file_text(source, encoding, errors), left_out)


def is_file_source(source: str | Path) -> bool:
    """True for a user's file, False for a named corpus; an unknown name that is no path is an error."""
    if isinstance(source, Path) or os.path.isfile(source) or source not in CORPORA:
        if not isinstance(source, Path) and source not in CORPORA and not _looks_like_path(source):
            corpus_spec(source)  # raises: unknown corpus name
        return True
    return False


def _split_of(name: str, split: str) -> str:
    return "train" if split == "all" and has_own_splits(name) else split


def _looks_like_path(source: str) -> bool:
    return os.sep in source or "/" in source or "." in os.path.basename(source) or os.path.exists(source)
