"""The C side of the compressor: built once per source version with the system's C compiler, then
loaded with ctypes. kernel.c says what it does and why it is C; this module builds it and wraps one
coding run (a :class:`Kernel`) around torch tensors that both sides share without copies.

The build is plain C (no Python or torch headers), so it takes about a second. It is cached with
charlm's other native build (:mod:`charlm.native_build`: ``~/.cache/charlm/kernels``), named by a
digest of the sources and the flags: a changed kernel is a new file, and archives record that digest
(:func:`kernel_id`), since another kernel gives other probabilities. The build is for the CPU's
instruction-set level (x86-64-v4 or -v3: wider vectors), or the level below it where that codes
faster on this machine, which a race of the two decides once (:func:`fastest`;
``CHARLM_KERNELS_TARGET`` may ask for a level instead), named by that level so a cache shared by
machines of different kinds never loads code a CPU cannot run, or portable (arm64, older x86, a
compiler that does not know the level). Every build computes the same bits (a test holds them to
it), so an archive does not depend on which one made it.
Where no build can be made, compressing and decompressing raise :class:`KernelError`.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import shutil
import subprocess
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from .. import machine, native_build

# What the build reads: kernel.c, which #includes net.c, bits.c and deepnet.c.
_SOURCES = tuple(Path(__file__).with_name(name) for name in ("kernel.c", "net.c", "bits.c", "deepnet.c"))
# -ffp-contract=off: no fused multiply-adds, so every operation rounds alike whatever the compiler and
# the instruction set; vectorised element-wise loops round exactly as scalar ones, and without
# -ffast-math no sum is reordered. A target's flags (machine.target_flags) only make the vectors
# wider and tune the schedule.
# -pthread: the networks' second threads (net.c's learner, deepnet.c's share of the products).
_FLAGS = ("-O3", "-std=c11", "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math", "-fno-math-errno",
          "-pthread")
TARGETS = native_build.TARGETS
MAX_ORDERS = 8

_log = logging.getLogger(__name__)


@cache
def kernel_id() -> str:
    """The digest of the kernel's sources and flags that archives record: 16 hex digits. Computed on
    first use, not at import (it reads the C sources)."""
    return native_build.source_digest(_SOURCES, " ".join(_FLAGS))


def __getattr__(name: str) -> str:
    # KERNEL_ID, the name the digest had as a constant, is still there, computed when first asked for.
    if name == "KERNEL_ID":
        return kernel_id()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class KernelError(OSError):
    """The C kernel cannot be built or loaded here (no compiler), or ran out of memory."""


class Config(ctypes.Structure):
    """Mirror of kernel.c's ``Config``; field order and types must match it."""

    _fields_ = [
        *[(name, ctypes.c_int32) for name in ("lanes", "alphabet", "vocab", "steps", "num_orders")],
        ("orders", ctypes.c_int32 * MAX_ORDERS),
        *[(name, ctypes.c_int32) for name in ("words", "match", "rows_log2", "match_rows_log2", "window_log2",
                                              "limit", "total", "esc_char", "esc_byte", "unk", "start",
                                              "features", "kinds", "netsel", "apm", "bit_models",
                                              "bit_rows_log2", "bit_limit")],
        *[(name, ctypes.c_double)
          for name in ("prior", "mix_lr", "beta1", "beta2", "mix_init", "extra_logit", "apm_rate",
                       "apm_weight", "bit_lr")],
    ]


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


def _compile(target: Path, flags: tuple[str, ...]) -> None:
    compiler = _compiler()
    with native_build.atomic_output(target) as built:  # a concurrent build never loads half a file
        try:
            result = subprocess.run([compiler, *flags, "-o", str(built), str(_SOURCES[0]), "-lm"],
                                    capture_output=True, text=True)
        except OSError:  # found, but it does not run (not an executable for this machine)
            raise KernelError(f"{_NO_COMPILER}; {compiler!r} does not run") from None
        if result.returncode != 0:
            first = (result.stderr.strip().splitlines() or ["no message"])[0]
            raise KernelError(f"building the compression kernel with {compiler} failed: {first}")


