"""The C side of the compressor, loaded with ctypes: the signatures of kernel.c's functions, and the
wrappers that run one coding run (a :class:`Kernel`) and the online network (:class:`Network`)
around torch tensors that both sides share without copies. kernel.c says what it does and why it is
C; :mod:`charlm.compression.build` compiles it, and the caller says which build to load.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from . import build
from .build import KernelError

MAX_ORDERS = 8  # kernel.c's MAX_ORDERS


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


def load(target: str) -> ctypes.CDLL:
    """The kernel built for `target` (portable, x86-64-v3, x86-64-v4), compiled on first use; the
    portable build where the compiler cannot build that level. Which level to ask for is the
    caller's choice (:func:`charlm.compression.race.library` races them)."""
    return _load(build.build_for(target)[1])


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

    def __init__(self, config: Config, letter: torch.Tensor, glyph: torch.Tensor, lib: ctypes.CDLL) -> None:
        self._lib = lib  # a network in C that it runs must be on the same library
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

    def __init__(self, lm, lanes: int, block: int, lr: float, start: int, *, lib: ctypes.CDLL,
                 clip: float = 1.0, serial: bool = False) -> None:
        c = lm.config
        if c.cell != "lstm" or c.num_layers != 1 or lm.embedding is None or c.bidirectional:
            raise ValueError("the network in C is a one-layer LSTM with an embedding")
        core = lm.core
        weights = [lm.embedding.weight, core.weight_ih_l0, core.weight_hh_l0,
                   core.bias_ih_l0 + core.bias_hh_l0, lm.output.weight, lm.output.bias]
        self._weights = [w.detach().float().contiguous() for w in weights]
        self._lib = lib
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
