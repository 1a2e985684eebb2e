"""Which build of the kernel codes faster on this machine: each timed on the same text.

Every build computes the same bits, but wider vectors are not always quicker, so where the CPU's own
instruction-set level has one below it, the two race once per machine and kernel
(:func:`charlm.compression.build.fastest` keeps the answer). A race codes a text of words with the
online mode's defaults, as ``charlm compress`` would: long enough for every expert and the network
to be timed at their steady pace, short enough to cost about a second a build.
"""

from __future__ import annotations

import ctypes
import time

from ..hardware import machine
from . import build, codec, kernel
from .build import RACE_BYTES


def race_text() -> bytes:
    words = ("the time traveller said that it was a machine of which we knew nothing, and "
             "Filby laughed; but the Psychologist looked at him and answered: 'Never.'\n").split(" ")
    state, out = 12345, []
    while sum(len(w) + 1 for w in out) < RACE_BYTES:  # a fixed pseudo-random walk over the words
        state = (state * 1103515245 + 12345) % 2**31
        out.append(words[state % len(words)])
    return " ".join(out).encode()[:RACE_BYTES]


def seconds(target: str) -> float:
    """Seconds the `target` build takes to code the race's text online (the better of two tries)."""
    data, settings, times = race_text(), codec.resolved(None, None), []
    with codec.pinned(settings.threads):
        for _ in range(2):
            start = time.perf_counter()
            coder = codec.Coder("online", settings, None, lambda lm: codec.encoder_network("online", lm),
                                lambda wide: kernel.load(target))
            coder.encode(coder.stream(data), lambda done: None)
            times.append(time.perf_counter() - start)
    return min(times)


def library(wide: bool = False) -> ctypes.CDLL:
    """The build the compressor loads: the level ``CHARLM_KERNELS_TARGET`` names, else the race's
    answer (:func:`fastest`), falling back to portable where the compiler cannot build it. `wide`:
    for the pretrained network's large products (deepnet.c), where the widest vectors win (on a
    Zen 5 EPYC the x86-64-v4 build steps a 2 x 512 LSTM twice as fast as the v3 one the race picks
    for the online mode): the CPU's own level unless ``CHARLM_KERNELS_TARGET`` names one."""
    return kernel.load(build.chosen(None, seconds, wide))


def fastest(level: str) -> machine.Choice:
    """The faster build here of `level` and the level below (raced once, then read back)."""
    return build.fastest(level, seconds)


def status() -> tuple[str, str]:
    """For `charlm info`: the level the compressor's kernel is built for and its file, or why it
    cannot be built (never raises)."""
    return build.status(seconds)