def _built(target: str) -> Path:
    """The kernel's shared library for an instruction-set level, compiled if the cache lacks it."""
    name = native_build.build_name("charlm_compression", target, kernel_id())
    path = native_build.cache_folder() / f"{name}.so"
    if not path.is_file():
        _compiler()  # without one, that is the message, not that a build starts
        native_build.announce(_log, "charlm's compression kernel", target, "about a second")
        _compile(path, _FLAGS + machine.target_flags(target))
    return path


@cache
def _build_for(target: str) -> tuple[str, Path]:
    """The level actually built and its library: `target`, or portable where the compiler cannot
    build that level (too old to know -march=x86-64-v4). No compiler at all is an error."""
    try:
        return target, _built(target)
    except KernelError as err:
        if target == "portable" or _NO_COMPILER in str(err):
            raise
        _log.warning("the compression kernel did not build for %s (%s); using the portable build",
                     target, err)
        return "portable", _built("portable")


def _chosen(target: str | None, wide: bool = False) -> str:
    """`target`, or when None the level ``CHARLM_KERNELS_TARGET`` asks for, by default the faster on
    this machine of its own level and the one below (:func:`fastest`), or with `wide` the CPU's own
    level; a level this CPU cannot run is an error."""
    cpu = machine.probe()
    if target is None:
        choice = native_build.choose_target(cpu)
        if choice.reason == native_build.TARGET_ENV or wide:
            return choice.value
        return fastest(choice.value).value
    best = machine.kernel_target(cpu).value
    if target not in TARGETS:
        raise ValueError(f"unknown kernel target {target!r}; one of {', '.join(TARGETS)}")
    if TARGETS.index(target) > TARGETS.index(best):  # it would load, then die of SIGILL
        raise ValueError(f"this CPU cannot run the {target} kernel; the highest level it runs is {best}")
    return target


# What a race of two builds codes: a text of words, long enough for every expert and the network to
# be timed at their steady pace, short enough to cost about a second a build.
_RACE_BYTES = 24_000
_forced: str | None = None  # the build library() loads while a race times it


def _race_text() -> bytes:
    words = ("the time traveller said that it was a machine of which we knew nothing, and "
             "Filby laughed; but the Psychologist looked at him and answered: 'Never.'\n").split(" ")
    state, out = 12345, []
    while sum(len(w) + 1 for w in out) < _RACE_BYTES:  # a fixed pseudo-random walk over the words
        state = (state * 1103515245 + 12345) % 2**31
        out.append(words[state % len(words)])
    return " ".join(out).encode()[:_RACE_BYTES]


def _seconds(target: str) -> float:
    """Seconds the `target` build takes to compress the race text (the better of two tries)."""
    global _forced
    from .streaming import compress  # the codec imports this module

    data, times = _race_text(), []
    _forced = target
    try:
        for _ in range(2):
            start = time.perf_counter()
            compress(data)
            times.append(time.perf_counter() - start)
    finally:
        _forced = None
    return min(times)


def _lower(level: str) -> str | None:
    """The x86-64 level below `level` (v4 -> v3); None below v3, where only portable is left."""
    levels = list(machine.X86_LEVELS)  # highest first
    return levels[levels.index(level) + 1] if level in levels[:-1] else None


@cache
def fastest(level: str) -> machine.Choice:
    """The faster build for this machine of `level` (its own) and the level below: every build codes
    the same bits, but wider vectors are not always quicker (on a Zen 4 EPYC the x86-64-v3 build
    codes at 26 KB/s, the x86-64-v4 one at 15). Raced once per machine and kernel, the answer kept
    beside the builds; a level with nothing below it is its own answer."""
    lower = _lower(level)
    if lower is None:
        return machine.Choice(level, "the CPU's own level")
    cpu = machine.probe()
    stamp = hashlib.sha256(f"{cpu.cpu_model}|{sorted(cpu.cpu_features)}".encode()).hexdigest()[:12]
    record = native_build.cache_folder() / f"charlm_compression_{kernel_id()}_{stamp}.race.json"
    try:
        seconds = json.loads(record.read_text(encoding="utf-8"))
        times = {level: float(seconds[level]), lower: float(seconds[lower])}
    except (OSError, ValueError, KeyError, TypeError):
        try:  # both built first: without a compiler that is the one error said, and no race starts
            if _build_for(level)[0] != level or _build_for(lower)[0] != lower:
                return machine.Choice(level, "the CPU's own level (a build fell back to portable)")
        except KernelError:
            return machine.Choice(level, "the CPU's own level")
        _log.info("timing charlm's compression kernel built for %s and %s (once per machine)", level, lower)
        times = {level: _seconds(level), lower: _seconds(lower)}
        with contextlib.suppress(OSError), native_build.atomic_output(record) as out:
            out.write_text(json.dumps(times), encoding="utf-8")  # a read-only cache: raced next time
    best = min(times, key=lambda t: (times[t], t != level))
    rates = ", ".join(f"{t} {_RACE_BYTES / 1000 / times[t]:.1f} KB/s" for t in (level, lower))
    return machine.Choice(best, f"measured the faster here ({rates})")


