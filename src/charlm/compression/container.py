"""The archive format of ``charlm compress``: a checked header, then the arithmetic coder's bytes.

Layout (integers little-endian)::

    magic     6 bytes   b"CHARLM"
    version   1 byte    FORMAT_VERSION
    mode      1 byte    0 = online (byte model learned while coding), 1 = pretrained (a run's model),
                        2 = stored (the original as it is: nothing was learned that beats 8 bits a byte)
    length    8 bytes   bytes of the original
    crc       4 bytes   CRC-32 of the original: checked after decoding
    payload   8 bytes   bytes of the coded stream that follows the header
    paycrc    4 bytes   CRC-32 of the coded stream: damage is found before any decoding
    settings  4 bytes   length of the settings, then that much UTF-8 JSON
    hdrcrc    4 bytes   CRC-32 of everything above

Settings hold what the decoder must repeat exactly to compute the encoder's frequencies: the model's
shape and learning settings, the lanes, the torch version, the CPU kernels torch picked, and in the
pretrained mode the SHA-256 of the model's files. Any difference is refused before decoding starts
(:func:`check_same`), since it would make the decoder's probabilities differ by a rounding and the
output garbage.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

MAGIC = b"CHARLM"
FORMAT_VERSION = 3  # 3: the bitwise last stage (2: the C kernel's experts, mixing, network; 1: torch)
MODES = ("online", "pretrained", "stored")
_FIXED = struct.Struct("<6sBBQIQII")  # magic, version, mode, length, crc, payload, paycrc, settings
MAX_SETTINGS = 1 << 20


class ArchiveError(ValueError):
    """An archive that cannot be decoded here: damaged, cut short, or made with something else."""


@dataclass(frozen=True)
class Header:
    mode: str
    length: int  # bytes of the original
    crc: int  # CRC-32 of the original
    settings: dict[str, Any]


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def pack(header: Header, payload: bytes) -> bytes:
    """The archive: header fields, settings, their CRC, then the payload."""
    settings = json.dumps(header.settings, sort_keys=True, separators=(",", ":")).encode()
    head = _FIXED.pack(MAGIC, FORMAT_VERSION, MODES.index(header.mode), header.length, header.crc,
                       len(payload), crc32(payload), len(settings)) + settings
    return head + struct.pack("<I", crc32(head)) + payload


def unpack(archive: bytes) -> tuple[Header, bytes]:
    """Header and payload of an archive, every field checked; ArchiveError names what is wrong."""
    if len(archive) < len(MAGIC) or archive[:len(MAGIC)] != MAGIC:
        raise ArchiveError("not a charlm archive (it does not start with the bytes 'CHARLM')")
    if len(archive) < _FIXED.size + 4:
        raise ArchiveError("the archive is cut short (its header is incomplete)")
    _, version, mode, length, crc, payload_size, payload_crc, settings_size = _FIXED.unpack_from(archive)
    if version != FORMAT_VERSION:
        raise ArchiveError(f"archive format version {version}; this charlm reads version {FORMAT_VERSION}")
    if settings_size > MAX_SETTINGS:
        raise ArchiveError("the archive's header is damaged (settings of impossible size)")
    end = _FIXED.size + settings_size
    if len(archive) < end + 4:
        raise ArchiveError("the archive is cut short (its header is incomplete)")
    if struct.unpack_from("<I", archive, end)[0] != crc32(archive[:end]):
        raise ArchiveError("the archive's header is damaged (CRC-32 mismatch)")
    if mode >= len(MODES):
        raise ArchiveError(f"the archive's header names an unknown mode {mode}")
    payload = archive[end + 4:]
    if len(payload) < payload_size:
        raise ArchiveError(f"the archive is cut short: {len(payload)} of {payload_size} coded bytes")
    if len(payload) > payload_size:
        raise ArchiveError(f"the archive has {len(payload) - payload_size} unexpected bytes after its end")
    if crc32(payload) != payload_crc:
        raise ArchiveError("the archive is damaged: its coded bytes fail their CRC-32")
    try:
        settings = json.loads(archive[_FIXED.size:end].decode())
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ArchiveError("the archive's header is damaged (settings are not JSON)") from None
    if not isinstance(settings, dict):
        raise ArchiveError("the archive's header is damaged (settings are not an object)")
    return Header(MODES[mode], length, crc, settings), payload


def check_same(recorded: dict[str, Any], here: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Refuse to decode when something that shapes the probabilities differs from the encoder's."""
    for key in keys:
        if recorded.get(key) != here.get(key):
            raise ArchiveError(f"the archive was made with {key} {recorded.get(key)!r}, but here it is "
                               f"{here.get(key)!r}; decoding would not reproduce the encoder's "
                               f"probabilities")
