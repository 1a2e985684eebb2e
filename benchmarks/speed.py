"""Training speed of every implementation, side by side in one process.

Each *setup* (cell, sizes, batch) is measured for several *variants*: the book's own code
(:mod:`benchmarks.book`, the baseline), the book's concise ``torch.nn`` model, and charlm's
implementations. Repetitions are interleaved (variant A, B, C, A, B, C, ...) so that a noisy
neighbour slows all of them alike; each repetition times ``steps`` training iterations after a
warm-up, and the table gives the median tokens/s with the range over repetitions.

A training iteration is what the book's ``train_epoch_ch8`` does per batch: forward, mean
cross-entropy, backward, clip the global gradient norm to 1, SGD with lr 1 (charlm's own training
step: :func:`charlm.evaluation.cross_entropy`, :func:`charlm.training.optim.grad_clipping`,
``torch.optim.SGD``).
Inputs are random token ids; speed does not depend on the text.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from charlm.evaluation import cross_entropy
from charlm.hardware import machine
from charlm.models import RNNLM, ModelConfig, detach_state, native
from charlm.training.optim import grad_clipping

from . import book


@dataclass(frozen=True)
class Setup:
    """One model and batch shape to measure."""

    name: str
    cell: str
    num_hiddens: int
    vocab_size: int = 28  # The Time Machine, d2l cleaning
    batch_size: int = 32
    num_steps: int = 35
    num_layers: int = 1
    embedding: int | None = None  # None = one-hot, as the book

    @property
    def tokens(self) -> int:
        return self.batch_size * self.num_steps

    @property
    def gates(self) -> int:
        return {"rnn": 1, "gru": 3, "lstm": 4}[self.cell]

    def flops(self) -> float:
        """Floating-point operations of the dense products of one training step (forward, the
        gradient of the inputs, the gradient of the weights: 3 products each), without the one-hot
        input product, which a row gather replaces: ``2 * rows * inner * outer`` per product."""
        rows, H, GH = self.tokens, self.num_hiddens, self.gates * self.num_hiddens
        per_layer = [2 * rows * H * GH] * self.num_layers  # the recurrent products H_{t-1} W_h
        inputs = [] if self.embedding is None else [2 * rows * self.embedding * GH]
        inputs += [2 * rows * H * GH] * (self.num_layers - 1)  # layer l + 1 reads layer l
        return 3.0 * (sum(per_layer) + sum(inputs) + 2 * rows * H * self.vocab_size)

    @property
    def is_book(self) -> bool:
        """The book's code can run it: one layer, one-hot input."""
        return self.num_layers == 1 and self.embedding is None


SETUPS = {
    "rnn-512": Setup("rnn-512", "rnn", 512),
    "gru-256": Setup("gru-256", "gru", 256),
    "lstm-256": Setup("lstm-256", "lstm", 256),
    # tiny-shakespeare sized: vocabulary 65, 2 x 512 LSTM on a 64-wide embedding
    "lstm-2x512": Setup("lstm-2x512", "lstm", 512, vocab_size=65, batch_size=64, num_steps=100,
                        num_layers=2, embedding=64),
}

Step = Callable[[], None]


def book_scratch_step(setup: Setup, data: tuple[torch.Tensor, torch.Tensor]) -> Step:
    net = book.RNNModelScratch(setup.cell, setup.vocab_size, setup.num_hiddens)
    return _book_step(net, data)


def book_concise_step(setup: Setup, data: tuple[torch.Tensor, torch.Tensor]) -> Step:
    return _book_step(book.concise(setup.cell, setup.vocab_size, setup.num_hiddens), data)


def _book_step(net, data) -> Step:
    X, Y = data
    carried = [None]

    def step() -> None:
        _, carried[0] = book.train_step(net, X, Y, carried[0])

    return step