def kernel_status() -> tuple[str, str]:
    """For `charlm info`: the level the kernel is built for and its file, or why it cannot be built
    (builds it on the first call, about a second; never raises)."""
    try:
        target = _chosen(None)
    except ValueError as err:  # CHARLM_KERNELS_TARGET names a level this CPU cannot run
        return machine.kernel_target(machine.probe()).value, str(err)
    try:
        built, path = _build_for(target)
    except KernelError as err:
        return target, str(err)
    return built, str(path)


def library(target: str | None = None, *, wide: bool = False) -> ctypes.CDLL:
    """The built kernel, compiled on first use: for `target` (portable, x86-64-v3, x86-64-v4), by
    default the level ``CHARLM_KERNELS_TARGET`` names or else the race's answer (:func:`fastest`),
    falling back to portable where the compiler cannot build it. `wide`: for the pretrained
    network's large products (deepnet.c), where the widest vectors win (on a Zen 5 EPYC the
    x86-64-v4 build steps a 2 x 512 LSTM twice as fast as the v3 one the race picks for the online
    mode): the CPU's own level unless ``CHARLM_KERNELS_TARGET`` names one."""
    return _load(_build_for(_forced or _chosen(target, wide))[1])


@cache
def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    p, i32, i64, f64 = ctypes.c_void_p, ctypes.c_int32, ctypes.c_int64, ctypes.c_double
    lib.cm_new.restype = p
    lib.cm_new.argtypes = [ctypes.POINTER(Config), p, p]
    lib.cm_segment.argtypes = [p, p, p, p, p, i32]
    lib.cm_restart.argtypes = [p]
    lib.cm_free.argtypes = [p]
    lib.cm_set_input.argtypes = [p, p, ctypes.c_size_t]
    lib.cm_finish.restype = i64
    lib.cm_finish.argtypes = [p]
    lib.cm_output.restype = p
    lib.cm_output.argtypes = [p]
    lib.cm_step.restype = i32
    lib.cm_step.argtypes = [p, i32, p, p, p]
    lib.cm_net_new.restype = p
    lib.cm_net_new.argtypes = [i32, i32, i32, i32, i32, f64, f64, f64, f64, i32, p, p, p, p, p, p]
    lib.cm_net_free.argtypes = [p]
    lib.cm_net_serial.argtypes = [p]
    lib.cm_net_forward.restype = p
    lib.cm_net_forward.argtypes = [p]
    lib.cm_net_inputs.restype = p
    lib.cm_net_inputs.argtypes = [p]
    lib.cm_net_advance.argtypes = [p, i32]
    lib.cm_run.restype = lib.cm_run_deep.restype = i32
    lib.cm_run.argtypes = lib.cm_run_deep.argtypes = [p, p, i32, i32]
    lib.cm_deep_new.restype = p
    lib.cm_deep_new.argtypes = [i32, i32, i32, i32, i32, i32, f64, f64, f64, f64, i32, i32, i32, i32, i32, p]
    lib.cm_deep_free.argtypes = [p]
    lib.cm_deep_forward.restype = lib.cm_deep_inputs.restype = lib.cm_deep_dlogits.restype = p
    lib.cm_deep_forward.argtypes = lib.cm_deep_inputs.argtypes = lib.cm_deep_dlogits.argtypes = [p]
    lib.cm_deep_advance.argtypes = [p, i32]
    lib.cm_exp_of.restype = lib.cm_log_of.restype = f64
    lib.cm_exp_of.argtypes = lib.cm_log_of.argtypes = [f64]
    lib.cm_encode_with.restype = i64
    lib.cm_encode_with.argtypes = [p, i32, p, i64, ctypes.POINTER(ctypes.c_void_p)]
    lib.cm_release.argtypes = [p]
    lib.cm_decode_with.restype = i32
    lib.cm_decode_with.argtypes = [p, i32, i64, p, i64, p]
    return lib


