"""What charlm's two native builds share: one cache folder, the instruction-set level they are built
for, names that carry that level and a digest of what was built, and the line said when a build starts.

The two builds each keep their own answer to a build that fails:

- the C++ recurrences (:mod:`charlm.models.native`: torch's cpp_extension and ninja, half a minute to
  a minute) fall back, with a warning, to Python loops that compute the same;
- the compressor's C (:mod:`charlm.compression.kernel`: cc, about a second) raises, since nothing
  else computes its probabilities.

Both are cached in ``$XDG_CACHE_HOME/charlm/kernels`` (or ``~/.cache/charlm/kernels``), one file or
folder per build, named by what it is, its level and a digest of its sources and flags: an edited
source or another flag makes another name, so a stale build is never loaded, and machines of
different kinds can share the folder. (Until this module the C++ kernels were cached in torch's
``~/.cache/torch_extensions``; they are built once more in the new place, and torch's folder is still
used where ``TORCH_EXTENSIONS_DIR`` names one.)

``CHARLM_KERNELS_TARGET=portable|x86-64-v3|x86-64-v4`` builds both for that level instead of the
CPU's own (a level the CPU cannot run is an error); unset or ``auto``: the highest level the CPU
runs (:func:`charlm.hardware.machine.kernel_target`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..cache import cache_dir
from . import machine

TARGET_ENV = "CHARLM_KERNELS_TARGET"
# Lowest level first: a CPU runs a level's build and every build below it.
TARGETS = ("portable", *reversed(machine.X86_LEVELS))


def cache_folder() -> Path:
    """Where every native build is cached: ``$XDG_CACHE_HOME/charlm/kernels``."""
    return cache_dir() / "kernels"


def requested_target() -> str:
    """What ``CHARLM_KERNELS_TARGET`` asks for, lower-cased; ``auto`` where it is unset or empty."""
    return os.environ.get(TARGET_ENV, "").strip().lower() or "auto"


def choose_target(cpu: machine.Machine, requested: str | None = None) -> machine.Choice:
    """The level to build for: `requested` (by default ``CHARLM_KERNELS_TARGET``) if this CPU runs
    it; ``auto``: the CPU's own level."""
    requested = requested_target() if requested is None else requested.strip().lower() or "auto"
    if requested == "auto":
        return machine.kernel_target(cpu)
    if requested not in TARGETS:
        raise ValueError(f"{TARGET_ENV} must be auto or one of {', '.join(TARGETS)}, got {requested!r}")
    best = machine.kernel_target(cpu).value
    if TARGETS.index(requested) > TARGETS.index(best):
        # Code for a level the CPU lacks loads fine and dies of SIGILL at its first instruction.
        raise ValueError(f"{TARGET_ENV}={requested}: this CPU ({cpu.describe_cpu()}) cannot run it; the "
                         f"highest level it runs is {best}")
    return machine.Choice(requested, TARGET_ENV)


def source_digest(sources: Iterable[Path], stamp: str) -> str:
    """16 hex digits of SHA-256 over the sources' bytes, then `stamp` (the flags and whatever else
    makes one build differ from another)."""
    text = b"".join(path.read_bytes() for path in sources)
    return hashlib.sha256(text + stamp.encode()).hexdigest()[:16]


def build_name(stem: str, target: str, digest: str) -> str:
    """A build's name: what it is, its level, the digest of what it was built from.

    >>> build_name("charlm_kernels", "x86-64-v3", "0123456789abcdef")
    'charlm_kernels_x86_64_v3_0123456789abcdef'
    """
    return f"{stem}_{target.replace('-', '_')}_{digest}"


def announce(log: logging.Logger, what: str, target: str, takes: str) -> None:
    """The line said when a build really starts (the compiler is there, the cache lacks the build),
    so that the pause it makes is explained; never when a cached build is only loaded."""
    log.info("building %s for %s (once per machine, %s)", what, target, takes)


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A path to build into beside `path`, moved onto `path` in one step if the block succeeds: a
    process loading the build meanwhile finds the whole file or none, and two processes building at
    once each put a whole file in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        built = Path(tmp) / path.name
        yield built
        os.replace(built, path)
