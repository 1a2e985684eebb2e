"""What this machine can do, probed once, and the choices charlm makes from it.

The rest of charlm never asks the hardware a question of its own: it calls :func:`probe` for the facts
and the ``choose_*`` functions below for the decisions. The choices are plain functions of a
:class:`Machine`, so the tests hold every branch to its specification on any machine by building the
machine they need (an AVX2 laptop, a Xeon with AMX, a CPU without a compiler, a GPU box) instead of
looking for one. `charlm info` prints the facts and the choices with their reasons.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import torch

_log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")

# The CPU features that change what charlm does, under the names Linux gives them in /proc/cpuinfo.
# avx512_bf16 and amx_bf16 are the x86 bf16 instructions; bf16 is arm64's (FEAT_BF16).
FEATURES = ("avx2", "fma", "bmi2", "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl",
            "avx512_bf16", "amx_bf16", "amx_tile", "asimd", "sve", "bf16")

# The x86-64 micro-architecture levels the kernels are built for (gcc and clang know them as
# -march=x86-64-v3 / -v4). A build for a level runs on every CPU of that level, whoever made it, so
# a cache shared by machines of different kinds never loads code its CPU cannot run.
X86_LEVELS = {
    "x86-64-v4": ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl", "avx2", "fma", "bmi2"),
    "x86-64-v3": ("avx2", "fma", "bmi2"),
}


@dataclass(frozen=True)
class Machine:
    """The facts charlm's choices depend on. Build one by hand to ask what charlm would do elsewhere."""

    arch: str = "x86_64"  # platform.machine(), with arm64 for aarch64
    cpu_model: str = "unknown CPU"
    cpu_features: frozenset[str] = frozenset()  # the subset of FEATURES this CPU has
    cores: int = 1  # CPUs this process may run on (its affinity, under any cgroup quota)
    onednn_bf16: bool = False  # a bf16 LSTM ran on oneDNN here (what torch.nn.LSTM calls on the CPU)
    cuda: str | None = None  # the first CUDA device's name
    cuda_bf16: bool = False  # that device does bf16 arithmetic natively (compute capability >= 8.0)
    mps: bool = False  # Apple's Metal backend
    compiler: str | None = None  # the C compiler the kernels are built with

    @property
    def native_bf16(self) -> bool:
        """bf16 products in hardware on the CPU: AVX-512 BF16 or AMX on x86, FEAT_BF16 on arm64."""
        return bool({"avx512_bf16", "amx_bf16", "bf16"} & self.cpu_features)

    def describe_cpu(self) -> str:
        shown = [f for f in FEATURES if f in self.cpu_features and f not in ("fma", "bmi2", "avx512cd",
                                                                             "avx512dq", "amx_tile")]
        return f"{self.cpu_model} ({self.arch}; {' '.join(shown) or 'no vector extensions charlm uses'})"


@dataclass(frozen=True)
class Choice:
    """A decision and the reason for it, as `charlm info` prints them."""

    value: str
    reason: str


# -- the probe ---------------------------------------------------------------------------------------

@functools.cache
def probe() -> Machine:
    """This machine, probed once per process (the oneDNN check runs a tiny bf16 LSTM: ~50 ms)."""
    arch = "arm64" if platform.machine().lower() in ("arm64", "aarch64") else platform.machine().lower()
    model, features = _cpu_identity()
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return Machine(arch=arch, cpu_model=model, cpu_features=features, cores=available_cores(),
                   onednn_bf16=_onednn_runs_bf16(), cuda=cuda,
                   cuda_bf16=bool(cuda) and torch.cuda.get_device_capability(0) >= (8, 0),
                   mps=torch.backends.mps.is_available(), compiler=find_compiler())


def _cpu_identity() -> tuple[str, frozenset[str]]:
    """The CPU's name and features: /proc/cpuinfo on Linux, sysctl on macOS."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        return parse_cpuinfo(cpuinfo.read_text(errors="replace"))
    if platform.system() == "Darwin":
        return _darwin_identity()
    return platform.processor() or "unknown CPU", frozenset()


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """The model name and the FEATURES in a /proc/cpuinfo text (x86's ``flags``, arm64's ``Features``)."""
    model, flags = "unknown CPU", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware") and model == "unknown CPU":
            model = " ".join(value.split())
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, frozenset(flags & set(FEATURES))


def _darwin_identity() -> tuple[str, frozenset[str]]:
    def sysctl(name: str) -> str:
        done = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    features = {"asimd"} if platform.machine() == "arm64" else set()
    if sysctl("hw.optional.arm.FEAT_BF16") == "1":
        features.add("bf16")
    return sysctl("machdep.cpu.brand_string") or "Apple CPU", frozenset(features)


def available_cores() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (containers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def _onednn_runs_bf16() -> bool:
    """Whether oneDNN's LSTM primitive accepts bf16 here: on CPUs without bf16 it raises
    "could not create a primitive descriptor" rather than emulating it."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
            torch.nn.LSTM(8, 8)(torch.zeros(2, 1, 8))
        return True
    except RuntimeError as err:
        _log.debug("oneDNN refused a bf16 LSTM: %s", err)
        return False


def find_compiler() -> str | None:
    """The C compiler: $CC, else cc, gcc or clang on the PATH."""
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


# -- the choices ----------------------------------------------------------------------------------------

def choose_device(requested: str, machine: Machine) -> Choice:
    """`--device auto`: CUDA, then Apple's MPS, then the CPU; a named device must be here."""
    base = requested.split(":")[0]
    if base not in DEVICES:
        raise ValueError(f"--device must be one of {', '.join(DEVICES)} (or cuda:N), got {requested!r}")
    if requested == "auto":
        if machine.cuda:
            return Choice("cuda", f"a CUDA device is present ({machine.cuda})")
        if machine.mps:
            return Choice("mps", "Apple's Metal backend is present")
        return Choice("cpu", "no CUDA or MPS device")
    if base == "cuda" and not machine.cuda:
        raise ValueError(f"--device {requested}: CUDA is not available on this machine")
    if base == "mps" and not machine.mps:
        raise ValueError(f"--device {requested}: MPS is not available on this machine")
    return Choice(requested, "asked for")