def _flat(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int64).to(torch.int32).reshape(-1) if rows else \
        torch.zeros(1, dtype=torch.int32)


def encode_with(symbols: list[int], cums: list[list[int]]) -> bytes:
    """The kernel's coder on its own, one cumulative-count list per symbol, all of one alphabet size:
    the same bytes as :func:`charlm.compression.reference_coder.encode`."""
    lib, n = library(), len(symbols)
    A = len(cums[0]) - 1 if cums else 1
    cum = _flat(cums)
    sym = torch.tensor(symbols, dtype=torch.int32) if symbols else torch.zeros(1, dtype=torch.int32)
    out = ctypes.c_void_p()
    length = lib.cm_encode_with(cum.data_ptr(), A, sym.data_ptr(), n, ctypes.byref(out))
    if length < 0:
        raise ValueError("a symbol outside its frequencies")
    try:
        return ctypes.string_at(out.value, length)
    finally:
        lib.cm_release(out)


def decode_with(data: bytes, cums: list[list[int]]) -> list[int]:
    """The inverse of :func:`encode_with`."""
    lib, n = library(), len(cums)
    A = len(cums[0]) - 1 if cums else 1
    cum = _flat(cums)
    symbols = torch.zeros(max(n, 1), dtype=torch.int32)
    buffer = ctypes.create_string_buffer(bytes(data), max(len(data), 1))
    if lib.cm_decode_with(cum.data_ptr(), A, n, buffer, len(data), symbols.data_ptr()) != 0:
        raise ValueError("the coded stream is damaged")
    return symbols[:n].tolist()


@dataclass(frozen=True)
class Stream:
    """The symbols of one coding run, lane by lane: given to the encoder, filled in by the decoder.

    ``symbols (L, steps)`` int32; ``lengths (L,)`` int32; ``extra (L, steps, 4)`` uint8 the bytes
    an escape carries and ``extra_len (L, steps)`` uint8 how many (pretrained mode).
    """

    symbols: torch.Tensor
    lengths: torch.Tensor
    extra: torch.Tensor
    extra_len: torch.Tensor

    @classmethod
    def empty(cls, lengths: list[int]) -> Stream:
        L, steps = len(lengths), max(lengths, default=0)
        return cls(torch.zeros(L, steps, dtype=torch.int32), torch.tensor(lengths, dtype=torch.int32),
                   torch.zeros(L, steps, 4, dtype=torch.uint8), torch.zeros(L, steps, dtype=torch.uint8))


