"""A user's text file: its encoding found, its bytes decoded in chunks, its line endings made "\\n".

Most plain-text e-books are not UTF-8: old ones hold Windows-1252 bytes (curly quotes 0x93/0x94,
dashes 0x97). So without ``--encoding`` the encoding is found, once per file, in this order:

    a byte-order mark (UTF-8, UTF-16, UTF-32)               exact
    every byte of the file valid UTF-8                     exact (checked over the whole file, streamed)
    else charset-normalizer's best among ENCODINGS         on the file's start and the bytes around the
                                                           first one that is not UTF-8

The detection is charset-normalizer's (``from_bytes`` restricted to ``ENCODINGS``): left to choose
among every code page it calls short English texts in Windows-1252 "cp1250", whose letters differ.
Decoding then runs in chunks of ``CHUNK_BYTES``, so a file of gigabytes is never one string, and
Windows (CRLF) and old Mac (CR) line endings become "\\n", as Python's text mode reads them: the
model learns one line break, whichever system wrote the file.
"""

from __future__ import annotations

import codecs
import io
import logging
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


class CorpusError(ValueError):
    """A corpus cannot be found, fetched, verified or read. The message names the file or corpus.
    (Defined with the reading of files, the lowest layer that raises it; :mod:`charlm.data.corpora`
    re-exports it.)"""

CHUNK_BYTES = 1 << 22  # decoded 4 MiB at a time: tokenizing a chunk holds ~25 bytes per character of it
SNIFF_BYTES = 1 << 16  # the start of the file that must hold no NUL byte unless it is UTF-16/32
SAMPLE_BYTES = 1 << 20  # what charset-normalizer reads: this much of the start, and as much around the
# first byte that is not UTF-8 (a long ASCII preamble must not hide the rest of the text)
# The encodings detection chooses among: Unicode, and the legacy single-byte ones of old e-texts.
ENCODINGS = ("utf_8", "utf_16", "utf_32", "cp1252", "latin_1")
ERRORS = ("strict", "replace")


