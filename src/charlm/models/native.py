"""charlm's C++ kernels (``charlm/csrc``), built on first use: the recurrences and greedy decoding.

On the CPU the fast models (:mod:`charlm.models.fused`) run their time loops in these kernels when
they can be built: one C++ loop per sequence, the matrix products on ATen, and all the element-wise
work of a step in one pass. They are compiled once per machine with the C++ compiler and ninja
(``torch.utils.cpp_extension``, about a minute) and cached under ``~/.cache/torch_extensions``.

Where they cannot be built (no compiler, an unusual platform) charlm says so once and runs the same
equations as Python loops of tensor operations, which give the same results, only slower.
``CHARLM_KERNELS=0`` turns the kernels off; ``CHARLM_KERNELS=1`` makes a failed build an error.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import warnings
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parent.parent / "csrc"
SOURCES = [CSRC / "recurrences.cpp", CSRC / "decoding.cpp"]  # both include cells.h
# -ffast-math lets the compiler call the vectorised exp/tanh of glibc inside the element-wise loops.
# -fopenmp makes at::parallel_for run on torch's threads (its OpenMP pragmas are compiled into the
# kernels); the library it needs, libgomp.so.1, is the one torch has already loaded.
CFLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-ffast-math", "-fopenmp", "-std=c++17"]
LDFLAGS = ["-fopenmp"]
DTYPES = (torch.float32, torch.float64, torch.bfloat16)

_log = logging.getLogger(__name__)
_enabled = True  # switched by `use_kernels` (the tests compare both paths)


def _setting() -> str:
    return os.environ.get("CHARLM_KERNELS", "auto").strip().lower()


def _loaded() -> bool:
    # Loading the library a second time would register its operators twice, which aborts.
    return hasattr(torch.ops.charlm, "gru_forward")


@functools.cache
def _load() -> bool:
    """Build (or find in the cache) and load the kernels; False where they cannot be had."""
    if _setting() in ("0", "off", "false", "no"):
        return False
    if _loaded():
        return True
    try:
        from torch.utils import cpp_extension

        # The name carries a digest of the source, the flags and torch's version, so that an edited
        # kernel or a new torch gets a fresh build and an old one is never loaded by mistake.
        stamp = " ".join([*CFLAGS, *LDFLAGS, torch.__version__]).encode()
        text = b"".join(path.read_bytes() for path in [*SOURCES, CSRC / "cells.h"])
        digest = hashlib.sha1(text + stamp).hexdigest()[:12]
        _log.info("building charlm's C++ kernels (once per machine, about a minute)")
        cpp_extension.load(name=f"charlm_kernels_{digest}", sources=[str(path) for path in SOURCES],
                           extra_cflags=CFLAGS, extra_ldflags=LDFLAGS, is_python_module=False, verbose=False)
        return _loaded()
    except Exception as error:  # a missing compiler shows up as one of many error types
        if _setting() in ("1", "on", "true", "yes"):
            raise RuntimeError(f"charlm's C++ kernels could not be built: {error}") from error
        warnings.warn(f"charlm: C++ kernels unavailable, using the slower Python loops ({error})",
                      RuntimeWarning, stacklevel=3)
        return False


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
