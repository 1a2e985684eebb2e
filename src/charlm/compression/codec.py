"""A language model's probabilities driving the arithmetic coder, losslessly: the settings, the two
modes' symbols, and a :class:`Coder` that codes the input's segments one after another (the
segments themselves, and the archive: :mod:`.streaming`).

Each segment is cut into `lanes` contiguous parts coded in lockstep: at step t the model predicts
the t-th symbol of every lane at once (one batched step instead of `lanes` single ones), and all
lanes share one model and one set of context counts. The coder's stream holds the symbols step by
step, lane by lane. Two modes:

- **online**: the alphabet is the 256 byte values; a byte-level LSTM starts from charlm's byte
  model of English (``--start english``, the default) or from a seeded initialisation (``--start
  seed``), and learns while it codes (:mod:`charlm.compression.model`). Any file works.
- **pretrained**: the alphabet is a character run's vocabulary plus two escapes; a character
  outside the vocabulary is sent as ESC_CHAR and its UTF-8 bytes, a byte that is not UTF-8 as
  ESC_BYTE and the byte, each byte under a fixed uniform model. The run's model keeps learning.

What makes the decoder's floats equal the encoder's: the same code path and shapes on both sides
(the decoder runs the same batched steps and the same block updates), float32 everywhere, a
pinned thread count, and a header that records what must match (:mod:`.container`).
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from ..fields import at_least, check_types, flag, fraction, from_flat, setting, to_flat
from ..models import RNNLM, ModelConfig
from .build import arithmetic, arithmetic_of
from .container import ArchiveError
from .deepnet import LEARN, DeepNetwork
from .kernel import MAX_ORDERS, Config, Kernel, Network, Stream
from .model import OnlineLearner
from .reference_coder import MAX_TOTAL

# The online network's settings a user may change (the others are fixed: bytes in, torch.nn layers),
# and the names the archive header gives two of them.
ONLINE_MODEL_FLAGS = ("cell", "num_hiddens", "num_layers", "embedding")
_ARCHIVE_KEYS = {"num_hiddens": "hidden", "num_layers": "layers"}
TABLE_BYTES = 1 << 29  # the context counts' memory at most (16-bit counts), unless --rows is lower


def _orders(text: str) -> tuple[int, ...]:
    """``--orders 1,2,3`` -> (1, 2, 3); ``none`` or nothing -> ()."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        return tuple(int(k) for k in text.split(","))
    except ValueError:
        raise ValueError(f"--orders: expected orders like 1,2,3,4,5,6 or none, got {text!r}") from None


# The byte model the online network starts from by default: its own shape, trained on the UTF-8 bytes
# of pg-authors's training authors (training-runs/compression-prior/train.py), in half precision.
# An archive names it by this digest (:func:`start_digest`): a later release with other weights
# refuses the archive rather than decode it wrong.
PRIOR_FILE = "compression/english-bytes.safetensors"
STARTS = ("english", "seed")
# Started from that model, the network keeps what it knows: Adam at 7e-5 rather than a fresh
# network's 2.5e-3. On The Time Machine 2.0790 bits per byte seeded, 2.0415 from English at 2.5e-3,
# 2.0110 at 1.5e-3, 1.9581 at 5e-4, 1.9321 at 1.5e-4, 1.9262 at 7e-5, 1.9234 at 2e-5; Tiny
# Shakespeare 1.8705 at 1.5e-4, 1.8689 at 7e-5 (docs/compression.md, "Starting from English").
ENGLISH_LR = 7e-5
# The default start reads the first segment: English where at least this share of its bytes are
# printable ASCII or whitespace. Chinese lyrics code 1.1 % larger from English than seeded.
ENGLISH_BYTES_MIN = 0.9
_ASCII_TEXT = bytes([9, 10, 13, *range(32, 127)])


def _online_model() -> ModelConfig:
    # Small enough to learn from the first kilobytes and to step at tens of KB/s in C: an LSTM of
    # 96 units on 32-wide byte embeddings (docs/compression.md has the sweep it came from).
    return ModelConfig(vocab_size=256, num_hiddens=96, cell="lstm", impl="builtin", embedding=32)


