"""charlm's C++ kernels (``charlm/csrc``), built on first use: the recurrences and greedy decoding.

On the CPU the fast models (:mod:`charlm.models.fused`) run their time loops in these kernels when
they can be built: one C++ loop per sequence, the matrix products on ATen, and all the element-wise
work of a step in one pass. They are compiled once per machine with the C++ compiler and ninja
(``torch.utils.cpp_extension``, half a minute to a minute) and cached beside the compressor's C
kernel (:mod:`charlm.hardware.native_build`: ``~/.cache/charlm/kernels``; until then they were cached in
``~/.cache/torch_extensions``), or under ``TORCH_EXTENSIONS_DIR`` where that is set.

The build is for the CPU's instruction-set level, not for the exact CPU (``-march=native``): x86-64-v4
(AVX-512) or x86-64-v3 (AVX2 and FMA) where the CPU has it, else portable (the compiler's baseline:
arm64, older x86). The level is in the build's name, so a cache shared by machines of different kinds
never hands AVX-512 code to an AVX2 CPU. A compiler too old for the level gets the portable build.

Where they cannot be built (no compiler, an unusual platform) charlm says so once and runs the same
equations as Python loops of tensor operations, which give the same results, only slower.

Environment:
  ``CHARLM_KERNELS=0`` turns the kernels off; ``CHARLM_KERNELS=1`` makes a failed build an error.
  ``CHARLM_KERNELS_TARGET=portable|x86-64-v3|x86-64-v4`` builds for that level instead of the
  CPU's own (a level the CPU cannot run is an error); unset or ``auto``: the CPU's level. A level
  named so is that level or nothing: no portable build in its place.
  ``TORCH_EXTENSIONS_DIR``: torch's own cache folder for the build instead of charlm's (the tests
  set it so that their processes share one build).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from charlm.hardware import machine, native_build

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = [CSRC / "recurrences.cpp", CSRC / "decoding.cpp"]  # both include cells.h
TARGETS = native_build.TARGETS  # lowest level first
LDFLAGS = ["-fopenmp"]
DTYPES = (torch.float32, torch.float64, torch.bfloat16)
_OFF, _ON = ("0", "off", "false", "no"), ("1", "on", "true", "yes")

_log = logging.getLogger(__name__)
_enabled = True  # switched by `use_kernels` (the tests compare both paths)


@dataclass(frozen=True)
class KernelStatus:
    """What `charlm info` says about the kernels: loaded or not, for which target, and why."""

    built: bool
    target: str | None  # the instruction-set level of the build (see machine.kernel_target)
    reason: str


_status = KernelStatus(False, None, "not loaded yet")
_loaded_as: KernelStatus | None = None  # the build this process loaded (there can be only one)


def _setting() -> str:
    return os.environ.get("CHARLM_KERNELS", "auto").strip().lower()


def _loaded() -> bool:
    # Loading the library a second time would register its operators twice, which aborts.
    return hasattr(torch.ops.charlm, "gru_forward")


def cflags(target: str) -> list[str]:
    """The compiler flags of a build for `target`."""
    # -ffast-math lets the compiler call the vectorised exp/tanh of glibc inside the element-wise loops.
    # -fopenmp makes at::parallel_for run on torch's threads (its OpenMP pragmas are compiled into the
    # kernels); the library it needs, libgomp.so.1, is the one torch has already loaded.
    return ["-O3", *machine.target_flags(target), "-ffast-math", "-fopenmp", "-std=c++17"]


def extension_name(target: str) -> str:
    """The build's name: its target, and a digest of the sources, the flags, torch's version and
    Python's (the library links against torch's Python bindings), so that an edited kernel, other
    flags or a new torch get a fresh build and an old one is never loaded."""
    python = f"python{sys.version_info.major}.{sys.version_info.minor}"
    stamp = " ".join([*cflags(target), *LDFLAGS, torch.__version__, python])
    digest = native_build.source_digest([*SOURCES, CSRC / "cells.h"], stamp)
    return native_build.build_name("charlm_kernels", target, digest)


def _first_error(message: str) -> str:
    """The line of a build's output that says what went wrong (the compiler's first error)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()] or ["no message"]
    return next((line for line in lines if "error:" in line), lines[0])


def build_folder(name: str) -> Path:
    """The folder of the build `name`: in charlm's kernel cache, or in torch's extension cache where
    ``TORCH_EXTENSIONS_DIR`` names one."""
    from torch.utils import cpp_extension

    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(cpp_extension._get_build_directory(name, verbose=False))
    folder = native_build.cache_folder() / name
    folder.mkdir(parents=True, exist_ok=True)  # torch writes its ninja file there first
    return folder


