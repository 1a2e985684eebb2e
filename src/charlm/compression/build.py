"""The compression kernel's build: compiled once per source version with the system's C compiler,
cached, and chosen per instruction-set level.

The build is plain C (no Python or torch headers), so it takes about a second. It is cached with
charlm's other native build (:mod:`charlm.hardware.native_build`: ``~/.cache/charlm/kernels``),
named by a digest of the sources and the flags (:func:`kernel_id`): a changed kernel is a new file.
Archives record what the kernel computes instead (:data:`ARITHMETIC`), so that a kernel made faster
still decodes the archives of the one before it. The build is for
the CPU's instruction-set level (x86-64-v4 or -v3: wider vectors), or the level below it where that
codes faster on this machine, which a race of the two decides once (:func:`fastest`;
``CHARLM_KERNELS_TARGET`` may ask for a level instead), named by that level so a cache shared by
machines of different kinds never loads code a CPU cannot run, or portable (arm64, older x86, a
compiler that does not know the level). Every build computes the same bits (a test holds them to
it), so an archive does not depend on which one made it.

This module only builds and chooses. How long a build takes to code is measured by the caller,
which passes it in as ``seconds`` (:mod:`charlm.compression.race`): the race runs the compressor,
which stands above this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path

from ..hardware import machine, native_build

# What the build reads: kernel.c, which #includes exact.h, kernel.h, cell.h, net.c, deepnet.c and bits.c.
SOURCES = tuple(Path(__file__).with_name(name)
                for name in ("kernel.c", "exact.h", "kernel.h", "cell.h", "net.c", "bits.c", "deepnet.c"))
# -ffp-contract=off: no fused multiply-adds, so every operation rounds alike whatever the compiler and
# the instruction set; vectorised element-wise loops round exactly as scalar ones, and without
# -ffast-math no sum is reordered. A target's flags (machine.target_flags) only make the vectors
# wider and tune the schedule.
# -fno-trapping-math: no program here reads floating-point exception flags, and without it GCC will
# not turn a comparison of doubles into a vector select, so the array exps (exact.h) stay scalar. It
# permits no reordering and no other rounding (that would take -fassociative-math and kin).
# -pthread: the networks' second threads (net.c's learner, deepnet.c's share of the products).
FLAGS = ("-O3", "-std=c11", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math", "-fno-math-errno",
         "-fno-trapping-math", "-pthread")
TARGETS = native_build.TARGETS
RACE_BYTES = 24_000  # what a race codes (charlm.compression.race): about a second a build

Seconds = Callable[[str], float]  # how long the build for a level takes to code the race's text

_log = logging.getLogger(__name__)


class KernelError(OSError):
    """The C kernel cannot be built or loaded here (no compiler), or ran out of memory."""


@cache
def kernel_id() -> str:
    """The digest of the kernel's sources and flags, which names its builds: 16 hex digits. Computed
    on first use, not at import (it reads the C sources)."""
    return native_build.source_digest(SOURCES, " ".join(FLAGS))


# What the kernel computes, which archives record: one number for one function from text to coded
# bits, whatever the sources that compute it. A change that only makes the kernel faster keeps it (the
# archives of a fixed text are held to their digests by a test, which fails if a bit moves); a
# change to any probability takes the next number, and archives of the one before are refused.
ARITHMETIC = 1
# Archives made before the number was recorded name their kernel by its sources' digest. These are
# the digests whose archives the kernel of ARITHMETIC 1 decodes bit for bit (tested).
EARLIER = {"4febeeb25fef7a61": 1}  # the release of 2026-12-07, format 4


def arithmetic() -> str:
    """How archives name what this kernel computes."""
    return f"arithmetic {ARITHMETIC}"


def arithmetic_of(recorded: object) -> object:
    """What an archive's recorded kernel computes, named as :func:`arithmetic` names it: an earlier
    archive's digest as the number it is known to equal; anything else as it is (no kernel here
    matches it)."""
    if isinstance(recorded, str) and recorded in EARLIER:
        return f"arithmetic {EARLIER[recorded]}"
    return recorded


_NO_COMPILER = "charlm's compressor builds a small C kernel once and needs a C compiler for it: " \
    "install gcc (or set CC)"


def _compiler() -> str:
    """The C compiler to build with; KernelError saying what to install where there is none."""
    compiler = machine.find_compiler()
    if not compiler:
        raise KernelError(_NO_COMPILER)
    if not shutil.which(compiler):  # $CC names nothing that runs
        raise KernelError(f"{_NO_COMPILER}; {compiler!r} does not run")
    return compiler


def compile_to(target: Path, flags: tuple[str, ...]) -> None:
    """Compile the kernel into the shared library `target` with `flags`."""
    compiler = _compiler()
    with native_build.atomic_output(target) as built:  # a concurrent build never loads half a file
        try:
            result = subprocess.run([compiler, *flags, "-o", str(built), str(SOURCES[0]), "-lm"],
                                    capture_output=True, text=True)
        except OSError:  # found, but it does not run (not an executable for this machine)
            raise KernelError(f"{_NO_COMPILER}; {compiler!r} does not run") from None
        if result.returncode != 0:
            first = (result.stderr.strip().splitlines() or ["no message"])[0]
            raise KernelError(f"building the compression kernel with {compiler} failed: {first}")


def built(target: str) -> Path:
    """The kernel's shared library for an instruction-set level, compiled if the cache lacks it."""
    name = native_build.build_name("charlm_compression", target, kernel_id())
    path = native_build.cache_folder() / f"{name}.so"
    if not path.is_file():
        _compiler()  # without one, that is the message, not that a build starts
        native_build.announce(_log, "charlm's compression kernel", target, "about a second")
        compile_to(path, FLAGS + machine.target_flags(target))
    return path


