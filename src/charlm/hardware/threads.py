"""torch's thread count, kept fitted to the CPUs other processes leave free while training runs.

Two threads on two idle cores train the book's RNN about 1.4x faster than one; beside a one-core
busy loop they fell to a fifth of their idle speed (and to a thirtieth in one round), because every
product ends at a barrier where a spinning thread waits for a partner the scheduler has put aside.
One thread keeps nearly all of its speed there. OpenMP's passive wait policy also kept it, but cost
40 % when the machine was idle. So the trainer asks a :class:`ThreadGovernor` between batches; about
once a second it reads how busy the process's CPUs were, takes away its own share, and sets the
count :func:`charlm.hardware.machine.choose_threads` gives for the rest (benchmarks/load.py measures it).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from . import machine

_log = logging.getLogger(__name__)
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def busy_cpu_seconds(cpus: set[int], stat: str | None = None) -> float | None:
    """CPU seconds spent busy on `cpus` since boot, from /proc/stat (None where there is none).

    Busy is everything but idle and iowait: user, nice, system, irq, softirq and steal.
    """
    if stat is None:
        try:
            stat = Path("/proc/stat").read_text()
        except OSError:
            return None
    total = 0
    for line in stat.splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [int(x) for x in fields[:8]]
            total += sum(ticks) - ticks[3] - ticks[4]  # minus idle and iowait
    return total / _TICK


def fixed_threads() -> int | None:
    """``CHARLM_THREADS=N``: exactly N threads, never changed. Products summed by another number of
    threads round differently, so a run that must repeat bit for bit (same seed, same machine) on a
    machine whose load varies fixes the count; unset or ``auto``: fitted to the load."""
    value = os.environ.get("CHARLM_THREADS", "auto").strip().lower()
    if value in ("", "auto"):
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"CHARLM_THREADS must be auto or a count >= 1, got {value!r}")
    return int(value)


class ThreadGovernor:
    """Call :meth:`tick` often (between batches); about every `interval` seconds it re-measures the
    others' load on this process's CPUs and sets ``torch.set_num_threads`` to match."""

    def __init__(self, facts: machine.Machine, interval: float = 1.0,
                 busy: Callable[[], float | None] | None = None,
                 own: Callable[[], float] = time.process_time,
                 clock: Callable[[], float] = time.monotonic) -> None:
        cpus = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()
        # Never more threads than the process had: OMP_NUM_THREADS, torchrun's one per process, or a
        # user's own torch.set_num_threads are limits to keep.
        self.before = torch.get_num_threads()
        self.facts = machine.replace(facts, cores=max(1, min(facts.cores, self.before)))
        self.interval, self.own, self.clock = interval, own, clock
        self.busy = busy or (lambda: busy_cpu_seconds(cpus))
        self.fixed = fixed_threads()
        self.threads = self.fixed or int(machine.choose_threads(self.facts).value)
        self._mark = (clock(), self.busy(), own())
        self.set(self.threads)

    def __enter__(self) -> ThreadGovernor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.set(self.before)

    def set(self, threads: int) -> None:
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        self.threads = threads

    def tick(self) -> None:
        if self.fixed:
            return
        now = self.clock()
        then, busy_then, own_then = self._mark
        if now - then < self.interval:
            return
        busy, own = self.busy(), self.own()
        self._mark = (now, busy, own)
        if busy is None or busy_then is None:
            return  # no /proc/stat here: keep one thread per CPU
        others = max(0.0, (busy - busy_then) - (own - own_then)) / (now - then)
        choice = machine.choose_threads(self.facts, others)
        if int(choice.value) != self.threads:
            _log.debug("threads %d -> %s: %s", self.threads, choice.value, choice.reason)
            self.set(int(choice.value))
