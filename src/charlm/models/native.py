"""charlm's C++ kernels (``charlm/csrc``), built on first use: the recurrences and greedy decoding.

On the CPU the fast models (:mod:`charlm.models.fused`) run their time loops in these kernels when
they can be built: one C++ loop per sequence, the matrix products on ATen, and all the element-wise
work of a step in one pass. They are compiled once per machine with the C++ compiler and ninja
(``torch.utils.cpp_extension``, half a minute to a minute) and cached under
``~/.cache/torch_extensions``.

The build is for the CPU's instruction-set level, not for the exact CPU (``-march=native``): x86-64-v4
(AVX-512) or x86-64-v3 (AVX2 and FMA) where the CPU has it, else portable (the compiler's baseline:
arm64, older x86). The level is in the build's name, so a cache shared by machines of different kinds
never hands AVX-512 code to an AVX2 CPU. A compiler too old for the level gets the portable build.

Where they cannot be built (no compiler, an unusual platform) charlm says so once and runs the same
equations as Python loops of tensor operations, which give the same results, only slower.

Environment:
  ``CHARLM_KERNELS=0`` turns the kernels off; ``CHARLM_KERNELS=1`` makes a failed build an error.
  ``CHARLM_KERNELS_TARGET=portable|x86-64-v3|x86-64-v4`` builds for that level instead of the
  CPU's own (a level the CPU cannot run is an error); unset or ``auto``: the CPU's level.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from charlm import machine

CSRC = Path(__file__).resolve().parent.parent / "csrc"
SOURCES = [CSRC / "recurrences.cpp", CSRC / "decoding.cpp"]  # both include cells.h
# Lowest level first: a CPU runs a level's build and every build below it.
TARGETS = ("portable", *reversed(machine.X86_LEVELS))
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
    """The build's name: its target, and a digest of the sources, the flags and torch's version, so
    that an edited kernel, other flags or a new torch get a fresh build and an old one is never loaded."""
    stamp = " ".join([*cflags(target), *LDFLAGS, torch.__version__]).encode()
    text = b"".join(path.read_bytes() for path in [*SOURCES, CSRC / "cells.h"])
    digest = hashlib.sha1(text + stamp).hexdigest()[:12]
    return f"charlm_kernels_{target.replace('-', '_')}_{digest}"


def choose_target(cpu: machine.Machine, requested: str = "auto") -> machine.Choice:
    """The level to build for: `requested` (``CHARLM_KERNELS_TARGET``) if this CPU runs it, else the CPU's."""
    requested = requested.strip().lower() or "auto"
    if requested == "auto":
        return machine.kernel_target(cpu)
    if requested not in TARGETS:
        raise ValueError(f"CHARLM_KERNELS_TARGET must be auto or one of {', '.join(TARGETS)}, "
                         f"got {requested!r}")
    best = machine.kernel_target(cpu).value
    if TARGETS.index(requested) > TARGETS.index(best):
        # Code for a level the CPU lacks loads fine and dies of SIGILL at its first instruction.
        raise ValueError(f"CHARLM_KERNELS_TARGET={requested}: this CPU ({cpu.describe_cpu()}) cannot run "
                         f"it; the highest level it runs is {best}")
    return machine.Choice(requested, "CHARLM_KERNELS_TARGET")


def _first_error(message: str) -> str:
    """The line of a build's output that says what went wrong (the compiler's first error)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()] or ["no message"]
    return next((line for line in lines if "error:" in line), lines[0])


def _build(target: str) -> None:
    """Build the kernels for `target` (unless torch's cache holds them) and load them."""
    from torch.utils import cpp_extension

    compiler = os.environ.get("CXX", "c++")  # the compiler torch's build calls
    if not shutil.which(compiler):
        raise OSError(f"no C++ compiler: {compiler!r} is not on the PATH (install g++, or set CXX)")
    name = extension_name(target)
    folder = Path(cpp_extension._get_build_directory(name, verbose=False))
    if not (folder / f"{name}.so").is_file():
        _log.info("building charlm's C++ kernels for %s (once per machine, about half a minute to a "
                  "minute)", target)
    cpp_extension.load(name=name, sources=[str(path) for path in SOURCES], extra_cflags=cflags(target),
                       extra_ldflags=LDFLAGS, is_python_module=False, verbose=False)


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
    requested = os.environ.get("CHARLM_KERNELS_TARGET", "auto")
    choice = choose_target(machine.probe(), requested)  # a level this CPU lacks: an error, always
    if _loaded():  # loaded earlier in this process
        _status = _loaded_as or KernelStatus(True, None, "loaded earlier in this process")
        return True
    try:
        forced = requested.strip().lower() not in ("", "auto")
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