@contextlib.contextmanager
def build_lock(folder: Path) -> Iterator[None]:
    """Hold the build of `folder` alone among charlm's processes.

    torch's own lock is a file that exists while a build runs: a process killed mid-build (torchrun
    ends a job's workers with SIGKILL) leaves it behind, and every later build waits for it forever.
    An flock dies with the process that holds it, so while this one is held no other charlm process
    is building here, and a torch lock found then is a dead build's: it is removed. (No flock on
    Windows: there torch's lock alone guards the build.)"""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(folder / ".charlm-build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            (folder / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(target: str) -> None:
    """Build the kernels for `target` (unless the cache holds them) and load them, one process at a
    time (:func:`build_lock`), so processes that start it at once build it once."""
    from torch.utils import cpp_extension

    compiler = os.environ.get("CXX", "c++")  # the compiler torch's build calls
    if not shutil.which(compiler):
        raise OSError(f"no C++ compiler: {compiler!r} is not on the PATH (install g++, or set CXX)")
    name = extension_name(target)
    folder = build_folder(name)
    if not (folder / f"{name}.so").is_file():
        native_build.announce(_log, "charlm's C++ kernels", target, "about half a minute to a minute")
    with build_lock(folder):
        sources = _sources_in(folder)
        cpp_extension.load(name=name, sources=[str(path) for path in sources], extra_cflags=cflags(target),
                           extra_ldflags=LDFLAGS, build_directory=str(folder), is_python_module=False,
                           verbose=False)


def _sources_in(folder: Path) -> list[Path]:
    """The sources copied into the build's folder (written only where they differ), and their paths
    there. ninja's build file records the sources' paths: built from two checkouts (or two
    environments) that share the cache, the same kernels were rebuilt at every switch between them,
    under processes that had them loaded. The folder's name carries the sources' digest, so every
    copy of charlm that builds here has the same sources, now at the same paths."""
    copies = folder / "src"
    copies.mkdir(exist_ok=True)
    for path in [*SOURCES, CSRC / "cells.h"]:
        copy = copies / path.name
        data = path.read_bytes()
        if not copy.is_file() or copy.read_bytes() != data:
            copy.write_bytes(data)
    return [copies / path.name for path in SOURCES]


def _build_with_fallback(choice: machine.Choice, forced: bool) -> KernelStatus:
    """Build for the chosen level; a compiler that cannot (too old for -march=x86-64-v4) gets the
    portable build instead, unless the level was asked for by name."""
    try:
        _build(choice.value)
        return KernelStatus(True, choice.value, choice.reason)
    except Exception as error:
        if forced or choice.value == "portable" or isinstance(error, OSError):
            raise
        why = _first_error(str(error))
        _log.warning("charlm's C++ kernels did not build for %s (%s); building the portable ones",
                     choice.value, why)
    _build("portable")
    return KernelStatus(True, "portable", f"the {choice.value} build failed: {why}")


@functools.cache
def _load() -> bool:
    """Build (or find in the cache) and load the kernels; False where they cannot be had."""
    global _status, _loaded_as
    if _setting() in _OFF:
        _status = KernelStatus(False, None, "switched off (CHARLM_KERNELS=0)")
        return False
    requested = native_build.requested_target()
    choice = native_build.choose_target(machine.probe(), requested)  # a level this CPU lacks: an error
    if _loaded():  # loaded earlier in this process
        _status = _loaded_as or KernelStatus(True, None, "loaded earlier in this process")
        return True
    try:
        forced = requested != "auto"
        _status = _loaded_as = _build_with_fallback(choice, forced)
        return _loaded()
    except Exception as error:  # a missing compiler shows up as one of many error types
        why = str(error) if isinstance(error, OSError) else f"the build failed: {_first_error(str(error))}"
        _status = KernelStatus(False, choice.value, why)  # OSError: no compiler at all
        if _setting() in _ON:
            raise RuntimeError(f"charlm's C++ kernels could not be built: {error}") from error
        warnings.warn(f"charlm: C++ kernels unavailable, using the slower Python loops ({error})",
                      RuntimeWarning, stacklevel=3)
        return False


def build_status() -> KernelStatus:
    """Whether the kernels are built and loaded, for which target, or why not (builds them on the
    first call, never raises): what `charlm info` prints."""
    try:
        with warnings.catch_warnings():  # the reason is in the status
            warnings.simplefilter("ignore", RuntimeWarning)
            _load()
    except ValueError as error:  # CHARLM_KERNELS_TARGET names a level this CPU cannot run
        return KernelStatus(False, None, str(error))
    except RuntimeError:  # CHARLM_KERNELS=1 and the build failed: the status says how
        pass
    return _status


def available() -> bool:
    """Whether the kernels are built and switched on (builds them on the first call)."""
    return _enabled and _load()


def usable(*tensors: torch.Tensor) -> bool:
    """Whether the kernels can run on these tensors: CPU, one supported dtype, kernels available."""
    first = tensors[0]
    if first.device.type != "cpu" or first.dtype not in DTYPES:
        return False
    if any(t.device.type != "cpu" or t.dtype != first.dtype for t in tensors[1:]):
        return False
    return available()


class use_kernels:  # noqa: N801 - used like a function: `with use_kernels(False): ...`
    """Context manager that switches the kernels on or off (to compare both paths)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __enter__(self) -> None:
        global _enabled
        self.previous, _enabled = _enabled, self.enabled

    def __exit__(self, *exc) -> None:
        global _enabled
        _enabled = self.previous


def ops():
    """The kernels' operators (``torch.ops.charlm``); call only when :func:`usable` said yes."""
    return torch.ops.charlm
