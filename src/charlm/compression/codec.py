"""compress / decompress: a language model's probabilities driving the arithmetic coder, losslessly.

The input is cut into `lanes` contiguous parts coded in lockstep: at step t the model predicts the
t-th symbol of every lane at once (one batched step instead of `lanes` single ones), and all lanes
share one model and one set of context counts. The coder's stream holds the symbols step by step,
lane by lane. Two modes:

- **online**: the alphabet is the 256 byte values; a byte-level LSTM starts from a seeded
  initialisation and learns while it codes (:mod:`charlm.compression.model`). Any file works.
- **pretrained**: the alphabet is a character run's vocabulary plus two escapes; a character
  outside the vocabulary is sent as ESC_CHAR and its UTF-8 bytes, a byte that is not UTF-8 as
  ESC_BYTE and the byte, each byte under a fixed uniform model. The run's model keeps learning.

What makes the decoder's floats equal the encoder's: the same code path and shapes on both sides
(the decoder runs the same batched steps and the same block updates), float32 everywhere, a
pinned thread count, and a header that records what must match (:mod:`.container`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from ..coder import MAX_TOTAL, Decoder, Encoder
from ..models import RNNLM
from .container import ArchiveError, Header, check_same, crc32, pack, unpack
from .contexts import ContextCounts, MatchModel
from .model import Mixture, OnlineLearner

Progress = Callable[[int, int], None]  # (symbols done, symbols in all)
_UNIFORM_BYTE = list(range(257))  # the fixed byte model of the escapes: every byte 1/256


@dataclass(frozen=True)
class CompressSettings:
    """What shapes the probabilities. Network fields apply to the online mode (a pretrained run
    brings its own network); the rest to both. Defaults: docs/compression.md says what each buys."""

    lanes: int = 8  # parts of the input coded side by side
    block: int = 16  # steps between two updates (T)
    lr: float = 3e-3  # Adam's learning rate of the network while coding; 0 = no learning
    mix_lr: float = 0.003  # Adam's learning rate of the mixing weights
    orders: tuple[int, ...] = (1, 2, 3, 4, 5, 6)  # context orders mixed in; () = the network alone
    match: int = 8  # the match expert's context length; 0 = off
    rows: int = 1 << 16  # hashed table rows per order
    total: int = 1 << 22  # the coder's frequency total (quantisation of probabilities)
    threads: int = 1  # torch threads while coding: results depend on the split of sums
    cell: str = "lstm"
    hidden: int = 256
    layers: int = 1
    embedding: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "orders", tuple(self.orders))
        for name in ("lanes", "block", "rows", "threads", "hidden", "layers", "embedding"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("lr", "mix_lr"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        if not isinstance(self.match, int) or not 0 <= self.match <= 32:
            raise ValueError(f"match must be an integer in 0..32, got {self.match!r}")
        if any(not isinstance(k, int) or not 1 <= k <= 8 for k in self.orders) or \
                len(set(self.orders)) != len(self.orders):
            raise ValueError(f"orders must be distinct integers in 1..8, got {self.orders!r}")
        if not 512 < self.total <= MAX_TOTAL:
            raise ValueError(f"total must be in (512, {MAX_TOTAL}], got {self.total!r}")
        if self.cell not in ("rnn", "gru", "lstm"):
            raise ValueError(f"cell must be rnn, gru or lstm, got {self.cell!r}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "orders": list(self.orders)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompressSettings:
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except (TypeError, ValueError) as err:
            raise ArchiveError(f"the archive's settings are not valid here ({err})") from None


# What a decoder must share with the encoder besides the settings themselves.
_MATCH = ("torch", "cpu", "symbols_format")


def _platform() -> dict[str, Any]:
    return {"torch": torch.__version__.split("+")[0], "cpu": torch.backends.cpu.get_cpu_capability(),
            "symbols_format": 1}


@contextmanager
def _pinned(threads: int) -> Iterator[None]:
    """Fixed thread count and grad mode while coding, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.enable_grad():
            yield
    finally:
        torch.set_num_threads(before)


