"""Generation speed: characters per second of greedy prediction after a prefix.

The baseline is the book's ``predict_ch8`` (:mod:`benchmarks.book`): one forward call per token,
warm-up included, with autograd recording every step. charlm's :func:`charlm.generation.generate`
runs the same greedy loop with the same-sized model, for one stream and for 64 streams at once
(``num_samples``; the streams share every matrix product): in C++ (:mod:`charlm.models.decoding`),
and for one stream also as the Python loop that runs where the kernels cannot be built. Untrained
models: speed does not depend on the weights. Memory: :func:`charlm.generation.stream` keeps only the
recurrent state, so the resident memory must not grow with the length of the text; measured in a
fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from charlm.data.vocab import Vocab
from charlm.generation import GenerateConfig, generate, stream
from charlm.models import RNNLM, ModelConfig, native

from . import book
from .speed import Setup, Timing, _status_mb

ALPHABET = " abcdefghijklmnopqrstuvwxyz"  # The Time Machine after d2l cleaning, with <unk>: 28
PREFIX = "time traveller "


def _vocab() -> Vocab:
    return Vocab(list(ALPHABET))


def _charlm_model(setup: Setup) -> RNNLM:
    torch.manual_seed(0)
    return RNNLM(ModelConfig(setup.vocab_size, setup.num_hiddens, cell=setup.cell, impl="scratch"))


def runners(setup: Setup, num_preds: int) -> dict[str, tuple[Callable[[], None], int]]:
    """Name -> (a call that generates, the characters it generates)."""
    vocab = _vocab()
    assert len(vocab) == setup.vocab_size, "generation is measured on the book's 28-token vocabulary"
    torch.manual_seed(0)
    net = book.RNNModelScratch(setup.cell, setup.vocab_size, setup.num_hiddens)
    prefix_ids = vocab[list(PREFIX)]
    model = _charlm_model(setup)

    def charlm(n: int, kernels: bool = True) -> Callable[[], None]:
        config = GenerateConfig(num_preds=num_preds, greedy=True, num_samples=n)

        def run() -> None:
            with native.use_kernels(kernels):
                generate(model, vocab, PREFIX, config)
        return run

    return {"book's predict_ch8": (lambda: book.predict_ch8(prefix_ids, num_preds, net), num_preds),
            "charlm, 1 stream, Python loop": (charlm(1, kernels=False), num_preds),
            "charlm, 1 stream": (charlm(1), num_preds),
            "charlm, 64 streams": (charlm(64), 64 * num_preds)}


def measure(setup: Setup, *, num_preds: int = 200, repeats: int = 5) -> dict[str, Timing]:
    """Characters per second of each runner, interleaved repetitions after one warm-up call."""
    calls = runners(setup, num_preds)
    for run, _ in calls.values():
        run()
    timings = {name: Timing([]) for name in calls}
    for _ in range(repeats):
        for name, (run, chars) in calls.items():
            start = time.perf_counter()
            run()
            timings[name].tokens_per_sec.append(chars / (time.perf_counter() - start))
    return timings


def memory_growth_mb(setup: Setup, short: int = 1_000, long: int = 20_000) -> float:
    """Resident memory (MiB) gained between character `short` and character `long` of one stream."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "4096"}  # see speed.peak_memory_mb
    command = [sys.executable, "-m", "benchmarks.generation", setup.cell, str(setup.num_hiddens),
               str(short), str(long)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return float(out.stdout.strip().splitlines()[-1])


def _memory_child(cell: str, num_hiddens: int, short: int, long: int) -> None:
    setup = Setup("generation", cell, num_hiddens)
    tokens = stream(_charlm_model(setup), _vocab(), PREFIX, GenerateConfig(num_preds=long, greedy=True))
    for _ in range(short):
        next(tokens)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the high-water mark
    base = _status_mb("VmRSS")
    for _ in tokens:
        pass
    print(json.dumps(_status_mb("VmHWM") - base))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="internal: memory of one long generated stream")
    parser.add_argument("cell")
    parser.add_argument("num_hiddens", type=int)
    parser.add_argument("short", type=int)
    parser.add_argument("long", type=int)
    args = parser.parse_args()
    _memory_child(args.cell, args.num_hiddens, args.short, args.long)
