"""compress and decompress: files or pipes in and out, a progress bar, and nothing half-written left."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .parsers import settings_given


def write_output(name: str, data: bytes, force: bool) -> None:
    """stdout, or the file written whole (a temporary file renamed), never half."""
    _streamed_output(name, force, lambda f: f.write(data), name_the_file=True)


def _check_paths(args: argparse.Namespace) -> None:
    if args.input != "-" and args.output != "-" and Path(args.input).resolve() == Path(args.output).resolve():
        raise ValueError("input and output are the same file")


def _progress_bar(args: argparse.Namespace, what: str):
    """A tqdm bar on a terminal's stderr for long inputs; None otherwise."""
    if args.quiet or not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=0, unit="B", unit_scale=True, desc=what, file=sys.stderr, leave=False,
               mininterval=0.5)

    def update(done: int, total: int | None) -> None:  # total None: not known (a pipe)
        if bar.total != total:
            bar.total = total
        bar.n = done
        if done == total or done % 4096 < 8:
            bar.refresh()

    return update, bar.close


def _report(verb: str, original: int, archive: int, seconds: float) -> None:
    bpb = 8 * archive / original if original else 0.0
    print(f"charlm: {verb} {original} bytes <-> {archive} bytes, {bpb:.3f} bits per byte, "
          f"{seconds:.1f} s, {original / 1000 / max(seconds, 1e-9):.1f} KB/s", file=sys.stderr)


def cmd_compress(args: argparse.Namespace) -> int:
    from ..compression import CompressSettings, compress_stream
    from ..compression.codec import resolved

    _check_paths(args)
    given = settings_given(args, CompressSettings)
    settings = CompressSettings.of(**given)
    if args.run is not None:
        if args.online:
            raise ValueError("--online and --run choose two different modes; give one")
        resolved(settings, args.run)  # the mode's rules (flags of the online network), before any file
        if not args.run.is_dir():
            raise ValueError(f"--run {args.run}: no such run folder")
    if args.output == "-" and sys.stdout.isatty():
        raise ValueError("refusing to write an archive to a terminal; give a file or redirect stdout")
    return _transform(args, "compress", lambda source, sink, progress: compress_stream(
        source, sink, run=args.run, settings=settings, progress=progress, chunk_size=args.chunk_size))


def cmd_decompress(args: argparse.Namespace) -> int:
    from ..compression import decompress_stream

    _check_paths(args)
    return _transform(args, "decompress", lambda source, sink, progress: decompress_stream(
        source, sink, run=args.run, progress=progress))


@contextlib.contextmanager
def _opened_input(name: str) -> Iterator[BinaryIO]:
    if name == "-":
        yield sys.stdin.buffer
        return
    if Path(name).is_dir():
        raise ValueError(f"{name}: is a folder, not a file")
    with open(name, "rb") as f:
        yield f


def _streamed_output(name: str, force: bool, write: Callable[[BinaryIO], None],
                     name_the_file: bool = False) -> None:
    """stdout as it comes, or a file written through a temporary file beside it and renamed at the
    end: an error part way removes it, and never leaves half a file under the output's name.
    `name_the_file`: an OSError says it could not write the file (not for a `write` that computes
    as it goes: its own OSErrors, such as no C compiler, say what they say)."""
    if name == "-":
        write(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    from ..checkpoint import atomic_write, save_file

    path = Path(name)
    if path.exists() and not force:
        raise ValueError(f"{name}: already exists (use --force to overwrite)")
    (save_file if name_the_file else atomic_write)(path, write)


def _transform(args: argparse.Namespace, verb: str, fn) -> int:
    """Stream the input through `fn` into the output under a progress bar; report on stderr."""
    progress, close = _progress_bar(args, verb)
    sizes: list[tuple[int, int]] = []
    start = time.perf_counter()
    try:
        with _opened_input(args.input) as source:
            _streamed_output(args.output, args.force, lambda sink: sizes.append(fn(source, sink, progress)))
    finally:
        close()
    seconds = time.perf_counter() - start
    if not args.quiet:
        (original, archive), = sizes
        _report(f"{verb}ed", original, archive, seconds)
    return 0