def charlm_step(setup: Setup, data: tuple[torch.Tensor, torch.Tensor], impl: str, *,
                bf16: bool = False) -> Step:
    """charlm's training iteration (as :class:`charlm.training.loop.Trainer` does it) for one impl."""
    model = RNNLM(ModelConfig(setup.vocab_size, setup.num_hiddens, cell=setup.cell, impl=impl,
                  num_layers=setup.num_layers, embedding=setup.embedding))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    X, Y = data
    carried = [None]

    def step() -> None:
        state = model.begin_state(X.shape[0]) if carried[0] is None else detach_state(carried[0])
        with torch.autocast(X.device.type, torch.bfloat16, enabled=bf16):
            logits, carried[0] = model(X, state)
        loss = cross_entropy(logits, Y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_clipping(model.parameters(), 1.0)
        optimizer.step()

    return step


def without_kernels(step: Step) -> Step:
    """The same step on the Python loops that stand in where charlm's C++ kernels are not built."""

    def python_loops() -> None:
        with native.use_kernels(False):
            step()

    return python_loops


BASELINE = "book's scratch code"
VARIANTS: dict[str, Callable[..., Step]] = {
    BASELINE: book_scratch_step,
    "book's concise code": book_concise_step,
    "charlm book": lambda s, d: charlm_step(s, d, "book"),
    "charlm scratch": lambda s, d: charlm_step(s, d, "scratch"),
    "charlm scratch, Python loops": lambda s, d: without_kernels(charlm_step(s, d, "scratch")),
    "charlm builtin": lambda s, d: charlm_step(s, d, "builtin"),
    "charlm scratch bf16": lambda s, d: charlm_step(s, d, "scratch", bf16=True),
    "charlm builtin bf16": lambda s, d: charlm_step(s, d, "builtin", bf16=True),
}


def variants(setup: Setup, device: str = "cpu") -> list[str]:
    """The variants that apply to `setup` on `device`: the book's code only runs one-hot single
    layers, and bf16 only where it runs (oneDNN refuses bf16 LSTMs on CPUs without it)."""
    names = [name for name in VARIANTS if setup.is_book or not name.startswith("book's")]
    try:
        machine.choose_precision("bf16", machine.probe(), device)
    except ValueError:
        names = [name for name in names if not name.endswith("bf16")]
    return names


def random_batch(setup: Setup, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (setup.batch_size, setup.num_steps)
    return (torch.randint(setup.vocab_size, shape, generator=g),
            torch.randint(setup.vocab_size, shape, generator=g))


@dataclass
class Timing:
    """Tokens per second of one variant over the repetitions."""

    tokens_per_sec: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.tokens_per_sec)

    @property
    def spread(self) -> tuple[float, float]:
        return min(self.tokens_per_sec), max(self.tokens_per_sec)


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()  # GPU work is asynchronous: wait for it before reading the clock


def measure(steps: dict[str, Step], tokens: int, *, repeats: int = 5, iterations: int = 10,
            warmup: int = 3) -> dict[str, Timing]:
    """Interleaved repetitions: each round times `iterations` steps of every variant in turn."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    timings = {name: Timing([]) for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            _synchronize()
            start = time.perf_counter()
            for _ in range(iterations):
                step()
            _synchronize()
            timings[name].tokens_per_sec.append(tokens * iterations / (time.perf_counter() - start))
    return timings


def peak_memory_mb(setup: Setup, variant: str, steps: int = 3) -> float:
    """The memory a training step needs: peak resident memory (MiB) during `steps` iterations above
    the resident memory held between iterations (model, optimizer, libraries), after a warm-up.
    Measured in a fresh process per variant (Linux: /proc), so variants share no high-water mark."""
    command = [sys.executable, "-m", "benchmarks.speed", "--memory", setup.name, variant, str(steps)]
    # glibc returns mmap-ed blocks to the system when they are freed, so with this threshold the
    # resident size follows the live tensors instead of the allocator's free lists.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "4096"}
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=env,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return float(out.stdout.strip().splitlines()[-1])


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024  # kB -> MiB


def _memory_child(setup_name: str, variant: str, steps: int) -> None:
    setup = SETUPS[setup_name]
    step = VARIANTS[variant](setup, random_batch(setup))
    for _ in range(2):
        step()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the high-water mark VmHWM to the current resident size
    base = _status_mb("VmRSS")
    for _ in range(steps):
        step()
    print(json.dumps(max(_status_mb("VmHWM") - base, 0.0)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="internal: one peak-memory measurement")
    parser.add_argument("--memory", nargs=3, metavar=("SETUP", "VARIANT", "STEPS"), required=True)
    args = parser.parse_args()
    _memory_child(args.memory[0], args.memory[1], int(args.memory[2]))