# The settings whose default depends on the mode, in one place: `resolved` fills them in, the flags'
# help shows them. Online: one lane codes best, a network learning from scratch takes a larger step,
# and net.c's learning has a thread of its own anyway. With --run: a network in torch needs lanes to
# go fast, a trained network adapts gently, and a trained LSTM in C splits its products between two
# threads (1.6x on a 2 x 512, the very same bits).
MODE_DEFAULTS: dict[str, dict[str, int | float]] = {"lanes": {"online": 1, "pretrained": 8},
                                              "lr": {"online": 2.5e-3, "pretrained": 3e-4},
                                              "threads": {"online": 1, "pretrained": 2}}
UNSET: dict[str, Any] = {"lanes": 0, "lr": None, "threads": None}  # what asks for the mode's default


def _by_mode(name: str) -> str:
    """The help's words for a per-mode default: ``"1 online, 8 with --run"``."""
    by_mode = MODE_DEFAULTS[name]
    return f"{by_mode['online']:g} online, {by_mode['pretrained']:g} with --run"


@dataclass(frozen=True)
class CompressSettings:
    """What shapes the probabilities. The network (`model`) applies to the online mode (a pretrained
    run brings its own); the rest to both. Defaults: docs/compression.md says what each buys."""

    lanes: int = setting(0, "parts of the input coded side by side (faster, larger); 0 = the mode's: "
                         + _by_mode("lanes"))
    block: int = setting(12, "symbols per lane between two updates of the network (T)")
    lr: float | None = setting(None, "Adam's learning rate of the network while coding; 0 = the network "
                               "does not learn", shown=_by_mode("lr"))
    mix_lr: float = setting(0.001, "Adam's learning rate of the weights mixing the network and the "
                            "context experts (per symbol)")
    orders: tuple[int, ...] = setting((1, 2, 3, 4, 5, 6), "context orders mixed with the network, "
                                      "comma-separated; none = the network alone", shown="1,2,3,4,5,6",
                                      parse=_orders, metavar="K,K")
    match: int = setting(8, "context length of the match expert (follows earlier text that repeats); "
                         "0 = off")
    window: int = setting(1 << 22, "symbols the match expert looks back at most, a power of two (4 bytes "
                          "of memory each): a repeat from farther back is not found")
    words: int = setting(2, "word experts: 0, 1 (the word so far) or 2 (and the word before it)")
    bit_models: int = setting(21, "bitwise context models of the last stage, which codes each symbol as its "
                              "bits (0..21); 0 = symbols coded whole, under the symbol mixture")
    limit: int = setting(1023, "a context's counts halve when one reaches this (recent text weighs more)")
    rows: int = setting(1 << 16, "hashed rows per context expert (a power of two)")
    total: int = setting(1 << 22, "frequency total of the arithmetic coder (quantisation of probabilities)")
    threads: int | None = setting(None, "threads while coding: torch's (results depend on the split of "
                                  "sums, so the decoder uses the same), or 1-2 for a pretrained LSTM in C "
                                  "(the same bits with either)", shown=_by_mode("threads"))
    learn: str = setting("all", "pretrained mode: what of the network learns while coding: all, top (the top "
                         "layer and the output layer) or output (the output layer alone)")
    seed: int = setting(0, "online mode: seed of the network's initial weights (--start seed)")
    start: str = setting("", "online mode: the network's first weights: english (charlm's byte model of "
                         "English, learning gently: smaller archives of English) or seed (torch's "
                         "initialisation with --seed, learning fast); default: english for the default "
                         "network on a text whose first MB is mostly ASCII, else seed",
                         shown="english for English")
    model: ModelConfig = setting(default_factory=_online_model, help="online mode: the byte-level network",
                                 flags=ONLINE_MODEL_FLAGS)

    def __post_init__(self) -> None:
        if isinstance(self.orders, list):  # as JSON gives it back from a header
            object.__setattr__(self, "orders", tuple(self.orders))
        check_types(self)
        at_least("lanes", self.lanes, 0)
        for name in ("block", "rows"):
            at_least(name, getattr(self, name), 1)
        if self.threads is not None:
            at_least("threads", self.threads, 1)
        at_least("seed", self.seed, 0)
        if self.lr is not None:
            fraction("lr", self.lr)
        fraction("mix_lr", self.mix_lr)
        if self.rows & (self.rows - 1):
            raise ValueError(f"--rows must be a power of two, got {self.rows!r}")
        if self.window & (self.window - 1) or not 1 << 8 <= self.window <= 1 << 28:
            raise ValueError(f"--window must be a power of two in 2^8..2^28, got {self.window!r}")
        if not isinstance(self.words, int) or not 0 <= self.words <= 2:
            raise ValueError(f"--words must be 0, 1 or 2, got {self.words!r}")
        if not isinstance(self.limit, int) or not 2 <= self.limit <= 65535:
            raise ValueError(f"--limit must be an integer in 2..65535, got {self.limit!r}")
        if not isinstance(self.bit_models, int) or not 0 <= self.bit_models <= BIT_MODELS:
            raise ValueError(f"--bit-models must be an integer in 0..{BIT_MODELS}, got {self.bit_models!r}")
        if not isinstance(self.match, int) or not 0 <= self.match <= 32:
            raise ValueError(f"--match must be an integer in 0..32, got {self.match!r}")
        if any(not isinstance(k, int) or not 1 <= k <= 8 for k in self.orders) or \
                len(set(self.orders)) != len(self.orders):
            raise ValueError(f"--orders must be distinct integers in 1..8, got {self.orders!r}")
        if not isinstance(self.total, int) or not 512 < self.total <= MAX_TOTAL:
            raise ValueError(f"--total must be in (512, {MAX_TOTAL}], got {self.total!r}")
        if self.start not in ("", *STARTS):
            raise ValueError(f"--start must be one of {', '.join(STARTS)}, got {self.start!r}")
        if self.learn not in LEARN:
            raise ValueError(f"--learn must be one of {', '.join(LEARN)}, got {self.learn!r}")
        if self.model.vocab_size != 256 or self.model.impl != "builtin":
            raise ValueError("the online network reads bytes: vocab_size 256, impl builtin")

    @classmethod
    def of(cls, **settings: Any) -> CompressSettings:
        """From flat settings, named as the flags are: ``CompressSettings.of(num_hiddens=32, lanes=2)``."""
        return from_flat(cls, settings)

    def to_dict(self) -> dict[str, Any]:
        """The settings as the archive header keeps them: flat, with the network's fields under the
        names archives have always used, so archives made before this version decode alike."""
        own = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}
        net = {_ARCHIVE_KEYS.get(k, k): getattr(self.model, k) for k in ONLINE_MODEL_FLAGS}
        return {**own, **net, "orders": list(self.orders)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CompressSettings:
        names = {f.name for f in fields(cls)}
        keys = {k: _ARCHIVE_KEYS.get(k, k) for k in ONLINE_MODEL_FLAGS}
        net = {k: data[key] for k, key in keys.items() if key in data}
        data = {"start": "seed", **data}  # archives before --start began from the seeded weights
        try:
            return cls(**{k: v for k, v in data.items() if k in names and k != "model"},
                       model=_online_model().replace(**net))
        except (TypeError, ValueError) as err:
            raise ArchiveError(f"the archive's settings are not valid here ({err})") from None


# What a decoder must share with the encoder besides the settings themselves.
PLATFORM_KEYS = ("torch", "cpu", "kernel")


def platform() -> dict[str, Any]:
    """What the archive records of the machine that coded it, and the decoder must match
    (:data:`PLATFORM_KEYS`): torch's version, its CPU capability, what the kernel computes."""
    return {"torch": torch.__version__.split("+")[0], "cpu": torch.backends.cpu.get_cpu_capability(),
            "kernel": arithmetic()}


def recorded_platform(info: dict[str, Any]) -> dict[str, Any]:
    """An archive's platform as :func:`platform` says it: an earlier archive's kernel digest read as
    the arithmetic it is known to equal."""
    return {**info, "kernel": arithmetic_of(info.get("kernel"))}


@contextmanager
def pinned(threads: int) -> Iterator[None]:
    """Fixed thread count and grad mode while coding, restored after."""
    before, collecting = torch.get_num_threads(), gc.isenabled()
    torch.set_num_threads(threads)
    gc.disable()  # the autograd graphs of the block updates are freed by reference counting anyway
    try:
        with torch.enable_grad():
            yield
    finally:
        torch.set_num_threads(before)
        if collecting:
            gc.enable()


# ---- the symbols of each mode ------------------------------------------------------------------


def _letter(token: str) -> int:
    """A symbol's case-folded code inside words, for the word experts; 0 for one that ends a word."""
    if len(token) != 1:
        return 0
    if token.isalpha() or ord(token) >= 0x80:  # the bytes of a UTF-8 character are part of its word
        return ord(token.lower()) % 255 + 1
    return 39 if token == "'" else 0  # inside a word: don't, it's


@dataclass
class Alphabet:
    """Symbol ids of the coded stream, and how they feed the network and the kernel."""

    size: int  # A
    vocab: int  # V: the network's logits cover symbols [0, V); the rest are escapes
    start: int  # the network's input before a lane's first symbol
    unk: int  # the network's input for an escape
    letter: torch.Tensor  # (A,) uint8: see _letter
    glyph: torch.Tensor  # (A,) uint8: see _glyph
    escapes: dict[str, int] = field(default_factory=dict)  # "char" | "byte" -> symbol id


def _glyph(token: str) -> int:
    """A symbol's byte for the bitwise stage's text contexts (new lines, columns, case, quotes): an
    ASCII character's own code, a stand-in above 127 for any other, 0 for a token of several."""
    if len(token) != 1:
        return 0
    return ord(token) if ord(token) < 128 else 128 + ord(token) % 127


def _letters(tokens: list[str], size: int) -> torch.Tensor:
    return torch.tensor([_letter(tok) for tok in tokens] + [0] * (size - len(tokens)), dtype=torch.uint8)


def _glyphs(tokens: list[str], size: int) -> torch.Tensor:
    return torch.tensor([_glyph(tok) for tok in tokens] + [0] * (size - len(tokens)), dtype=torch.uint8)


def _byte_alphabet() -> Alphabet:
    return Alphabet(256, 256, start=ord("\n"), unk=0, letter=_letters([chr(b) for b in range(256)], 256),
                    glyph=torch.arange(256, dtype=torch.int32).to(torch.uint8))


def _char_alphabet(vocab) -> tuple[Alphabet, dict[str, int]]:
    V = len(vocab)
    table = {tok: i for i, tok in enumerate(vocab.idx_to_token) if len(tok) == 1}
    unk = vocab.unk
    start = table.get("\n", table.get(" ", unk))
    letter = _letters(list(vocab.idx_to_token), V + 2)
    glyph = _glyphs(list(vocab.idx_to_token), V + 2)
    return Alphabet(V + 2, V, start, unk, letter, glyph, {"char": V, "byte": V + 1}), table


def _char_stream(text: str, table: dict[str, int], V: int, lanes: int) -> Stream:
    """The symbols of a text in the pretrained mode, with the bytes each escape carries."""
    ids, extras = [], {}
    for ch in text:
        idx = table.get(ch)
        if idx is not None:
            ids.append(idx)
        elif "\udc80" <= ch <= "\udcff":  # a byte that is not UTF-8 (surrogateescape)
            extras[len(ids)] = bytes([ord(ch) - 0xDC00])
            ids.append(V + 1)
        else:
            extras[len(ids)] = ch.encode("utf-8")
            ids.append(V)
    spans = lane_spans(len(ids), lanes)
    stream = Stream.empty([n for _, n in spans])
    for lane, (s, n) in enumerate(spans):
        stream.symbols[lane, :n] = torch.tensor(ids[s:s + n], dtype=torch.int32)
    for i, data in extras.items():
        lane, t = _position(spans, i)
        stream.extra[lane, t, :len(data)] = torch.tensor(list(data), dtype=torch.uint8)
        stream.extra_len[lane, t] = len(data)
    return stream


def _position(spans: list[tuple[int, int]], i: int) -> tuple[int, int]:
    for lane, (s, n) in enumerate(spans):
        if s <= i < s + n:
            return lane, i - s
    raise IndexError(i)


def _byte_stream(data: bytes, lanes: int) -> Stream:
    spans = lane_spans(len(data), lanes)
    stream = Stream.empty([n for _, n in spans])
    flat = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)
    for lane, (s, n) in enumerate(spans):
        stream.symbols[lane, :n] = flat[s:s + n].to(torch.int32)
    return stream