@cache
def build_for(target: str) -> tuple[str, Path]:
    """The level actually built and its library: `target`, or portable where the compiler cannot
    build that level (too old to know -march=x86-64-v4). No compiler at all is an error."""
    try:
        return target, built(target)
    except KernelError as err:
        if target == "portable" or _NO_COMPILER in str(err):
            raise
        _log.warning("the compression kernel did not build for %s (%s); using the portable build",
                     target, err)
        return "portable", built("portable")


def chosen(target: str | None, seconds: Seconds, wide: bool = False) -> str:
    """`target`, or when None the level ``CHARLM_KERNELS_TARGET`` asks for, by default the faster on
    this machine of its own level and the one below (:func:`fastest`, timed by `seconds`), or with
    `wide` the CPU's own level; a level this CPU cannot run is an error."""
    cpu = machine.probe()
    if target is None:
        choice = native_build.choose_target(cpu)
        if choice.reason == native_build.TARGET_ENV or wide:
            return choice.value
        return fastest(choice.value, seconds).value
    best = machine.kernel_target(cpu).value
    if target not in TARGETS:
        raise ValueError(f"unknown kernel target {target!r}; one of {', '.join(TARGETS)}")
    if TARGETS.index(target) > TARGETS.index(best):  # it would load, then die of SIGILL
        raise ValueError(f"this CPU cannot run the {target} kernel; the highest level it runs is {best}")
    return target


def _lower(level: str) -> str | None:
    """The x86-64 level below `level` (v4 -> v3); None below v3, where only portable is left."""
    levels = list(machine.X86_LEVELS)  # highest first
    return levels[levels.index(level) + 1] if level in levels[:-1] else None


@cache
def fastest(level: str, seconds: Seconds) -> machine.Choice:
    """The faster build for this machine of `level` (its own) and the level below: every build codes
    the same bits, but wider vectors are not always quicker (on a Zen 4 EPYC the x86-64-v3 build
    codes at 26 KB/s, the x86-64-v4 one at 15). Raced once per machine and kernel, `seconds` timing
    each, the answer kept beside the builds; a level with nothing below it is its own answer."""
    lower = _lower(level)
    if lower is None:
        return machine.Choice(level, "the CPU's own level")
    cpu = machine.probe()
    stamp = hashlib.sha256(f"{cpu.cpu_model}|{sorted(cpu.cpu_features)}".encode()).hexdigest()[:12]
    record = native_build.cache_folder() / f"charlm_compression_{kernel_id()}_{stamp}.race.json"
    try:
        times = json.loads(record.read_text(encoding="utf-8"))
        times = {level: float(times[level]), lower: float(times[lower])}
    except (OSError, ValueError, KeyError, TypeError):
        try:  # both built first: without a compiler that is the one error said, and no race starts
            if build_for(level)[0] != level or build_for(lower)[0] != lower:
                return machine.Choice(level, "the CPU's own level (a build fell back to portable)")
        except KernelError:
            return machine.Choice(level, "the CPU's own level")
        _log.info("timing charlm's compression kernel built for %s and %s (once per machine)", level, lower)
        times = {level: seconds(level), lower: seconds(lower)}
        with contextlib.suppress(OSError), native_build.atomic_output(record) as out:
            out.write_text(json.dumps(times), encoding="utf-8")  # a read-only cache: raced next time
    best = min(times, key=lambda t: (times[t], t != level))
    rates = ", ".join(f"{t} {RACE_BYTES / 1000 / times[t]:.1f} KB/s" for t in (level, lower))
    return machine.Choice(best, f"measured the faster here ({rates})")


def status(seconds: Seconds) -> tuple[str, str]:
    """For `charlm info`: the level the kernel is built for and its file, or why it cannot be built
    (builds it on the first call, about a second; never raises)."""
    try:
        target = chosen(None, seconds)
    except ValueError as err:  # CHARLM_KERNELS_TARGET names a level this CPU cannot run
        return machine.kernel_target(machine.probe()).value, str(err)
    try:
        level, path = build_for(target)
    except KernelError as err:
        return target, str(err)
    return level, str(path)