# ---- the symbols of each mode ------------------------------------------------------------------


@dataclass
class Alphabet:
    """Symbol ids of the coded stream, and how they feed the network."""

    size: int  # A
    net_input: Callable[[torch.Tensor], torch.Tensor]  # symbol ids -> the network's input ids
    start: int  # the network's input before a lane's first symbol
    escapes: dict[int, str] = field(default_factory=dict)  # symbol id -> "char" | "byte"


def _byte_alphabet() -> Alphabet:
    return Alphabet(256, lambda ids: ids, start=0)


def _char_alphabet(vocab) -> tuple[Alphabet, dict[str, int]]:
    V = len(vocab)
    table = {tok: i for i, tok in enumerate(vocab.idx_to_token) if len(tok) == 1}
    unk = vocab.unk

    def net_input(ids: torch.Tensor) -> torch.Tensor:
        return torch.where(ids >= V, torch.full_like(ids, unk), ids)

    start = table.get("\n", table.get(" ", unk))
    return Alphabet(V + 2, net_input, start, {V: "char", V + 1: "byte"}), table


def _char_symbols(text: str, table: dict[str, int], V: int) -> tuple[list[int], list[bytes]]:
    """Symbol ids of a text, and for each symbol the bytes its escape carries (b"" for none)."""
    ids, extra = [], []
    for ch in text:
        idx = table.get(ch)
        if idx is not None:
            ids.append(idx)
            extra.append(b"")
        elif "\udc80" <= ch <= "\udcff":  # a byte that is not UTF-8 (surrogateescape)
            ids.append(V + 1)
            extra.append(bytes([ord(ch) - 0xDC00]))
        else:
            ids.append(V)
            extra.append(ch.encode("utf-8"))
    return ids, extra


def _utf8_length(lead: int) -> int:
    return 1 if lead < 0x80 else 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4


# ---- the lockstep loop ---------------------------------------------------------------------------


def lane_spans(n: int, lanes: int) -> list[tuple[int, int]]:
    """(start, length) of each lane: contiguous parts whose lengths differ by at most one."""
    per, rest = divmod(n, lanes)
    starts = [i * per + min(i, rest) for i in range(lanes)]
    return [(s, per + (i < rest)) for i, s in enumerate(starts)]


class _Predictor:
    """Frequencies for the next step of every lane, then learning from the symbols coded."""

    def __init__(self, mixture: Mixture, alphabet: Alphabet, settings: CompressSettings, steps: int) -> None:
        L = settings.lanes
        self.alphabet, self.total, self.steps = alphabet, settings.total, steps
        # Tables no larger than the input needs (a short text has few contexts): 6 orders of 2^16
        # rows of 256 counts are 400 MB. Both sides know the input's length, so both size alike.
        fit = 1 << max(8, (steps * L - 1).bit_length() + 2)
        self.counts = ContextCounts(settings.orders, alphabet.size, L, min(settings.rows, fit))
        self.matches = None if not settings.match else \
            MatchModel(settings.match, alphabet.size, L, steps, rows=min(1 << 20, fit))
        self._predicted = None
        self.learner = OnlineLearner(mixture, L, settings.block, settings.lr, settings.mix_lr)
        self.previous = torch.full((L,), alphabet.start, dtype=torch.long)
        self.step = 0

    def cumulative(self) -> list[list[int]]:
        """Each lane's cumulative counts ``[0, c0, c0 + c1, ...]`` for its next symbol."""
        feats, buckets = self.counts.features()
        if self.matches is not None:
            onehot, match_buckets, self._predicted = self.matches.feature()
            feats, buckets = torch.cat([feats, onehot], 1), torch.cat([buckets, match_buckets], 1)
        logits = self.learner.logits(self.alphabet.net_input(self.previous), feats, buckets)
        probs = torch.softmax(logits.float(), dim=-1).double()
        A = self.alphabet.size
        freqs = torch.floor(probs * (self.total - A)).long() + 1  # every symbol >= 1, sum <= total
        return torch.nn.functional.pad(freqs.cumsum(-1), (1, 0)).tolist()

    def advance(self, symbols: torch.Tensor) -> None:
        self.step += 1
        self.counts.update(symbols)
        if self.matches is not None:
            self.matches.update(symbols, self._predicted)
        self.learner.learn(symbols, more_to_come=self.step < self.steps)
        self.previous = symbols


