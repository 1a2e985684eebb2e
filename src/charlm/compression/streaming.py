"""compress / decompress as streams: the input read a segment at a time, the archive written as it goes.

    with open("book.txt", "rb") as f, open("book.chlm", "wb") as out:
        compress_stream(f, out)                      # (bytes of the original, bytes of the archive)
    archive = compress(data)                         # the same for bytes in memory
    assert decompress(archive) == data

The input is cut into segments of `chunk_size` bytes (1 MB), each read whole whatever one read
returns, so that a file and a pipe give the very same segments and so the very same archive. Each
segment's symbols are coded as a stream of their own (:mod:`.container`'s frames), or stored as they
are where coding would not shrink them; the model learns on from one segment to the next, the
decoder repeating every step, stored segments included. What is held in memory is one segment and
its coded bytes, the model and its tables: never the whole input (docs/compression.md, "Big inputs").
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from ..checkpoint import run_folder
from . import codec, race
from .codec import CompressSettings, model_digest
from .container import (
    CODED,
    STORED,
    ArchiveError,
    ArchiveReader,
    ArchiveWriter,
    Frame,
    Header,
    check_same,
    crc32,
    original_length,
)

Progress = Callable[[int, int | None], None]  # (bytes of the original done, in all: None where unknown)
CHUNK = 1 << 20  # bytes of the input per segment: the memory one segment takes is some 13 times that
MAX_CHUNK = 1 << 28
_MISMATCH = ("decoding did not reproduce the original (CRC-32 mismatch): the archive is damaged, or this "
             "machine computes the model's floats differently")


class _Counted:
    """A binary file that counts the bytes read from it or written to it."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.count = file, 0

    def read(self, n: int = -1) -> bytes:
        data = self.file.read(n)
        self.count += len(data)
        return data

    def write(self, data: bytes) -> int:
        self.count += len(data)
        return self.file.write(data)


def _read_full(source: BinaryIO, n: int) -> bytes:
    """`n` bytes, fewer only at the end: a pipe's read gives what it has, a file's all."""
    data = source.read(n)
    while data and len(data) < n and (more := source.read(n - len(data))):
        data += more
    return data


def _char_boundary(piece: bytes) -> int:
    """Where `piece` ends on a UTF-8 character's boundary: before a last character cut in two."""
    for back in range(1, min(4, len(piece) - 1) + 1):
        byte = piece[-back]
        if byte < 0x80:
            return len(piece)
        if byte >= 0xC0:  # a lead byte: its character needs 2, 3 or 4 bytes
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(piece) - back if need > back else len(piece)
    return len(piece)


def segments(source: BinaryIO, size: int, text: bool = False) -> Iterator[bytes]:
    """The input in segments of `size` bytes, the last shorter. `text`: each ends on a character's
    boundary (the pretrained mode reads characters), the bytes of a character cut in two beginning
    the next one: ``b"ab\\xc3\\xa9"`` in segments of 3 -> ``b"ab"``, ``b"\\xc3\\xa9"``."""
    carry = b""
    while piece := carry + _read_full(source, size - len(carry)):
        cut = _char_boundary(piece) if text and len(piece) == size else len(piece)
        carry, piece = piece[cut:], piece[:cut]
        yield piece


def _remaining(source: BinaryIO) -> int | None:
    """Bytes left in a seekable source (a file), None for a pipe."""
    try:
        if not source.seekable():
            return None
        here = source.tell()
        end = source.seek(0, io.SEEK_END)
        source.seek(here)
        return end - here
    except OSError:
        return None