class Kernel:
    """One coding run, a segment of the input at a time (:meth:`segment`): :meth:`step` codes one
    step of every lane from the network's logits, :meth:`run` many with a network in C, and
    :meth:`finish` ends the segment's coded stream. The model learns on across segments."""

    def __init__(self, config: Config, letter: torch.Tensor, glyph: torch.Tensor, wide: bool = False) -> None:
        self._lib = library(wide=wide)  # wide: a DeepNetwork's (it must share this library)
        # Keep every buffer the C side points into alive as long as the model is.
        self._letter, self._glyph = letter.contiguous(), glyph.contiguous()
        self._config = config
        self._handle = self._lib.cm_new(ctypes.byref(config), self._letter.data_ptr(), self._glyph.data_ptr())
        if not self._handle:
            raise KernelError("not enough memory for the compressor's context tables (try a smaller --rows)")
        self.decoding = False

    def segment(self, stream: Stream, payload: bytes | None = None) -> None:
        """Code `stream` next: encode its symbols, or (given `payload`, the segment's coded bytes)
        decode into it."""
        self.stream = stream  # alive while the C side points into it
        self._lib.cm_segment(self._handle, stream.symbols.data_ptr(), stream.lengths.data_ptr(),
                             stream.extra.data_ptr(), stream.extra_len.data_ptr(), stream.symbols.shape[1])
        self.decoding = payload is not None
        if payload is not None:
            self._payload = ctypes.create_string_buffer(payload, len(payload))
            self._lib.cm_set_input(self._handle, self._payload, len(payload))

    def step(self, logits: torch.Tensor, ids: torch.Tensor, grad: torch.Tensor) -> None:
        """Code the next step: ``logits (L, V)`` float32 in; the network's next inputs ``ids (L,)``
        int64 and the gradient ``grad (L, V)`` float32 out. ValueError if the stream is damaged."""
        self._check(self._lib.cm_step(self._handle, int(self.decoding), logits.data_ptr(), ids.data_ptr(),
                                      grad.data_ptr()))

    def run(self, network, steps: int) -> None:
        """Code `steps` steps with a network in C (:class:`Network`, or the pretrained mode's
        :class:`~charlm.compression.deepnet.DeepNetwork`), learning as it goes."""
        run = getattr(self._lib, network.entry)
        self._check(run(self._handle, network.handle, int(self.decoding), steps))

    def _check(self, status: int) -> None:
        if status == -1:
            raise ValueError("the coded stream is damaged (it points outside every symbol)"
                             if self.decoding else "a symbol outside the alphabet")
        if status == -2:
            raise KernelError("out of memory while coding")

    def finish(self) -> bytes:
        """The encoder's coded bytes of the segment; the next segment's stream starts afresh."""
        n = self._lib.cm_finish(self._handle)
        if n < 0:
            raise KernelError("out of memory while coding")
        coded = ctypes.string_at(self._lib.cm_output(self._handle), n)
        self._lib.cm_restart(self._handle)
        return coded


    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle:
            self._lib.cm_free(handle)
            self._handle = None


class Network:
    """A one-layer LSTM language model run and trained in C (net.c), from a torch model's weights.

    It computes what :class:`charlm.compression.model.OnlineLearner` computes with torch for such
    a model (the same equations, block updates and Adam), in float32 but its own order of
    operations: the two are different programs whose floats differ in the last bits.
    """

    entry = "cm_run"  # kernel.c's loop over steps with this network

    def __init__(self, lm, lanes: int, block: int, lr: float, start: int, clip: float = 1.0,
                 serial: bool = False) -> None:
        c = lm.config
        if c.cell != "lstm" or c.num_layers != 1 or lm.embedding is None or c.bidirectional:
            raise ValueError("the network in C is a one-layer LSTM with an embedding")
        core = lm.core
        weights = [lm.embedding.weight, core.weight_ih_l0, core.weight_hh_l0,
                   core.bias_ih_l0 + core.bias_hh_l0, lm.output.weight, lm.output.bias]
        self._weights = [w.detach().float().contiguous() for w in weights]
        self._lib = library()
        self.handle = self._lib.cm_net_new(lanes, c.vocab_size, lm.embedding.weight.shape[1], c.num_hiddens,
                                           block, lr, 0.9, 0.999, clip, start,
                                           *(w.data_ptr() for w in self._weights))
        if not self.handle:
            raise KernelError("not enough memory for the network")
        if serial:  # for the tests: no learner thread, the same steps (net.c)
            self._lib.cm_net_serial(self.handle)
        self._shape = (lanes, c.vocab_size)

    def forward(self, next_ids: torch.Tensor) -> torch.Tensor:
        """One step without the kernel (for the tests): the logits ``(L, V)`` of the next symbols
        of every lane; then `next_ids` ``(L,)`` become the inputs of the step after."""
        L, V = self._shape
        address = self._lib.cm_net_forward(self.handle)
        logits = torch.frombuffer((ctypes.c_float * (L * V)).from_address(address), dtype=torch.float32)
        logits = logits.clone().view(L, V)
        slot = (ctypes.c_int64 * L).from_address(self._lib.cm_net_inputs(self.handle))
        slot[:] = [int(i) for i in next_ids]
        self._lib.cm_net_advance(self.handle, 1)
        return logits

    @staticmethod
    def fits(lm) -> bool:
        c = lm.config
        return c.cell == "lstm" and c.num_layers == 1 and lm.embedding is not None and not c.bidirectional

    def __del__(self) -> None:
        handle = getattr(self, "handle", None)
        if handle:
            self._lib.cm_net_free(handle)
            self.handle = None
