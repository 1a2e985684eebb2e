"""What `charlm info` reports: this machine's facts, and each choice charlm makes from them, with its
reason. The facts come from :func:`charlm.hardware.machine.probe` and the kernels' own build status; the
choices from the ``choose_*`` functions the library itself calls, so the report cannot disagree with
what training does."""

from __future__ import annotations

import os
from typing import Any

import torch

from . import __version__
from .compression import race
from .hardware import machine, native_build
from .hardware.threads import fixed_threads
from .models import native

# Environment variables that change what the libraries underneath do, shown when set.
ENVIRONMENT = ("CHARLM_KERNELS", "CHARLM_KERNELS_TARGET", "CHARLM_THREADS", "OMP_NUM_THREADS",
               "ONEDNN_MAX_CPU_ISA",
               "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "CUDA_VISIBLE_DEVICES")


def report() -> dict[str, Any]:
    """``{"machine": {name: fact}, "choices": {name: {"value", "reason"}}}`` for this machine; builds
    the kernels if they are not built yet (half a minute to a minute, once)."""
    facts = machine.probe()
    device = machine.choose_device("auto", facts)
    kernels = native.build_status()
    compression_target, compression_where = race.status()
    cpp = f"built for {kernels.target}" if kernels.built else f"not available: {kernels.reason}"
    found = {
        "charlm": __version__,
        "cpu": facts.describe_cpu(),
        "cores": f"{facts.cores} usable by this process (of {os.cpu_count()})",
        "torch": f"{torch.__version__}; CPU code path {torch.backends.cpu.get_cpu_capability()}; "
                 f"oneDNN bf16 LSTM {'runs' if facts.onednn_bf16 else 'refused'}",
        "cuda": f"{facts.cuda} (bf16 {'native' if facts.cuda_bf16 else 'not native'})" if facts.cuda
        else "none",
        "mps": "yes" if facts.mps else "no",
        "compiler": facts.compiler or "none found (install gcc, or set CC)",
        "C++ kernels": cpp,
        "compression kernel": f"built for {compression_target}{_why_level(compression_target)}"
        if compression_where.endswith(".so")
        else f"not available: {compression_where}",
        "environment": " ".join(f"{k}={os.environ[k]}" for k in ENVIRONMENT if k in os.environ) or "-",
    }
    threads = machine.choose_threads(facts)
    if fixed_threads():
        threads = machine.Choice(str(fixed_threads()), "CHARLM_THREADS: fixed, whatever the load")
    choices = {
        "device": device,
        "precision": machine.choose_precision("auto", facts, device.value),
        "threads": machine.Choice(threads.value, f"{threads.reason}; while training, fewer when other "
                                  "processes keep CPUs busy (measured every second)"),
        "kernel target": machine.kernel_target(facts),
        "scratch models": machine.scratch_path(device.value, kernels.built, kernels.reason),
        "builtin models": machine.Choice("torch.nn", "oneDNN's fused LSTM on the CPU, cuDNN on CUDA"),
    }
    return {"machine": found,
            "choices": {k: {"value": c.value, "reason": c.reason} for k, c in choices.items()}}


def format_report(data: dict[str, Any]) -> str:
    lines = ["machine"]
    width = max(len(k) for k in [*data["machine"], *data["choices"]]) + 2
    lines += [f"  {name:{width}}{value}" for name, value in data["machine"].items()]
    lines.append("choices (auto)")
    lines += [f"  {name:{width}}{c['value']:14} {c['reason']}" for name, c in data["choices"].items()]
    return "\n".join(lines)


def _why_level(target: str) -> str:
    """Why the compression kernel runs at `target` where a race between two levels chose it."""
    level = native_build.choose_target(machine.probe())
    if level.reason == native_build.TARGET_ENV:
        return f" ({level.reason})"
    choice = race.fastest(level.value)
    return f": {choice.reason}" if choice.reason.startswith("measured") else ""