def choose_precision(requested: str, machine: Machine, device: str = "cpu") -> Choice:
    """`--precision`: bf16 autocast or plain fp32 on `device` ("cpu", "cuda", "mps", "cuda:1").

    ``auto`` picks bf16 only where the products run in bf16 hardware (AVX-512 BF16 or AMX, or a CUDA
    GPU of compute capability 8.0 or newer), where it was measured faster (docs/benchmarks.md); fp32
    everywhere else, including CPUs that would emulate bf16 more slowly. An explicit ``bf16`` that
    cannot run here is an error naming the flag, never a failure deep inside oneDNN.
    """
    if requested not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested == "fp32":
        return Choice("fp32", "asked for")
    runs, native, why_not = _bf16_support(machine, device.split(":")[0])
    if requested == "bf16":
        if not runs:
            raise ValueError(f"--precision bf16: {why_not}; use --precision auto or fp32")
        return Choice("bf16", "asked for" if native else f"asked for (emulated: {why_not}, slower than fp32)")
    if native:
        return Choice("bf16", "this CPU computes bf16 products in hardware" if device == "cpu" else
                      f"{machine.cuda} computes bf16 products in hardware")
    return Choice("fp32", why_not.replace("cannot run bf16", "has no bf16 hardware"))


def _bf16_support(machine: Machine, kind: str) -> tuple[bool, bool, str]:
    """(bf16 runs on this device kind, it runs in hardware, why not) ."""
    if kind == "cuda":
        why = f"{machine.cuda} has no bf16 hardware (compute capability < 8.0)" if machine.cuda else \
            "there is no CUDA device"
        return bool(machine.cuda), machine.cuda_bf16, why
    if kind == "mps":
        return False, False, "charlm does not use bf16 autocast on MPS"
    features = "AVX-512 BF16 / AMX" if machine.arch == "x86_64" else "FEAT_BF16"
    lacks = f"this CPU ({machine.cpu_model}, no {features})"
    if not machine.onednn_bf16:  # oneDNN refuses bf16 LSTMs where the CPU has none
        return False, False, f"{lacks} cannot run bf16" if not machine.native_bf16 else \
            f"oneDNN refuses bf16 on this CPU ({machine.cpu_model}; is ONEDNN_MAX_CPU_ISA set?)"
    if not machine.native_bf16:
        return True, False, f"{lacks} has no bf16 hardware"
    return True, True, ""


def kernel_target(machine: Machine) -> Choice:
    """The instruction set the C and C++ kernels are built for: the highest x86-64 level this CPU has
    (v4: AVX-512; v3: AVX2 and FMA), else a portable build (arm64, older x86) with no -march."""
    if machine.arch == "x86_64":
        for level, needs in X86_LEVELS.items():
            if set(needs) <= machine.cpu_features:
                return Choice(level, f"the CPU has {' '.join(needs[:2]) if level.endswith('4') else 'AVX2'}"
                              f" (the {level} level)")
        return Choice("portable", "the CPU lacks AVX2: a build with the compiler's baseline")
    return Choice("portable", f"{machine.arch}: a build for the compiler's baseline, no x86 code")


def target_flags(target: str) -> tuple[str, ...]:
    """Compiler flags of a kernel target (see :func:`kernel_target`)."""
    if target == "portable":
        return ()
    if target not in X86_LEVELS:
        raise ValueError(f"unknown kernel target {target!r}; one of portable, {', '.join(X86_LEVELS)}")
    # -mtune=native tunes the schedule for this CPU without using any instruction beyond the level.
    wide = ("-mprefer-vector-width=512",) if target == "x86-64-v4" else ()
    return (f"-march={target}", "-mtune=native", *wide)


def choose_threads(machine: Machine, others_busy: float | None = None) -> Choice:
    """torch's intra-op threads: one per CPU this process may use (its affinity and cgroup quota, not
    every CPU in the box) that other processes leave at least half free.

    `others_busy` is the CPU time other processes took on those CPUs over the last interval, in
    CPUs (1.0 = one CPU kept busy); None = not measured (then all of them). Why fewer threads under
    load: the threads meet at a barrier after every product, and one waiting for a partner that the
    scheduler has put aside spins through its slice; beside a one-core busy loop, two threads trained
    at a fifth of their idle speed where one thread keeps nearly all of its own (docs/benchmarks.md).
    """
    if others_busy is None:
        return Choice(str(machine.cores), "one per CPU this process may run on (affinity, cgroup quota)")
    free = machine.cores - others_busy
    threads = max(1, min(machine.cores, math.floor(free + 0.5)))
    return Choice(str(threads), f"other processes keep {others_busy:.1f} of {machine.cores} CPUs busy")


def scratch_path(device: str, kernels_built: bool, why_not: str = "") -> Choice:
    """Where `impl="scratch"` models (the book's equations) run their time loops on `device`."""
    if device.split(":")[0] != "cpu":
        return Choice("Python loops", f"on {device}: tensor operations per step (the C++ kernels are "
                      "CPU code)")
    if kernels_built:
        return Choice("C++ kernels", "charlm's time loops, one pass of element-wise work per step")
    return Choice("Python loops", f"the C++ kernels are not available: {why_not}")


def replace(machine: Machine, **changes) -> Machine:
    """A copy with some facts changed: what charlm would do on another machine."""
    return dataclasses.replace(machine, **changes)