def _encode(predictor: _Predictor, lanes: list[list[int]], extras: list[list[bytes]] | None,
            progress: Progress | None) -> bytes:
    encoder = Encoder()
    steps, done, n = len(lanes[0]) if lanes else 0, 0, sum(map(len, lanes))
    escapes = predictor.alphabet.escapes
    last = [lane[0] if lane else 0 for lane in lanes]
    for t in range(steps):
        cums = predictor.cumulative()
        symbols = []
        for i, lane in enumerate(lanes):
            if t < len(lane):
                s = last[i] = lane[t]
                encoder.encode_symbol(s, cums[i])
                if s in escapes:
                    for byte in extras[i][t]:
                        encoder.encode_symbol(byte, _UNIFORM_BYTE)
                done += 1
            symbols.append(last[i])  # a finished lane repeats its last symbol (never coded)
        predictor.advance(torch.tensor(symbols))
        if progress is not None:
            progress(done, n)
    return encoder.finish()


def _decode(predictor: _Predictor, payload: bytes, lengths: list[int],
            progress: Progress | None) -> tuple[list[list[int]], list[list[bytes]]]:
    decoder = Decoder(payload)
    lanes: list[list[int]] = [[] for _ in lengths]
    extras: list[list[bytes]] = [[] for _ in lengths]
    escapes = predictor.alphabet.escapes
    steps, done, n = max(lengths, default=0), 0, sum(lengths)
    last = [0] * len(lengths)
    for t in range(steps):
        cums = predictor.cumulative()
        for i, length in enumerate(lengths):
            if t < length:
                s = last[i] = decoder.decode_symbol(cums[i])
                lanes[i].append(s)
                extra = b""
                if s in escapes:
                    first = decoder.decode_symbol(_UNIFORM_BYTE)
                    count = 1 if escapes[s] == "byte" else _utf8_length(first)
                    extra = bytes([first] + [decoder.decode_symbol(_UNIFORM_BYTE) for _ in range(count - 1)])
                extras[i].append(extra)
                done += 1
        predictor.advance(torch.tensor(last))
        if progress is not None:
            progress(done, n)
    return lanes, extras


# ---- the two modes -------------------------------------------------------------------------------


def _experts(settings: CompressSettings) -> int:
    return len(settings.orders) + (settings.match > 0)


def _online_mixture(settings: CompressSettings) -> Mixture:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        lm = RNNLM(256, settings.hidden, cell=settings.cell, impl="builtin", num_layers=settings.layers,
                   embedding=settings.embedding)
        return Mixture(lm, _experts(settings)).eval()


def model_digest(run_dir: Path) -> str:
    """SHA-256 over the files that define a run's model: the decoder must use the very same."""
    digest = hashlib.sha256()
    for name in ("config.json", "vocab.json", "model.safetensors"):
        path = run_dir / name
        if not path.is_file():
            raise ValueError(f"{run_dir}: not a trained run (no {name})")
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _pretrained(run_dir: Path, settings: CompressSettings) -> tuple[Mixture, Alphabet, dict[str, int], Any]:
    from ..checkpoint import load

    run = load(run_dir)
    if run.token != "char":
        raise ValueError(f"{run_dir}: compression needs a character-level run, this one is {run.token!r}")
    if not run.model.can_generate:
        raise ValueError(f"{run_dir}: a bidirectional model cannot predict text left to right")
    alphabet, table = _char_alphabet(run.vocab)
    mixture = Mixture(run.model.float(), _experts(settings), extra=2).eval()
    return mixture, alphabet, table, run.vocab