def _within(progress: Progress | None, before: int, raw: int, symbols: int,
            total: int | None) -> Callable[[int], None]:
    """A segment's progress in symbols, told as bytes of the original."""
    if progress is None:
        return lambda done: None
    return lambda done: progress(before + raw * done // max(symbols, 1), total)


def compress_stream(source: BinaryIO, sink: BinaryIO, *, run: str | Path | None = None,
                    settings: CompressSettings | None = None, progress: Progress | None = None,
                    chunk_size: int = CHUNK) -> tuple[int, int]:
    """Write a charlm archive of everything `source` holds to `sink`, a segment at a time: with `run`
    (a character run's folder) in the pretrained mode, without it in the online mode. Returns the
    bytes of the original and of the archive."""
    if not isinstance(chunk_size, int) or not 16 <= chunk_size <= MAX_CHUNK:
        raise ValueError(f"--chunk-size must be an integer in 16..{MAX_CHUNK}, got {chunk_size!r}")
    mode = "online" if run is None else "pretrained"
    total, out = _remaining(source), _Counted(sink)
    pieces = segments(source, chunk_size, text=mode == "pretrained")
    first = next(pieces, b"")  # the online network's start reads it
    settings = codec.resolved(settings, run, first)
    run_dir = None if run is None else run_folder(run)
    with codec.pinned(settings.threads):
        coder = codec.Coder(mode, settings, run_dir, partial(codec.encoder_network, mode), race.library)
        info: dict[str, Any] = {"settings": settings.to_dict(), **codec.platform()}
        if settings.start == "english" and run_dir is None:
            info["start"] = codec.start_digest()  # the decoder must start from the very same weights
        if run_dir is not None:
            info["model_sha256"] = model_digest(run_dir)
            info["network"] = "c" if coder.in_c else "torch"  # the decoder follows suit
        archive = ArchiveWriter(out, Header(mode, info))
        length, crc = 0, 0
        for piece in itertools.chain([first] if first else [], pieces):
            stream = coder.stream(piece)
            symbols = int(stream.lengths.sum())
            coded = coder.encode(stream, _within(progress, length, len(piece), symbols, total))
            # random or already compressed bytes are stored: never more than a frame's 21 bytes larger
            kind, data = (CODED, coded) if len(coded) < len(piece) else (STORED, piece)
            archive.frame(Frame(kind, len(piece), symbols, data))
            length, crc = length + len(piece), crc32(piece, crc)
        archive.close(length, crc)
    if progress is not None:
        progress(length, length)
    return length, out.count


def decompress_stream(source: BinaryIO, sink: BinaryIO, *, run: str | Path | None = None,
                      progress: Progress | None = None) -> tuple[int, int]:
    """Write the original of the charlm archive in `source` to `sink`, a segment at a time;
    ArchiveError if it is damaged or made otherwise. Returns the bytes of the original and of the
    archive. What is written before an error is found is not to be kept (the CLI removes it)."""
    total, given = original_length(source), _Counted(source)
    archive = ArchiveReader(given)
    mode, info = archive.header.mode, archive.header.settings
    check_same(codec.recorded_platform(info), codec.platform(), codec.PLATFORM_KEYS)
    settings = CompressSettings.from_dict(info.get("settings", {}))
    if not settings.lanes or settings.lr is None or settings.threads is None:
        raise ArchiveError("the archive's header is damaged (no lane count, learning rate or thread count)")
    run_dir = _decoder_run(mode, info, run)
    if mode == "online" and settings.start == "english":
        _check_start(info)
    length, crc = 0, 0
    with codec.pinned(settings.threads):
        coder = codec.Coder(mode, settings, run_dir, partial(codec.decoder_network, mode, info),
                            race.library)
        for frame in archive.frames():
            if frame.kind == STORED:  # the model learns from it as the encoder's did
                coder.encode(coder.stream(frame.data), lambda done: None)
                piece = frame.data
            else:
                piece = coder.decode(frame.symbols, frame.data,
                                     _within(progress, length, frame.raw, frame.symbols, total))
            if len(piece) != frame.raw:
                raise ArchiveError(_MISMATCH)
            sink.write(piece)
            length, crc = length + len(piece), crc32(piece, crc)
    trailer = archive.trailer
    if trailer is None or (length, crc) != (trailer.length, trailer.crc):
        raise ArchiveError(_MISMATCH)
    if progress is not None:
        progress(length, length)
    return length, given.count


def _check_start(info: dict[str, Any]) -> None:
    """An archive that starts from the byte model of English needs this charlm's to be that one."""
    try:
        here = codec.start_digest()
    except ValueError as err:
        raise ArchiveError(str(err)) from None
    if info.get("start") != here:
        raise ArchiveError(f"this archive starts from the byte model of English {info.get('start')!r}, "
                           f"but this charlm ships {here!r}: decode it with the release that made it")


def _decoder_run(mode: str, info: dict[str, Any], run: str | Path | None) -> Path | None:
    """The run a decoder needs: none online, the very one the encoder used in the pretrained mode."""
    if mode == "online":
        if run is not None:
            raise ArchiveError("this archive was made in the online mode: it needs no --run")
        return None
    if run is None:
        raise ArchiveError("this archive was made with a trained model: give it with --run RUN")
    run_dir = run_folder(run)
    if model_digest(run_dir) != info.get("model_sha256"):
        raise ArchiveError(f"{run_dir} is not the model this archive was made with (SHA-256 of its files "
                           f"differs)")
    return run_dir


def compress(data: bytes, *, run: str | Path | None = None, settings: CompressSettings | None = None,
             progress: Progress | None = None, chunk_size: int = CHUNK) -> bytes:
    """A charlm archive of `data` (:func:`compress_stream` in memory): with `run` (a character run's
    folder) in the pretrained mode, without it in the online mode. :func:`decompress` gives `data`
    back, byte for byte."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"compress takes bytes, got {type(data).__name__}")
    out = io.BytesIO()
    compress_stream(io.BytesIO(bytes(data)), out, run=run, settings=settings, progress=progress,
                    chunk_size=chunk_size)
    return out.getvalue()


def decompress(archive: bytes, *, run: str | Path | None = None, progress: Progress | None = None) -> bytes:
    """The original bytes of a charlm archive; ArchiveError if it is damaged or made otherwise."""
    out = io.BytesIO()
    decompress_stream(io.BytesIO(bytes(archive)), out, run=run, progress=progress)
    return out.getvalue()