def detect_encoding(path: Path) -> tuple[str, str]:
    """The encoding of the file at `path` and how it was found: ``("cp1252", "not UTF-8 (byte 0x92
    at offset 1171); charset-normalizer's best guess")``. A CorpusError when no candidate fits."""
    with path.open("rb") as f:
        head = f.read(SAMPLE_BYTES)
        bom = _bom_encoding(head)
        if bom:
            return bom, "its byte-order mark"
        _check_start(head, str(path), "utf-8")  # empty or binary: said as such, not as an encoding
        bad = _first_non_utf8(head, f)
        if bad is None:
            return "utf-8", "every byte is valid UTF-8"
        f.seek(max(0, bad - SAMPLE_BYTES // 2))
        around = f.read(SAMPLE_BYTES)
    from charset_normalizer import from_bytes  # imported on first use: `import charlm` stays light

    match = from_bytes(head + b"\n" + around, cp_isolation=list(ENCODINGS)).best()
    if match is None or codecs.lookup(match.encoding).name == "utf-8":
        raise CorpusError(f"{path}: cannot tell its text encoding (not UTF-8 at byte {bad}, and none of "
                          f"{', '.join(ENCODINGS[3:])} fits); pass it with --encoding")
    return codecs.lookup(match.encoding).name, f"not UTF-8 (from byte {bad}); charset-normalizer's best guess"


def _bom_encoding(head: bytes) -> str | None:
    # UTF-32-LE's mark begins with UTF-16-LE's: look for the longer marks first.
    for bom, name in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                      (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                      (codecs.BOM_UTF16_BE, "utf-16")):
        if head.startswith(bom):
            return name
    return None


def _first_non_utf8(head: bytes, rest: io.BufferedReader) -> int | None:
    """The offset of the first byte that is not UTF-8, reading the whole file; None if there is none."""
    decoder, offset, data = codecs.getincrementaldecoder("utf-8")(), 0, head
    while True:
        pending = len(decoder.getstate()[0])
        try:
            decoder.decode(data, final=not data)
        except UnicodeDecodeError as err:
            return offset - pending + err.start
        if not data:
            return None
        offset += len(data)
        data = rest.read(CHUNK_BYTES)


def resolve_encoding(path: str | Path, encoding: str | None) -> str:
    """`encoding` checked, or the file's detected when it is None (and said in one line, unless it is
    plain UTF-8)."""
    if encoding is not None:
        try:
            return codecs.lookup(encoding).name
        except LookupError:
            raise CorpusError(f"--encoding {encoding}: unknown text encoding") from None
    path = _readable(Path(path))
    try:
        name, how = detect_encoding(path)
    except OSError as err:
        raise CorpusError(f"{path}: cannot be read ({err.strerror})") from None
    # Plain UTF-8 is what anyone expects, and goes unsaid; anything else is worth a line.
    log.log(logging.DEBUG if name == "utf-8" else logging.INFO, "reading %s as %s (%s)", path, name, how)
    return name


def _readable(path: Path) -> Path:
    if not path.exists():
        raise CorpusError(f"{path}: no such file")
    if path.is_dir():
        raise CorpusError(f"{path}: is a folder, not a text file")
    return path


def iter_file_text(path: str | Path, encoding: str | None = None, errors: str = "strict",
                   chunk_bytes: int | None = None) -> Iterator[str]:
    """The text of a user's file, piece by piece (at most about `chunk_bytes` bytes each), in
    `encoding` (None: detected), line endings made "\\n". `errors` "replace" turns bytes that cannot
    be decoded into U+FFFD; "strict" makes the first an error naming its offset.

    A missing, folder, empty, binary or whitespace-only file is a CorpusError naming it.
    """
    if errors not in ERRORS:
        raise CorpusError(f"--errors must be one of {', '.join(ERRORS)}, got {errors!r}")
    path = _readable(Path(path))
    encoding = resolve_encoding(path, encoding)
    try:
        with path.open("rb") as f:
            yield from _decode_chunks(f, str(path), encoding, errors, chunk_bytes or CHUNK_BYTES)
    except OSError as err:
        raise CorpusError(f"{path}: cannot be read ({err.strerror})") from None


def read_file_text(path: str | Path, encoding: str | None = None, errors: str = "strict") -> str:
    """The whole text of a user's file (see :func:`iter_file_text`)."""
    return "".join(iter_file_text(path, encoding, errors))


def _decode_chunks(f: io.BufferedReader, origin: str, encoding: str, errors: str,
                   chunk_bytes: int) -> Iterator[str]:
    inner = codecs.getincrementaldecoder(encoding)(errors=errors)
    decoder = io.IncrementalNewlineDecoder(inner, translate=True)  # CRLF and CR -> LF, across chunks
    offset, seen_text, seen_any = 0, False, False
    while True:
        data = f.read(chunk_bytes)
        if offset == 0:
            _check_start(data, origin, encoding)
        pending = len(inner.getstate()[0])
        try:
            text = decoder.decode(data, final=not data)
        except UnicodeDecodeError as err:
            at = offset - pending + err.start
            raise CorpusError(f"{origin}: not valid {encoding} (byte {err.object[err.start]:#04x} at offset "
                              f"{at}); pass the file's encoding with --encoding, or --errors replace to "
                              f"replace what cannot be decoded") from None
        if offset == 0:
            text = text.removeprefix("\ufeff")  # a byte-order mark is not part of the text
        seen_text, seen_any = seen_text or bool(text.strip()), seen_any or bool(text)
        if text:
            yield text
        if not data:
            break
        offset += len(data)
    if not seen_any:  # bytes, but no text: a byte-order mark alone
        raise CorpusError(f"{origin}: no text after decoding ({encoding}): the file holds only a "
                          f"byte-order mark")
    if not seen_text:
        raise CorpusError(f"{origin}: the file holds only whitespace")


def _check_start(data: bytes, origin: str, encoding: str) -> None:
    if not data:
        raise CorpusError(f"{origin}: the file is empty")
    if b"\x00" in data[:SNIFF_BYTES] and not encoding.startswith(("utf-16", "utf-32")):
        raise CorpusError(f"{origin}: looks like a binary file (it has NUL bytes), not text")
