"""charlm's compressor against the others, side by side on the same files in one run.

    python -m benchmarks.compression                                   # online mode, shared corpora
    python -m benchmarks.compression --files a.txt --run runs/x        # pretrained mode too
    python -m benchmarks.compression --set lanes=8 --set block=32      # other settings
    python -m benchmarks.compression --doc                             # the table into docs/compression.md

Prints a markdown table: bits per byte of each file (the whole archive, header included) and the
speed of compressing and decompressing (KB/s of the original), every archive decompressed and
compared with the original byte for byte. Python's ``zlib`` (level 9) is gzip -9's codec, ``bz2``
(9) bzip2 -9's and ``lzma`` (preset 9 | EXTREME) xz -9e's. The strong packaged compressors run as
programs where they are installed (``apt-get install zpaq lrzip 7zip``) and are reported as
missing where they are not, never guessed: zpaq -m5, lrzip -z -L9 (its ZPAQ back end) and PPMd
var. I of order 16 (7-Zip's ZIP method).
"""

from __future__ import annotations

import argparse
import bz2
import lzma
import os
import shutil
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from charlm.compression import CompressSettings, compress, decompress

CORPORA = ("timemachine.txt", "tinyshakespeare.txt", "36-0.txt")

Codec = tuple[str, Callable[[bytes], bytes], Callable[[bytes], bytes]]
DOC = Path(__file__).resolve().parents[1] / "docs" / "compression.md"
BEGIN, END = "<!-- compression benchmark: begin -->", "<!-- compression benchmark: end -->"


@dataclass(frozen=True)
class Peer:
    """A compressor run as a program: its commands to pack ``in`` into `archive` and to unpack
    `archive` into the folder ``out``, both run in a scratch folder holding them."""

    name: str
    program: str
    package: str
    archive: str
    pack: tuple[str, ...]
    unpack: tuple[str, ...]


PEERS = (
    Peer("zpaq -m5", "zpaq", "zpaq", "a.zpaq", ("a", "a.zpaq", "in", "-m5"), ("x", "a.zpaq", "-to", "out")),
    Peer("lrzip -z -L9 (ZPAQ)", "lrzip", "lrzip", "a.lrz", ("-z", "-L", "9", "-q", "-o", "a.lrz", "in"),
         ("-d", "-q", "-o", "out/in", "a.lrz")),
    Peer("PPMd var. I, order 16 (7-Zip)", "7zz", "7zip", "a.zip",
         ("a", "-tzip", "-mm=PPMd", "-mo=16", "-mmem=256m", "a.zip", "in"), ("x", "a.zip", "-oout", "-y")),
)


def _run(program: str, args: tuple[str, ...], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run([program, *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def run_peer(peer: Peer, data: bytes) -> tuple[int, float, float] | None:
    """(archive bytes, seconds to pack, seconds to unpack) of `data`, checked to come back whole;
    None where the program is not installed."""
    program = shutil.which(peer.program)
    if program is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "in").write_bytes(data)
        (folder / "out").mkdir()
        t_pack = _run(program, peer.pack, folder)
        size = (folder / peer.archive).stat().st_size
        t_unpack = _run(program, peer.unpack, folder)
        if (folder / "out" / "in").read_bytes() != data:
            raise AssertionError(f"{peer.name} did not restore the file")
    return size, t_pack, t_unpack


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


def measure(files: list[Path], rows: list[Codec], peers: tuple[Peer, ...] = PEERS) -> list[str]:
    lines = ["| file | codec | bits per byte | compress KB/s | decompress KB/s |", "|---|---|---|---|---|"]

    def add(path: Path, name: str, size: int, t_pack: float, t_unpack: float, kb: float) -> None:
        lines.append(f"| {path.name} ({kb:.0f} KB) | {name} | {8 * size / (1000 * kb):.3f} | "
                     f"{kb / t_pack:.1f} | {kb / t_unpack:.1f} |")
        print(lines[-1], flush=True)

    for path in files:
        data = path.read_bytes()
        kb = len(data) / 1000
        for peer in peers:
            outcome = run_peer(peer, data)
            if outcome is None:
                lines.append(f"| {path.name} ({kb:.0f} KB) | {peer.name} | not installed "
                             f"(`apt-get install {peer.package}`) | | |")
                print(lines[-1], flush=True)
            else:
                add(path, peer.name, *outcome, kb)
        for name, pack, unpack in rows:
            archive, t_pack = _timed(pack, data)
            restored, t_unpack = _timed(unpack, archive)
            assert restored == data, f"{name} did not restore {path}"
            add(path, name, len(archive), t_pack, t_unpack, kb)
    return lines


def write_doc(lines: list[str], settings: CompressSettings) -> None:
    """The table between the markers of docs/compression.md, with the machine it was measured on."""
    from charlm.hardware import machine

    facts = machine.probe()
    head = (f"Measured on {facts.cpu_model} ({os.cpu_count()} CPUs), `python -m benchmarks.compression"
            f" --doc`, charlm's settings {settings.to_dict()}:")
    doc = DOC.read_text(encoding="utf-8")
    before, rest = doc.split(BEGIN, 1)
    _, after = rest.split(END, 1)
    DOC.write_text(f"{before}{BEGIN}\n{head}\n\n" + "\n".join(lines) + f"\n{END}{after}", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", nargs="*", type=Path, help="files (default: the shared corpora)")
    parser.add_argument("--run", type=Path, help="a character run for the pretrained mode")
    parser.add_argument("--doc", action="store_true", help="write the table into docs/compression.md")
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
    lines = measure(files, codecs(settings, args.run))
    print("\n".join(lines))
    if args.doc:
        write_doc(lines, settings)


if __name__ == "__main__":
    main()