def compress(data: bytes, *, model: str | Path | None = None, settings: CompressSettings | None = None,
             progress: Progress | None = None) -> bytes:
    """A charlm archive of `data`: with `model` (a character run's folder) in the pretrained mode,
    without it in the online mode. :func:`decompress` gives `data` back, byte for byte."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"compress takes bytes, got {type(data).__name__}")
    data = bytes(data)
    settings = settings or CompressSettings()
    info: dict[str, Any] = {"settings": settings.to_dict(), **_platform()}
    with _pinned(settings.threads):
        if model is None:
            mode, alphabet = "online", _byte_alphabet()
            lanes = [list(data[s:s + n]) for s, n in lane_spans(len(data), settings.lanes)]
            extras = None
            mixture = _online_mixture(settings)
        else:
            mode = "pretrained"
            run_dir = Path(model)
            mixture, alphabet, table, vocab = _pretrained(run_dir, settings)
            info["model_sha256"] = model_digest(run_dir)
            ids, extra = _char_symbols(data.decode("utf-8", errors="surrogateescape"), table, len(vocab))
            spans = lane_spans(len(ids), settings.lanes)
            lanes = [ids[s:s + n] for s, n in spans]
            extras = [extra[s:s + n] for s, n in spans]
            info["symbols"] = len(ids)
        predictor = _Predictor(mixture, alphabet, settings, max(map(len, lanes), default=0))
        payload = _encode(predictor, lanes, extras, progress)
    if len(payload) >= len(data) and data:  # random or already compressed bytes: never expand them
        mode, payload = "stored", data
    return pack(Header(mode, len(data), crc32(data), info), payload)


def decompress(archive: bytes, *, model: str | Path | None = None, progress: Progress | None = None) -> bytes:
    """The original bytes of a charlm archive; ArchiveError if it is damaged or made otherwise."""
    header, payload = unpack(bytes(archive))
    info = header.settings
    check_same(info, _platform(), _MATCH)
    if header.mode == "stored":
        return _checked(payload, header)
    settings = CompressSettings.from_dict(info.get("settings", {}))
    with _pinned(settings.threads):
        if header.mode == "online":
            if model is not None:
                raise ArchiveError("this archive was made in the online mode: it needs no --model")
            mixture, alphabet = _online_mixture(settings), _byte_alphabet()
            lengths = [n for _, n in lane_spans(header.length, settings.lanes)]
        else:
            if model is None:
                raise ArchiveError("this archive was made with a trained model: give it with --model RUN")
            run_dir = Path(model)
            if model_digest(run_dir) != info.get("model_sha256"):
                raise ArchiveError(f"{run_dir} is not the model this archive was made with "
                                   f"(SHA-256 of its files differs)")
            mixture, alphabet, table, vocab = _pretrained(run_dir, settings)
            symbols = info.get("symbols")
            if not isinstance(symbols, int) or symbols < 0:
                raise ArchiveError("the archive's header is damaged (no symbol count)")
            lengths = [n for _, n in lane_spans(symbols, settings.lanes)]
        predictor = _Predictor(mixture, alphabet, settings, max(lengths, default=0))
        lanes, extras = _decode(predictor, payload, lengths, progress)
    if header.mode == "online":
        data = bytes(b for lane in lanes for b in lane)
    else:
        tokens = vocab.idx_to_token
        pieces = []
        for lane, extra in zip(lanes, extras):
            for s, e in zip(lane, extra):
                pieces.append(e if s >= len(tokens) else tokens[s].encode("utf-8"))
        data = b"".join(pieces)
    return _checked(data, header)


def _checked(data: bytes, header: Header) -> bytes:
    if len(data) != header.length or crc32(data) != header.crc:
        raise ArchiveError("decoding did not reproduce the original (CRC-32 mismatch): the archive is "
                           "damaged, or this machine computes the model's floats differently")
    return data
