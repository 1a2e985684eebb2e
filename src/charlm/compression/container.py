"""The archive format of ``charlm compress``: a checked header, the coded frames, a checked trailer.

Written front to back as the input is read, so that nothing in it depends on knowing the input's
length in advance: a file and a pipe give the same archive. Layout (integers little-endian)::

    header    magic     6 bytes   b"CHARLM"
              version   1 byte    FORMAT_VERSION
              mode      1 byte    0 = online (a byte model learned while coding), 1 = pretrained
              settings  4 bytes   length of the settings, then that much UTF-8 JSON
              hdrcrc    4 bytes   CRC-32 of everything above
    frames    one per segment of the input (1 MB by default), each
              kind      1 byte    1 = coded, 2 = stored (the segment as it is: coding did not shrink it)
              raw       4 bytes   bytes of the original in the segment
              symbols   4 bytes   symbols the segment codes
              size      4 bytes   bytes that follow
              headcrc   4 bytes   CRC-32 of the four fields above
              data      size bytes
              crc       4 bytes   CRC-32 of the data: damage is found before the frame is decoded
    end       one byte 0, where a frame's kind would be
    trailer   length    8 bytes   bytes of the original
              crc       4 bytes   CRC-32 of the original: checked after decoding
              payload   8 bytes   bytes of all the frames' data
              paycrc    4 bytes   CRC-32 of all the frames' data, in order
              trlcrc    4 bytes   CRC-32 of the four fields above

Settings hold what the decoder must repeat exactly to compute the encoder's frequencies: the model's
shape and learning settings, the lanes, the torch version, the CPU kernels torch picked, and in the
pretrained mode the SHA-256 of the model's files. Any difference is refused before decoding starts
(:func:`check_same`), since it would make the decoder's probabilities differ by a rounding and the
output garbage.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

MAGIC = b"CHARLM"
# 5: the online network may start from the byte model of English (4: streamed, frames and a trailer;
# 3: the bitwise last stage; 2: the C kernel; 1: torch). Version 4 archives read as version 5 ones
# whose network starts from the seeded weights.
FORMAT_VERSION = 5
READS = (4, 5)
MODES = ("online", "pretrained")
CODED, STORED = 1, 2  # a frame's kinds; 0 ends the frames
_FIXED = struct.Struct("<6sBBI")  # magic, version, mode, settings
_FRAME = struct.Struct("<BIII")  # kind, raw, symbols, size
_TRAILER = struct.Struct("<QIQI")  # length, crc, payload, paycrc
_CRC = struct.Struct("<I")
MAX_SETTINGS = 1 << 20
MAX_FRAME = 1 << 30  # bytes of a frame's data at most (a segment's coded bytes: a few times its size)


class ArchiveError(ValueError):
    """An archive that cannot be decoded here: damaged, cut short, or made with something else."""


@dataclass(frozen=True)
class Header:
    mode: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class Frame:
    kind: int  # CODED or STORED
    raw: int  # bytes of the original
    symbols: int  # symbols coded
    data: bytes  # the coded bytes, or the original's (STORED)


@dataclass(frozen=True)
class Trailer:
    length: int  # bytes of the original
    crc: int  # CRC-32 of the original
    payload: int = 0  # bytes of all the frames' data
    payload_crc: int = 0


def crc32(data: bytes, running: int = 0) -> int:
    return zlib.crc32(data, running) & 0xFFFFFFFF


class ArchiveWriter:
    """Writes an archive as it goes: the header at once, each frame when given, the trailer at the end."""

    def __init__(self, out: BinaryIO, header: Header) -> None:
        self._out, self._payload, self._payload_crc = out, 0, 0
        settings = json.dumps(header.settings, sort_keys=True, separators=(",", ":")).encode()
        head = _FIXED.pack(MAGIC, FORMAT_VERSION, MODES.index(header.mode), len(settings)) + settings
        out.write(head + _CRC.pack(crc32(head)))

    def frame(self, frame: Frame) -> None:
        head = _FRAME.pack(frame.kind, frame.raw, frame.symbols, len(frame.data))
        self._out.write(head + _CRC.pack(crc32(head)) + frame.data + _CRC.pack(crc32(frame.data)))
        self._payload += len(frame.data)
        self._payload_crc = crc32(frame.data, self._payload_crc)

    def close(self, length: int, crc: int) -> None:
        fields = _TRAILER.pack(length, crc, self._payload, self._payload_crc)
        self._out.write(b"\0" + fields + _CRC.pack(crc32(fields)))


class ArchiveReader:
    """Reads an archive as it goes, every field checked as it comes; ArchiveError names what is
    wrong. :attr:`header` at once, :meth:`frames` one by one, then :attr:`trailer`."""

    def __init__(self, source: BinaryIO) -> None:
        self._in, self._payload, self._payload_crc = source, 0, 0
        self.trailer: Trailer | None = None
        self.header = self._header()

    def _read(self, n: int, what: str) -> bytes:
        data = self._in.read(n)
        while len(data) < n:  # a pipe gives what it has
            more = self._in.read(n - len(data))
            if not more:
                raise ArchiveError(f"the archive is cut short ({what} is incomplete)")
            data += more
        return data

    def _header(self) -> Header:
        magic = self._in.read(len(MAGIC))
        if magic != MAGIC:
            raise ArchiveError("not a charlm archive (it does not start with the bytes 'CHARLM')")
        fixed = magic + self._read(_FIXED.size - len(MAGIC), "its header")
        _, version, mode, settings_size = _FIXED.unpack(fixed)
        if version not in READS:
            raise ArchiveError(f"archive format version {version}; this charlm reads versions "
                               f"{' and '.join(map(str, READS))}")
        if settings_size > MAX_SETTINGS:
            raise ArchiveError("the archive's header is damaged (settings of impossible size)")
        head = fixed + self._read(settings_size, "its header")
        if _CRC.unpack(self._read(_CRC.size, "its header"))[0] != crc32(head):
            raise ArchiveError("the archive's header is damaged (CRC-32 mismatch)")
        if mode >= len(MODES):
            raise ArchiveError(f"the archive's header names an unknown mode {mode}")
        try:
            settings = json.loads(head[_FIXED.size:].decode())
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ArchiveError("the archive's header is damaged (settings are not JSON)") from None
        if not isinstance(settings, dict):
            raise ArchiveError("the archive's header is damaged (settings are not an object)")
        return Header(MODES[mode], settings)

    def frames(self) -> Iterator[Frame]:
        """Each frame, its data checked before it is given; then the trailer is read and checked."""
        while True:
            head = self._read(1, "its trailer")
            if head == b"\0":  # the end of the frames
                break
            head += self._read(_FRAME.size - 1, "a frame's header")
            kind, raw, symbols, size = _FRAME.unpack(head)
            if _CRC.unpack(self._read(_CRC.size, "a frame's header"))[0] != crc32(head):
                raise ArchiveError("the archive is damaged: a frame's header fails its CRC-32")
            if kind not in (CODED, STORED) or size > MAX_FRAME or raw > MAX_FRAME or symbols > raw or \
                    (kind == STORED and size != raw):
                raise ArchiveError("the archive is damaged: a frame's header is not valid")
            data = self._in.read(size + _CRC.size)
            while len(data) < size + _CRC.size and (more := self._in.read(size + _CRC.size - len(data))):
                data += more
            if len(data) < size + _CRC.size:
                raise ArchiveError(f"the archive is cut short: {max(len(data) - _CRC.size, 0)} of {size} "
                                   f"coded bytes in a frame")
            data, crc = data[:size], _CRC.unpack(data[size:])[0]
            if crc32(data) != crc:
                raise ArchiveError("the archive is damaged: its coded bytes fail their CRC-32")
            self._payload += size
            self._payload_crc = crc32(data, self._payload_crc)
            yield Frame(kind, raw, symbols, data)
        self.trailer = self._trailer()

    def _trailer(self) -> Trailer:
        fields = self._read(_TRAILER.size + _CRC.size, "its trailer")
        if _CRC.unpack_from(fields, _TRAILER.size)[0] != crc32(fields[:_TRAILER.size]):
            raise ArchiveError("the archive's trailer is damaged (CRC-32 mismatch)")
        trailer = Trailer(*_TRAILER.unpack_from(fields))
        if (trailer.payload, trailer.payload_crc) != (self._payload, self._payload_crc):
            raise ArchiveError("the archive is damaged: its frames are not the ones it was written with "
                               "(their length or CRC-32 differs from the trailer's)")
        extra = sum(len(chunk) for chunk in iter(lambda: self._in.read(1 << 16), b""))
        if extra:
            raise ArchiveError(f"the archive has {extra} unexpected bytes after its end")
        return trailer


def original_length(source: BinaryIO) -> int | None:
    """The original's length from a seekable archive's trailer (for a progress bar), without
    reading the rest; None where the source cannot seek or the trailer is not sound."""
    try:
        if not source.seekable():
            return None
        here = source.tell()
        try:
            source.seek(-(_TRAILER.size + _CRC.size), io.SEEK_END)
            fields = source.read(_TRAILER.size + _CRC.size)
        finally:
            source.seek(here)
    except OSError:
        return None
    if len(fields) != _TRAILER.size + _CRC.size or \
            _CRC.unpack_from(fields, _TRAILER.size)[0] != crc32(fields[:_TRAILER.size]):
        return None
    return _TRAILER.unpack_from(fields)[0]


def pack(header: Header, frames: list[Frame], trailer: Trailer) -> bytes:
    """A whole archive in memory (for tests and tools): header, frames, trailer."""
    out = io.BytesIO()
    writer = ArchiveWriter(out, header)
    for frame in frames:
        writer.frame(frame)
    writer.close(trailer.length, trailer.crc)
    return out.getvalue()


def unpack(archive: bytes) -> tuple[Header, list[Frame], Trailer]:
    """A whole archive read and checked: its header, frames and trailer."""
    reader = ArchiveReader(io.BytesIO(archive))
    frames = list(reader.frames())
    assert reader.trailer is not None
    return reader.header, frames, reader.trailer


def check_same(recorded: dict[str, Any], here: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Refuse to decode when something that shapes the probabilities differs from the encoder's."""
    for key in keys:
        if recorded.get(key) != here.get(key):
            raise ArchiveError(f"the archive was made with {key} {recorded.get(key)!r}, but here it is "
                               f"{here.get(key)!r}; decoding would not reproduce the encoder's "
                               f"probabilities")
