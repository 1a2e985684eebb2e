"""charlm's compressor against zlib, bz2 and lzma, side by side on the same files in one process.

    python -m benchmarks.compression                                   # online mode, shared corpora
    python -m benchmarks.compression --files a.txt --run runs/x        # pretrained mode too
    python -m benchmarks.compression --set lanes=8 --set block=32      # other settings

Prints a markdown table: bits per byte of each file and the speed of compressing and decompressing
(KB/s of the original), every archive checked by decompressing it. Python's ``zlib`` (level 9) is
gzip -9's codec, ``bz2`` (9) bzip2 -9's and ``lzma`` (preset 9 | EXTREME) xz -9e's.
"""

from __future__ import annotations

import argparse
import bz2
import lzma
import os
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from charlm.compression import CompressSettings, compress, decompress

CORPORA = ("timemachine.txt", "tinyshakespeare.txt", "36-0.txt")

Codec = tuple[str, Callable[[bytes], bytes], Callable[[bytes], bytes]]


def _timed(fn: Callable[[bytes], bytes], data: bytes) -> tuple[bytes, float]:
    start = time.perf_counter()
    out = fn(data)
    return out, time.perf_counter() - start


def codecs(settings: CompressSettings, run: Path | None) -> list[Codec]:
    rows: list[Codec] = [
        ("zlib -9 (gzip)", lambda d: zlib.compress(d, 9), zlib.decompress),
        ("bz2 -9 (bzip2)", lambda d: bz2.compress(d, 9), bz2.decompress),
        ("lzma -9e (xz)", lambda d: lzma.compress(d, preset=9 | lzma.PRESET_EXTREME), lzma.decompress),
        ("charlm online", lambda d: compress(d, settings=settings), decompress),
    ]
    if run is not None:
        rows.append((f"charlm pretrained ({run.name})",
                     lambda d: compress(d, run=run, settings=settings),
                     lambda a: decompress(a, run=run)))
    return rows


def measure(files: list[Path], rows: list[Codec]) -> list[str]:
    lines = ["| file | codec | bits per byte | compress KB/s | decompress KB/s |", "|---|---|---|---|---|"]
    for path in files:
        data = path.read_bytes()
        for name, pack, unpack in rows:
            archive, t_pack = _timed(pack, data)
            restored, t_unpack = _timed(unpack, archive)
            assert restored == data, f"{name} did not restore {path}"
            kb = len(data) / 1000
            lines.append(f"| {path.name} ({kb:.0f} KB) | {name} | {8 * len(archive) / len(data):.3f} | "
                         f"{kb / t_pack:.1f} | {kb / t_unpack:.1f} |")
            print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", nargs="*", type=Path, help="files (default: the shared corpora)")
    parser.add_argument("--run", type=Path, help="a character run for the pretrained mode")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a compress setting by its flag's name: lanes=8, orders=1,2,3, num_hiddens=64")
    args = parser.parse_args()
    data_dir = Path(os.environ.get("CHARLM_DATA", "../shared/data"))
    files = args.files or [data_dir / name for name in CORPORA if (data_dir / name).is_file()]
    fields = {}
    for item in args.set:
        name, _, value = item.partition("=")
        kind = float if name == "lr" else type(getattr(CompressSettings, name, 0))
        fields[name] = tuple(int(k) for k in value.split(",") if k) if name == "orders" else kind(value)
    settings = CompressSettings.of(**fields)
    print(f"settings: {settings.to_dict()}")
    print("\n".join(measure(files, codecs(settings, args.run))))


if __name__ == "__main__":
    main()