# ---- the lockstep loop ---------------------------------------------------------------------------


def lane_spans(n: int, lanes: int) -> list[tuple[int, int]]:
    """(start, length) of each lane: contiguous parts whose lengths differ by at most one."""
    per, rest = divmod(n, lanes)
    starts = [i * per + min(i, rest) for i in range(lanes)]
    return [(s, per + (i < rest)) for i, s in enumerate(starts)]


# The mixer's fixed settings (docs/compression.md, "How it works"). No flag sets them and archives do
# not record them: a decoder takes them from this file, so changing one changes the format (raise
# container.FORMAT_VERSION), or earlier archives decode to garbage that their CRC check refuses.
# Bits per byte quoted: The Time Machine in docs/compression.md's "What each part buys".
PRIOR = 0.05  # added to every count: a symbol a context never saw keeps some probability there.
#   The first version's value (ab976dd), kept since; no measurement recorded.
MIX_INIT = 0.15  # the starting weight of each count expert's log-probabilities and of the match expert
#   (the seen and last-seen weights start at 0, the network's at 1: its logits as they are). 0.3 until
#   the online mode moved to one lane, then halved (4a53896): tuned by hand on the shared corpora, no
#   measurement recorded.
EXTRA_LOGIT = -8.0  # the escapes' starting logit (pretrained mode): the network never saw them, so they
#   start rare (e^-8 of a symbol at logit 0) and learn their own bias. Since the first version (ab976dd).
ADAM_BETAS = (0.9, 0.999)  # the mixing weights' Adam moment decays: Adam's usual values, not tuned
FEATURES = 3  # the count experts' extra inputs, a bit each: 1 seen in this context, 2 seen last in it.
#   2.191 with both, 2.194 without seen-last, 2.199 without either.
KINDS = 3  # rows followed by exactly one symbol, by exactly two and by more each have mixing weights of
#   their own (2: only rows of one symbol do): 2.191, against 2.192 with 2.
APM = 1  # the adaptive probability map on the likeliest symbol, by the previous symbol (2: by the two
#   before, hashed; 0: off): 2.191, against 2.196 without it.
APM_RATE = 0.02  # how fast the map's knots follow what came,
APM_WEIGHT = 0.5  # and its share of the final probability (an even blend with the mixer's). Both set
#   with the map (d64dc7e) and tuned by hand on the shared corpora; no measurement recorded.
BIT_MODELS = 21  # the bitwise stage's context models at most (bits.c lists them): Time Machine 2.079 with all
#   21, 2.081 without the two whitespace-folded orders, 2.100 with the first 12 (no sparse, indirect,
#   nesting contexts), 2.139 with the first 11 (no column context either); 0 turns the stage off.
BIT_LIMIT = 255  # a bitwise slot's count stops here: 2.0970 at 255, 2.0972 at 60, 2.0970 at 127
BIT_LR = 0.0015  # the bitwise mixers' learning rate (eight times higher over the first bits):
#   2.0810 at 1.5e-3, 2.0815 at 2e-3, 2.0819 at 1e-3, 2.0841 at 3e-3
BIT_BUCKETS_LOG2 = 18  # the bitwise tables hold 2^18 buckets of 64 bytes per model (16 MB)
MATCH_ROWS_LOG2 = 20  # the match expert's table holds 2^20 positions (8 MB)


def _network_selector(settings: CompressSettings) -> int:
    """The count expert whose context's confidence picks the network's mixing weight: the current
    word's (2.191, against 2.195 with one network weight for all contexts), else the longest
    order's; -1 for none."""
    return len(settings.orders) if settings.words else len(settings.orders) - 1


def _config(settings: CompressSettings, alphabet: Alphabet) -> Config:
    # Every table at its cap, whatever the input's length (a stream does not know it): they are
    # calloc'd, so that a short text touches only the pages its contexts reach. 8 experts of 2^16
    # rows of 256 counts are 268 MB; a large vocabulary (thousands of Chinese characters) gets fewer
    # rows, so that the counts stay within TABLE_BYTES.
    experts = max(1, len(settings.orders) + settings.words)
    budget = 1 << max(8, (TABLE_BYTES // (2 * experts * alphabet.size)).bit_length() - 1)
    rows = min(settings.rows, budget)
    orders = list(settings.orders) + [0] * (MAX_ORDERS - len(settings.orders))
    beta1, beta2 = ADAM_BETAS
    return Config(
        lanes=settings.lanes, alphabet=alphabet.size, vocab=alphabet.vocab, steps=0,
        num_orders=len(settings.orders), orders=(ctypes.c_int32 * MAX_ORDERS)(*orders),
        words=settings.words, match=settings.match, rows_log2=rows.bit_length() - 1,
        match_rows_log2=MATCH_ROWS_LOG2, window_log2=settings.window.bit_length() - 1, limit=settings.limit,
        total=settings.total, esc_char=alphabet.escapes.get("char", -1),
        esc_byte=alphabet.escapes.get("byte", -1), unk=alphabet.unk, start=alphabet.start,
        features=FEATURES, kinds=KINDS, prior=PRIOR, mix_lr=settings.mix_lr, beta1=beta1, beta2=beta2,
        mix_init=MIX_INIT, extra_logit=EXTRA_LOGIT, apm=APM, apm_rate=APM_RATE, apm_weight=APM_WEIGHT,
        netsel=_network_selector(settings), bit_models=settings.bit_models,
        bit_rows_log2=BIT_BUCKETS_LOG2, bit_limit=BIT_LIMIT, bit_lr=BIT_LR)


def _c_network(lm: RNNLM, mode: str, settings: CompressSettings, start: int,
               lib: ctypes.CDLL) -> Network | DeepNetwork:
    if mode == "online":
        return Network(lm, settings.lanes, settings.block, settings.lr, start, lib=lib)
    return DeepNetwork(lm, settings.lanes, settings.block, settings.lr, start, lib=lib, learn=settings.learn,
                       threads=min(settings.threads, 2))


# ---- the two modes -------------------------------------------------------------------------------


def _online_lm(settings: CompressSettings) -> RNNLM:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        lm = RNNLM(settings.model)
    if settings.start == "english":
        from ..checkpoint import CheckpointError, read_weights

        try:
            lm.load_state_dict({k: v.float() for k, v in read_weights(_prior_path(), lm).items()})
        except CheckpointError as err:
            raise ValueError(f"--start english: {err}; reinstall charlm, or give --start seed") from None
    return lm.eval()


def _prior_path() -> Path:
    return Path(__file__).resolve().parents[1] / PRIOR_FILE


def start_digest() -> str:
    """The first 16 hex digits of the SHA-256 of the byte model shipped: what an archive that starts
    from it records, and its decoder checks."""
    path = _prior_path()
    if not path.is_file():
        raise ValueError(f"--start english: {path}: no such weights file; reinstall charlm, or give "
                         f"--start seed")
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _native(mode: str, lm: RNNLM) -> bool:
    """Whether the network runs in C: the online mode's LSTM of one layer (net.c), a trained run's
    LSTM of any depth read in one direction (deepnet.c); other cells, and the rest, in torch."""
    return Network.fits(lm) if mode == "online" else DeepNetwork.fits(lm)


def model_digest(run_dir: Path) -> str:
    """SHA-256 over the files that define a run's model: the decoder must use the very same."""
    digest = hashlib.sha256()
    for name in ("config.json", "vocab.json", "model.safetensors"):
        path = run_dir / name
        if not path.is_file():
            raise ValueError(f"{run_dir}: not a trained run (no {name})")
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _pretrained(run_dir: Path) -> tuple[RNNLM, Alphabet, dict[str, int], Any]:
    from ..checkpoint import load

    run = load(run_dir, which="last")  # the weights model_digest hashes: both sides load the same
    if run.token != "char":
        raise ValueError(f"{run_dir}: compression needs a character-level run, this one is {run.token!r}")
    if not run.model.can_generate:
        raise ValueError(f"{run_dir}: a bidirectional model cannot predict text left to right")
    alphabet, table = _char_alphabet(run.vocab)
    return run.model.float().eval(), alphabet, table, run.vocab


def resolved(settings: CompressSettings | None, run: str | Path | None,
             sample: bytes | None = None) -> CompressSettings:
    """The settings an archive records: the lanes, learning rate and threads each mode defaults to,
    and online the network's start, chosen by `sample`, the text's first segment, where given."""
    settings = settings or CompressSettings()
    if run is not None:  # the online mode's network and its seed: a trained run brings its own
        given, default = to_flat(settings), to_flat(CompressSettings())
        online_only = [name for name in (*ONLINE_MODEL_FLAGS, "seed", "start")
                       if given[name] != default[name]]
        if online_only:
            raise ValueError(f"{flag(online_only[0])} shapes the online network; a --run brings its own")
    if run is None and settings.learn != "all":
        raise ValueError(f"--learn {settings.learn} applies to a trained run's network (--run); the online "
                         f"network learns whole")
    mode = "online" if run is None else "pretrained"
    if mode == "online":
        start = _start(settings, sample)
        if start == "english" and settings.lr == UNSET["lr"]:
            settings = replace(settings, lr=ENGLISH_LR)
        settings = replace(settings, start=start)
    return replace(settings, **{name: by_mode[mode] for name, by_mode in MODE_DEFAULTS.items()
                                if getattr(settings, name) == UNSET[name]})


def reads_english(sample: bytes) -> bool:
    """Whether a text's first bytes look like English to the byte model: mostly printable ASCII."""
    if not sample:
        return True
    others = len(sample.translate(None, _ASCII_TEXT))  # what is left once the ASCII text is deleted
    return len(sample) - others >= ENGLISH_BYTES_MIN * len(sample)


def _start(settings: CompressSettings, sample: bytes | None) -> str:
    """The online network's first weights: the byte model of English where it fits the network
    (the default shape), no --seed asks for the seeded ones and the text's first segment (`sample`,
    where known) reads as English; given, they must fit."""
    fits = settings.model == _online_model()
    if not settings.start:
        english = fits and settings.seed == 0 and (sample is None or reads_english(sample))
        return "english" if english else "seed"
    if settings.start == "english" and not fits:
        raise ValueError("--start english fits the default network only (an LSTM of 96 on 32-wide "
                         "embeddings); give --start seed for another shape")
    if settings.start == "english" and settings.seed != 0:
        raise ValueError("--seed sets the seeded weights: give it with --start seed, not english")
    return settings.start


def decoder_network(mode: str, info: dict[str, Any], lm: RNNLM) -> bool:
    """Whether the network runs in C, as the encoder's did (else in torch). A pretrained archive
    names its network ("c" or "torch"); one without the name was made in torch."""
    if mode == "online":
        return _native(mode, lm)
    network = info.get("network", "torch")
    if network not in ("c", "torch"):
        raise ArchiveError(f"the archive's header names an unknown network {network!r}")
    if network == "c" and not _native(mode, lm):
        raise ArchiveError("this archive's network ran in C, which this model's kind cannot")
    return network == "c"


def encoder_network(mode: str, lm: RNNLM) -> bool:
    """Whether the network runs in C (:func:`_native`), else in torch."""
    return _native(mode, lm)


class Coder:
    """One coding run of a mode, a segment of the input after another: the network, the alphabet
    and the kernel, all learning on from one segment to the next. The encoder and the decoder each
    hold one and take the very same steps; `in_c` says, given the model, whether its network runs
    in C (net.c online, deepnet.c pretrained), or in torch, a step per call. `library` gives the
    kernel's build to load, given whether the network in C is the pretrained one, whose large
    products want the widest vectors (:func:`charlm.compression.race.library`)."""

    def __init__(self, mode: str, settings: CompressSettings, run_dir: Path | None,
                 in_c: Callable[[RNNLM], bool], library: Callable[[bool], ctypes.CDLL]) -> None:
        self.mode, self.settings = mode, settings
        if mode == "online":
            self.lm, self.alphabet = _online_lm(settings), _byte_alphabet()
            self._table, self._tokens = None, None
        else:
            self.lm, self.alphabet, self._table, vocab = _pretrained(run_dir)
            self._tokens = list(vocab.idx_to_token)
        self.in_c = in_c(self.lm)
        lib = library(self.in_c and mode == "pretrained")  # the network in C shares the Kernel's library
        self.kernel = Kernel(_config(settings, self.alphabet), self.alphabet.letter, self.alphabet.glyph, lib)
        start = self.alphabet.start
        if self.in_c:
            self._network = _c_network(self.lm, mode, settings, start, lib)
        else:
            self._learner = OnlineLearner(self.lm, settings.lanes, settings.block, settings.lr, start,
                                          settings.learn)

    def stream(self, piece: bytes) -> Stream:
        """A segment's symbols: its bytes (online), or its characters and escapes (pretrained)."""
        if self._table is None:
            return _byte_stream(piece, self.settings.lanes)
        return _char_stream(piece.decode("utf-8", errors="surrogateescape"), self._table, len(self._tokens),
                            self.settings.lanes)

    def encode(self, stream: Stream, progress: Callable[[int], None]) -> bytes:
        """The segment's coded bytes; the model has learned from it."""
        self._code(stream, None, progress)
        return self.kernel.finish()

    def decode(self, symbols: int, payload: bytes, progress: Callable[[int], None]) -> bytes:
        """The original bytes of a segment of `symbols` symbols coded as `payload`."""
        stream = Stream.empty([n for _, n in lane_spans(symbols, self.settings.lanes)])
        self._code(stream, payload, progress)
        return _original(stream, self._tokens)

    def _code(self, stream: Stream, payload: bytes | None, progress: Callable[[int], None]) -> None:
        """Run the lockstep loop over `stream`: encode it, or (given `payload`) decode into it,
        telling `progress` the symbols done."""
        lengths = stream.lengths.tolist()
        self.kernel.segment(stream, payload)
        steps, done = max(lengths, default=0), 0
        while done < steps:
            chunk = min(2048 if self.in_c else 64, steps - done)
            try:
                if self.in_c:  # the whole loop in C, a chunk of steps per call (for the progress)
                    self.kernel.run(self._network, chunk)
                else:
                    self._torch_steps(done, chunk, steps)
            except ValueError as err:
                raise ArchiveError(str(err)) from None
            done += chunk
            progress(sum(min(done, length) for length in lengths))

    def _torch_steps(self, done: int, chunk: int, steps: int) -> None:
        learner = self._learner
        for t in range(done, done + chunk):
            logits = learner.logits()
            ids, grad = learner.slots()
            self.kernel.step(logits, ids, grad)
            learner.learn(more_to_come=t + 1 < steps)


def _original(stream: Stream, tokens: list[str] | None) -> bytes:
    """The bytes a decoded stream stands for: the bytes themselves (online), or each symbol's
    character or its escape's bytes (pretrained)."""
    lengths = stream.lengths.tolist()
    if tokens is None:  # one copy of each lane's bytes, never a Python list of them
        lanes = [stream.symbols[lane, :n].to(torch.uint8).contiguous() for lane, n in enumerate(lengths)]
        return b"".join(ctypes.string_at(part.data_ptr(), part.numel()) for part in lanes)
    encoded = [tok.encode("utf-8") for tok in tokens]
    pieces = []
    for lane, n in enumerate(lengths):
        symbols = stream.symbols[lane, :n].tolist()
        extra_len = stream.extra_len[lane, :n].tolist()
        for t, s in enumerate(symbols):
            escaped = s >= len(tokens)
            pieces.append(bytes(stream.extra[lane, t, :extra_len[t]].tolist()) if escaped else encoded[s])
    return b"".join(pieces)
