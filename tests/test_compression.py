"""charlm compress / decompress: lossless round trips in both modes, in another process too,
and the parts that make them exact (the stepper, the C kernel's coder and arithmetic, the container)."""

from __future__ import annotations

import ctypes
import dataclasses
import math
import os
import random
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch

from charlm.cli import main
from charlm.compression import ArchiveError, CompressSettings, compress, decompress, lane_spans
from charlm.compression.container import CODED, STORED, Frame, Header, Trailer, pack, unpack
from charlm.compression.deepnet import DeepNetwork
from charlm.compression.kernel import Network
from charlm.compression.model import BuiltinStepper, OnlineLearner
from charlm.compression.race import library
from charlm.compression.reference_coder import cumulative
from charlm.compression.reference_coder import encode as reference_encode
from charlm.models import RNNLM, ModelConfig

SMALL = CompressSettings.of(num_hiddens=32, embedding=8, orders=(1, 2, 3))
# The same for a trained run, which brings its own network (the online network's flags are refused).
WITH_RUN = CompressSettings.of(orders=(1, 2, 3))
TEXT = ("The Time Traveller (for so it will be convenient to speak of him) was expounding a recondite "
        "matter to us. His grey eyes shone and twinkled, and his usually pale face was flushed. ") * 6
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.mark.parametrize("data", [b"", b"x", "naïve café — 東京 ☕ 🙂\n".encode() * 5, TEXT.encode()[:777]],
                         ids=["empty", "one-byte", "unicode", "text"])
def test_online_round_trips_any_bytes(data):
    archive = compress(data, settings=SMALL)
    assert decompress(archive) == data


def test_random_binary_round_trips_and_is_stored_not_expanded():
    data = random.Random(3).randbytes(3000)
    archive = compress(data, settings=SMALL)
    assert decompress(archive) == data
    # Nothing to learn in random bytes: the coded stream would be longer, so the bytes are stored.
    assert [frame.kind for frame in unpack(archive)[1]] == [STORED]
    assert len(archive) < len(data) + 450  # the header (its settings), a frame's 21 bytes, the trailer


@pytest.mark.parametrize("lanes,block", [(1, 1), (3, 5), (8, 16), (16, 4)])
def test_every_lane_and_block_layout_round_trips(lanes, block):
    data = TEXT.encode()[:401]  # 401 is prime: lanes of unequal length, a last partial block
    settings = CompressSettings.of(num_hiddens=16, embedding=8, orders=(1, 2), lanes=lanes, block=block)
    assert decompress(compress(data, settings=settings)) == data


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_each_cell_and_a_deep_model_round_trip(cell):
    settings = CompressSettings.of(num_hiddens=16, embedding=8, num_layers=2, cell=cell, orders=())
    data = TEXT.encode()[:500]
    assert decompress(compress(data, settings=settings)) == data


def _coded_bits_per_byte(archive: bytes) -> float:
    _, frames, trailer = unpack(archive)
    return 8 * sum(len(frame.data) for frame in frames) / trailer.length  # a stored frame: 8 bits a byte


def test_the_model_learns_while_it_codes():
    data = TEXT.encode() * 2
    network_alone = CompressSettings.of(num_hiddens=32, embedding=8, orders=(), words=0, match=0,
                                        bit_models=0, lr=0.01)
    learning = _coded_bits_per_byte(compress(data, settings=network_alone))
    frozen = _coded_bits_per_byte(compress(data, settings=dataclasses.replace(network_alone, lr=0.0,
                                                                                       mix_lr=0.0)))
    assert frozen > 7.5  # an untrained network stays near 8 bits a byte
    assert learning < 6.5


def test_context_counts_help_on_repeated_text():
    data = TEXT.encode()
    small = {"num_hiddens": 16, "embedding": 8, "words": 0, "match": 0, "bit_models": 0}
    alone = compress(data, settings=CompressSettings.of(orders=(), **small))
    mixed = compress(data, settings=CompressSettings.of(orders=(1, 2, 3, 4), **small))
    assert _coded_bits_per_byte(mixed) < 0.7 * _coded_bits_per_byte(alone)


@pytest.mark.slow
def test_a_whole_corpus_round_trips_within_the_issues_target(data_dir):
    # Deterministic (the same bits on every machine), so a part that stops pulling its weight, the
    # probability map or a feature of the mixing say, shows here even though it still round-trips.
    data = (data_dir / "timemachine.txt").read_bytes()
    archive = compress(data)
    assert decompress(archive) == data
    # measured 2.080; lrzip -z -L9 2.159, zpaq -m5 2.176, bzip2 -9 2.506, xz -9e 2.783 (issue 20: <= 2.11)
    assert 8 * len(archive) / len(data) <= 2.11


@pytest.mark.slow
def test_decoding_in_another_process_gives_the_original(tmp_path):
    data = "Ünïcödé text, newlines\r\n and\ttabs. ".encode() * 30
    (tmp_path / "in.txt").write_bytes(data)
    assert main(["compress", str(tmp_path / "in.txt"), str(tmp_path / "a.chlm"), "--online", "-q",
                 "--num-hiddens", "32", "--embedding", "8"]) == 0
    env = {**os.environ, "PYTHONPATH": SRC}
    done = subprocess.run([sys.executable, "-m", "charlm", "decompress", str(tmp_path / "a.chlm"), "-"],
                          env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == data
    assert b"bits per byte" in done.stderr


@pytest.mark.slow
def test_stdin_to_stdout_in_another_process(tmp_path):
    data = TEXT.encode()[:600]
    env = {**os.environ, "PYTHONPATH": SRC}
    packed = subprocess.run([sys.executable, "-m", "charlm", "compress", "-", "-", "--online", "-q",
                             "--num-hiddens", "16", "--embedding", "8"], input=data, env=env,
                            capture_output=True, timeout=300)
    assert packed.returncode == 0, packed.stderr.decode()
    unpacked = subprocess.run([sys.executable, "-m", "charlm", "decompress", "-", "-", "-q"],
                              input=packed.stdout, env=env, capture_output=True, timeout=300)
    assert unpacked.returncode == 0 and unpacked.stdout == data


@pytest.fixture(scope="module")
def char_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    (root / "book.txt").write_text(TEXT * 3)
    assert main(["train", "--corpus", str(root / "book.txt"), "--clean", "raw", "--max-tokens", "-1",
                 "--num-hiddens", "32", "--embedding", "16", "--cell", "lstm", "--epochs", "3",
                 "--batch-size", "4", "--num-steps", "16", "--lr", "0.01", "--optimizer", "adam",
                 "--out", str(root / "run"), "--device", "cpu", "-q", "--sample-every", "0"]) == 0
    return root / "run"


def test_pretrained_mode_round_trips_with_characters_outside_the_vocabulary(char_run):
    # Known characters, unknown ones (escaped with their UTF-8 bytes), and bytes that are not UTF-8.
    data = TEXT.encode()[:300] + "Ωmega ☕ 🙂 ".encode() + b"\xff\xfe raw \xc3(" + TEXT.encode()[:100]
    archive = compress(data, run=char_run, settings=WITH_RUN)
    assert decompress(archive, run=char_run) == data


def _train(folder: Path, *flags: str) -> Path:
    """A tiny character run on TEXT, trained for a moment: the model flags are the caller's."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "book.txt").write_text(TEXT * 3)
    assert main(["train", "--corpus", str(folder / "book.txt"), "--clean", "raw", "--max-tokens", "-1",
                 *flags, "--epochs", "2", "--batch-size", "4", "--num-steps", "16", "--lr", "0.01",
                 "--optimizer", "adam", "--out", str(folder / "run"), "--device", "cpu", "-q",
                 "--sample-every", "0"]) == 0
    return folder / "run"


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["scratch", "builtin"])
def test_a_gru_run_keeps_the_torch_path_and_round_trips(impl, tmp_path):
    run = _train(tmp_path, "--num-hiddens", "16", "--cell", "gru", "--impl", impl)
    data = TEXT.encode()[:200]
    archive = compress(data, run=run, settings=WITH_RUN)
    assert unpack(archive)[0].settings["network"] == "torch"  # only LSTMs run in C
    assert decompress(archive, run=run) == data


@pytest.fixture(scope="module", params=["builtin", "scratch"])
def deep_run(request, tmp_path_factory):
    """A two-layer LSTM run of either impl: the pretrained network that runs in C (deepnet.c)."""
    return _train(tmp_path_factory.mktemp(f"deep-{request.param}"), "--num-hiddens", "24", "--embedding", "8",
                  "--cell", "lstm", "--num-layers", "2", "--impl", request.param)


@pytest.mark.slow
def test_a_deep_lstm_run_codes_in_c_and_round_trips(deep_run):
    data = TEXT.encode()[:400] + "Ωmega ☕ ".encode() + b"\xff raw" + TEXT.encode()[:150]
    archive = compress(data, run=deep_run, settings=WITH_RUN)
    assert unpack(archive)[0].settings["network"] == "c"
    assert decompress(archive, run=deep_run) == data


def test_the_c_path_codes_within_noise_of_the_torch_path(deep_run, monkeypatch):
    from charlm.compression import codec

    data = TEXT.encode()[:700]
    settings = dataclasses.replace(WITH_RUN, lr=0.003)
    in_c = _coded_bits_per_byte(compress(data, run=deep_run, settings=settings))
    monkeypatch.setattr(codec, "_native", lambda mode, lm: False)
    archive = compress(data, run=deep_run, settings=settings)
    assert unpack(archive)[0].settings["network"] == "torch"
    assert decompress(archive, run=deep_run) == data  # the torch path, its archive named so
    assert abs(in_c - _coded_bits_per_byte(archive)) < 0.01 * in_c


def test_an_archive_that_names_no_network_was_made_in_torch_and_decodes_so(deep_run, monkeypatch):
    # Archives made before the C path had no "network" in their header: the decoder runs torch.
    from charlm.compression import codec

    data = TEXT.encode()[:300]
    with monkeypatch.context() as patch:
        patch.setattr(codec, "_native", lambda mode, lm: False)
        header, frames, trailer = unpack(compress(data, run=deep_run, settings=WITH_RUN))
    old = {k: v for k, v in header.settings.items() if k != "network"}
    archive = pack(Header(header.mode, old), frames, trailer)
    assert decompress(archive, run=deep_run) == data
    bad = {**header.settings, "network": "gpu"}
    with pytest.raises(ArchiveError, match="unknown network 'gpu'"):
        decompress(pack(Header(header.mode, bad), frames, trailer), run=deep_run)


@pytest.mark.slow
@pytest.mark.parametrize("learn", ["top", "output"])
def test_learning_only_the_top_of_the_network_round_trips_in_c_and_in_torch(learn, deep_run, monkeypatch):
    from charlm.compression import codec

    data = TEXT.encode()[:300]
    settings = dataclasses.replace(WITH_RUN, learn=learn)
    assert decompress(compress(data, run=deep_run, settings=settings), run=deep_run) == data
    monkeypatch.setattr(codec, "_native", lambda mode, lm: False)
    assert decompress(compress(data, run=deep_run, settings=settings), run=deep_run) == data


def test_learn_applies_to_the_pretrained_mode_only():
    with pytest.raises(ValueError, match="--learn output applies to a trained run's network"):
        compress(b"abc", settings=dataclasses.replace(SMALL, learn="output"))
    with pytest.raises(ValueError, match="--learn must be one of all, top, output"):
        CompressSettings.of(learn="half")


def test_a_trained_model_codes_its_kind_of_text_better_than_an_untrained_one(char_run):
    data = TEXT.encode()
    settings = CompressSettings.of(orders=(), words=0, match=0, bit_models=0, lr=0.0, mix_lr=0.0)
    pretrained = compress(data, run=char_run, settings=settings)
    online = compress(data, settings=dataclasses.replace(settings, start="seed"))  # untrained: seeded
    assert _coded_bits_per_byte(pretrained) < 0.5 * _coded_bits_per_byte(online)


def test_the_wrong_model_is_refused_before_decoding(char_run, tmp_path):
    archive = compress(TEXT.encode()[:100], run=char_run, settings=WITH_RUN)
    other = tmp_path / "other"
    other.mkdir()
    for f in char_run.iterdir():
        if f.is_file():
            (other / f.name).write_bytes(f.read_bytes())
    weights = bytearray((other / "model.safetensors").read_bytes())
    weights[-1] ^= 1
    (other / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(ArchiveError, match="is not the model this archive was made with"):
        decompress(archive, run=other)


def test_a_decoder_that_computes_other_floats_is_caught_by_the_crc():
    # Settings tampered with in a well-formed header: decoding runs, and the CRC-32 refuses the result.
    data = TEXT.encode()[:300]
    header, frames, trailer = unpack(compress(data, settings=SMALL))
    settings = {**header.settings, "settings": {**header.settings["settings"], "lr": 0.02}}
    with pytest.raises(ArchiveError, match="CRC-32 mismatch"):
        decompress(pack(Header(header.mode, settings), frames, trailer))


def test_compressing_restores_the_callers_thread_count():
    before = torch.get_num_threads()
    compress(b"abc", settings=CompressSettings.of(num_hiddens=8, embedding=4, threads=before + 1))
    assert torch.get_num_threads() == before


def test_the_cli_reports_sizes_and_bits_per_byte(tmp_path, capsys):
    (tmp_path / "in.txt").write_bytes(TEXT.encode())
    assert main(["compress", str(tmp_path / "in.txt"), str(tmp_path / "a.chlm"), "--online",
                 "--num-hiddens", "16", "--embedding", "8"]) == 0
    err = capsys.readouterr().err
    size = (tmp_path / "a.chlm").stat().st_size
    assert f"compressed {len(TEXT)} bytes <-> {size} bytes, {8 * size / len(TEXT):.3f} bits per byte" in err
    assert "KB/s" in err


# ---- the parts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_the_stepper_computes_what_the_torch_nn_model_computes(cell):
    torch.manual_seed(0)
    lm = RNNLM(ModelConfig(40, 24, cell=cell, impl="builtin", num_layers=2, embedding=12)).eval()
    stepper = BuiltinStepper(lm)
    ids = torch.randint(0, 40, (3, 9))
    expected, _ = lm(ids)
    state = lm.begin_state(3)
    for t in range(9):
        logits, state = stepper(ids[:, t], state)
        torch.testing.assert_close(logits, expected[:, t], rtol=1e-5, atol=1e-5)


def _payload_bits(data: bytes, **settings) -> int:
    base = {"num_hiddens": 8, "embedding": 4, "lanes": 1, "lr": 0.0, "bit_models": 0, **settings}
    _, frames, _ = unpack(compress(data, settings=CompressSettings.of(**base)))
    assert [frame.kind for frame in frames] == [CODED]
    return 8 * len(frames[0].data)


def test_the_match_expert_codes_a_repeat_of_earlier_text_almost_for_free():
    # Random text over 16 letters: contexts of 1 or 2 symbols say little, the repeat is all there is.
    rng = random.Random(5)
    part = bytes(rng.choice(b"abcdefghijklmnop") for _ in range(3000))
    once, twice = (_payload_bits(data, orders=(1, 2), words=0, match=8) for data in (part, part + part))
    assert twice - once < 0.1 * once
    once, twice = (_payload_bits(data, orders=(1, 2), words=0, match=0) for data in (part, part + part))
    assert twice - once > 0.5 * once  # without it


def test_the_match_expert_finds_a_repeat_within_its_window_and_not_beyond():
    # The match expert keeps the last --window symbols (a ring: bounded memory, however long the
    # input); a pointer older than that predicts nothing. The repeat here is 6000 symbols back.
    rng = random.Random(5)
    part, other = (bytes(rng.choice(b"abcdefghijklmnop") for _ in range(3000)) for _ in range(2))
    def cost(**match) -> int:  # of the last part
        return (_payload_bits(part + other + part, orders=(1, 2), words=0, **match)
                - _payload_bits(part + other, orders=(1, 2), words=0, **match))

    unmatched = cost(match=0)
    assert cost(window=1 << 13) < 0.1 * unmatched  # within the window: almost free
    assert cost(window=1 << 12) > 0.97 * unmatched  # beyond it: as dear as without the match expert


def test_word_experts_make_english_smaller(data_dir):
    data = (data_dir / "timemachine.txt").read_bytes()[5000:25000]
    sizes = [_payload_bits(data, words=words) for words in (0, 1, 2)]
    assert max(sizes[1:]) < 0.985 * sizes[0]


def test_a_low_count_limit_follows_a_change_in_the_text_faster():
    # 600 "ab" then 600 "ac": after the change, contexts whose counts halve sooner switch sooner.
    data = b"ab" * 600 + b"ac" * 600
    fast = _payload_bits(data, orders=(1,), words=0, match=0, limit=8)
    slow = _payload_bits(data, orders=(1,), words=0, match=0, limit=65535)
    assert fast < 0.8 * slow


@pytest.mark.parametrize("seed", range(6))
def test_the_kernels_coder_writes_exactly_the_reference_coders_stream(seed):
    rng = random.Random(seed)
    A = rng.choice([1, 2, 3, 57, 256, 300])
    cums, symbols = [], []
    for _ in range(rng.randint(0, 600)):
        freqs = [rng.choice([1, 1, 2, rng.randint(1, 1000), rng.randint(1, 1 << 14)]) for _ in range(A)]
        if rng.random() < 0.3:  # one symbol holds nearly everything: probabilities near 0 and 1
            freqs[rng.randrange(A)] += (1 << 24) - sum(freqs)
        cums.append(cumulative(freqs))
        symbols.append(rng.randrange(A))
    stream = _encode_with(symbols, cums)
    assert stream == reference_encode(symbols, cums)
    assert _decode_with(stream, cums) == symbols


def _flat(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int64).to(torch.int32).reshape(-1) if rows else \
        torch.zeros(1, dtype=torch.int32)


def _encode_with(symbols: list[int], cums: list[list[int]]) -> bytes:
    """The kernel's coder on its own, one cumulative-count list per symbol, all of one alphabet size."""
    lib, n = library(), len(symbols)
    A = len(cums[0]) - 1 if cums else 1
    sym = torch.tensor(symbols, dtype=torch.int32) if symbols else torch.zeros(1, dtype=torch.int32)
    cum, out = _flat(cums), ctypes.c_void_p()
    length = lib.cm_encode_with(cum.data_ptr(), A, sym.data_ptr(), n, ctypes.byref(out))
    assert length >= 0
    try:
        return ctypes.string_at(out.value, length)
    finally:
        lib.cm_release(out)


def _decode_with(data: bytes, cums: list[list[int]]) -> list[int]:
    """The inverse of :func:`_encode_with`."""
    lib, n = library(), len(cums)
    A = len(cums[0]) - 1 if cums else 1
    symbols = torch.zeros(max(n, 1), dtype=torch.int32)
    buffer = ctypes.create_string_buffer(bytes(data), max(len(data), 1))
    assert lib.cm_decode_with(_flat(cums).data_ptr(), A, n, buffer, len(data), symbols.data_ptr()) == 0
    return symbols[:n].tolist()


def test_the_kernels_exp_and_log_are_accurate_to_the_last_bits():
    lib, rng = library(), random.Random(0)
    for _ in range(20000):
        x = -rng.uniform(0, 700)
        assert math.isclose(lib.cm_exp_of(x), math.exp(x), rel_tol=1e-15)
        y = math.exp(rng.uniform(-40, 40))
        assert math.isclose(lib.cm_log_of(y), math.log(y), rel_tol=1e-15, abs_tol=1e-15)
    assert lib.cm_exp_of(0.0) == 1.0 and lib.cm_exp_of(-1000.0) == 0.0


@pytest.mark.parametrize("level", ["portable", "native"])
def test_the_vectorised_exp_and_squash_round_exactly_as_the_scalar_ones(level):
    # exact.h's exps and squashes (the softmaxes, both networks' cells) compute cm_exp and squash
    # without branches, so that the compiler vectorises them; every value must still round exactly
    # as the scalar functions', in the portable build and in this CPU's own.
    from charlm.compression import kernel
    from charlm.hardware import machine

    lib = kernel.load("portable" if level == "portable" else machine.kernel_target(machine.probe()).value)
    rng = random.Random(0)
    for name in ("cm_exp_of", "cm_squash_of"):
        getattr(lib, name).restype, getattr(lib, name).argtypes = ctypes.c_double, [ctypes.c_double]
    edges = [0.0, -0.0, 700.0, -700.0, -700.5, 1e30, -1e30, 1e-300, -1e-300, 0.5, -0.5, -0.34657359027997264,
             -1.0397207708399179, -745.0]  # 0.5 and 1.5 ln 2: floor's ties
    xs = [rng.uniform(-30, 30) for _ in range(3000)] + [rng.uniform(-900, 900) for _ in range(1000)] + edges
    n = len(xs)
    squashed, exped = (ctypes.c_double * n)(), (ctypes.c_double * n)()
    lib.cm_squashes((ctypes.c_double * n)(*xs), squashed, n)
    assert [struct.pack("<d", v) for v in squashed] == [struct.pack("<d", lib.cm_squash_of(x)) for x in xs]
    below = [-abs(x) for x in xs]  # exp's domain here: x <= 0
    lib.cm_exps((ctypes.c_double * n)(*below), exped, n)
    assert [struct.pack("<d", v) for v in exped] == [struct.pack("<d", lib.cm_exp_of(x)) for x in below]


def test_the_network_in_c_computes_what_torch_computes():
    torch.manual_seed(0)
    lm = RNNLM(ModelConfig(256, 24, cell="lstm", impl="builtin", embedding=12)).eval()
    net = Network(lm, lanes=3, block=1000, lr=0.0, start=10, lib=library())  # no learning: the forward alone
    ids = torch.randint(0, 256, (3, 40))
    expected, _ = lm(torch.cat([torch.full((3, 1), 10), ids[:, :-1]], 1))
    for t in range(40):
        torch.testing.assert_close(net.forward(ids[:, t]), expected[:, t], rtol=1e-5, atol=1e-5)


def _lstm(impl: str, embedding: int | None, num_layers: int = 3) -> RNNLM:
    # 20 units: 80 gates, not a multiple of deepnet.c's 32-column panels, so their padding is used.
    torch.manual_seed(0)
    lm = RNNLM(ModelConfig(40, 20, cell="lstm", impl=impl, num_layers=num_layers, embedding=embedding)).eval()
    with torch.no_grad():
        for p in lm.parameters():
            p.normal_(0.0, 0.3)  # large enough that every gate is far from its linear range
    return lm


@pytest.mark.parametrize("impl", ["builtin", "scratch"])
@pytest.mark.parametrize("embedding", [12, None], ids=["embedding", "one-hot"])
def test_the_deep_network_in_c_computes_what_torch_computes(impl, embedding):
    lm = _lstm(impl, embedding)
    # no learning: the forward pass alone
    net = DeepNetwork(lm, lanes=3, block=1000, lr=0.0, start=10, lib=library(wide=True))
    ids = torch.randint(0, 40, (3, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, _ = lm(torch.cat([torch.full((3, 1), 10), ids[:, :-1]], 1))
    for t in range(30):
        torch.testing.assert_close(net.forward(ids[:, t]), expected[:, t], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["builtin", "scratch"])
@pytest.mark.parametrize("embedding", [12, None], ids=["embedding", "one-hot"])
def test_the_deep_network_in_c_learns_what_torch_learns(impl, embedding):
    # The same gradients of the code length into both: after eight block updates (backpropagation
    # through each block, clipping, Adam; nn.LSTM's two biases each a parameter of torch's Adam)
    # the two still agree to float32's rounding, not merely in how well they learn.
    lm = _lstm(impl, embedding, num_layers=2)
    with torch.no_grad():
        for p in lm.parameters():
            p.mul_(0.1)
    net = DeepNetwork(lm, lanes=3, block=5, lr=0.01, start=10, lib=library(wide=True))
    reference = OnlineLearner(lm, 3, 5, 0.01, 10)
    g = torch.Generator().manual_seed(1)
    with torch.enable_grad():
        for _ in range(40):
            ids, grad = torch.randint(0, 40, (3,), generator=g), torch.randn(3, 40, generator=g)
            expected = reference.logits()
            slot_ids, slot_grad = reference.slots()
            slot_ids.copy_(ids)
            slot_grad.copy_(grad)
            reference.learn(more_to_come=True)
            torch.testing.assert_close(net.forward(ids, grad), expected, rtol=1e-4, atol=1e-4)


def test_the_network_in_c_learns_as_well_as_the_one_in_torch(monkeypatch):
    from charlm.compression import codec

    data = TEXT.encode()
    settings = CompressSettings.of(num_hiddens=32, embedding=8, orders=(1, 2), words=0, match=0, lr=0.01)
    native = _coded_bits_per_byte(compress(data, settings=settings))
    monkeypatch.setattr(codec, "_native", lambda mode, lm: False)
    in_torch = compress(data, settings=settings)
    assert decompress(in_torch) == data  # the torch path round-trips too
    assert abs(native - _coded_bits_per_byte(in_torch)) < 0.02 * native


def _every_build(monkeypatch):
    """Each instruction-set level this CPU runs, as a context in which the kernel is that build."""
    from charlm.compression import kernel, race
    from charlm.hardware import machine

    cpu = machine.probe()
    targets = ["portable"] + [level for level, needs in reversed(machine.X86_LEVELS.items())
                              if cpu.arch == "x86_64" and set(needs) <= cpu.cpu_features]

    def use(level: str) -> None:
        monkeypatch.setattr(race, "library", lambda wide=False: kernel.load(level))
    return targets, use


# What the kernel of arithmetic 1 codes, as the release before it coded it (source digest
# 4febeeb25fef7a61): the SHA-256 of the coded bytes of the first 20,000 and 60,000 bytes of the Time
# Machine that ships with charlm, online, with the defaults of then (the seeded first weights).
ARITHMETIC_1 = {20_000: "0d820decda7567e7f889764e76d946aca5c40761e16e744890108d65cce68940",
                60_000: "010b7d73a6593554df8db164cbc56fb49448ff34a619610b97bf2c2ac50bc563"}


SEEDED = CompressSettings.of(start="seed")


def _time_machine() -> bytes:
    import gzip

    from charlm.data.corpora import corpus_spec, embedded_file
    return gzip.decompress(embedded_file(corpus_spec("timemachine")).read_bytes())


def _coded_digest(archive: bytes) -> str:
    import hashlib
    return hashlib.sha256(b"".join(frame.data for frame in unpack(archive)[1])).hexdigest()


@pytest.mark.slow
def test_every_build_codes_the_very_bits_its_arithmetic_number_names(monkeypatch):
    # Archives name what the kernel computes (build.ARITHMETIC), not its sources: a kernel made
    # faster must code every bit as the one before it did, or it must take a new number.
    from charlm.compression import build

    assert build.ARITHMETIC == 1, "a new arithmetic: record its digests here, and the old one's decoding"
    targets, use = _every_build(monkeypatch)
    text = _time_machine()
    for target in targets:
        use(target)
        for size, digest in ARITHMETIC_1.items():
            assert _coded_digest(compress(text[:size], settings=SEEDED)) == digest, (target, size)


def test_an_archive_of_the_release_before_decodes_and_an_unknown_kernel_is_refused():
    from charlm.compression import build

    data = TEXT.encode()[:3000]
    header, frames, trailer = unpack(compress(data))
    assert header.settings["kernel"] == "arithmetic 1"

    def named(kernel: str) -> bytes:
        return pack(Header(header.mode, {**header.settings, "kernel": kernel}), frames, trailer)

    (earlier,) = [digest for digest, number in build.EARLIER.items() if number == build.ARITHMETIC]
    assert decompress(named(earlier)) == data  # it recorded its sources' digest: the same arithmetic
    with pytest.raises(ArchiveError, match="kernel '0123456789abcdef', but here it is 'arithmetic 1'"):
        decompress(named("0123456789abcdef"))
    with pytest.raises(ArchiveError, match="kernel 'arithmetic 2'"):
        decompress(named("arithmetic 2"))


def test_every_build_this_cpu_runs_writes_the_same_archive_and_reads_the_others(monkeypatch):
    # The kernel is built per instruction-set level (portable, x86-64-v3, x86-64-v4); archives must
    # not depend on which build wrote them, or one machine could not read another's.
    targets, use = _every_build(monkeypatch)
    data = TEXT.encode()[:2000] + bytes(range(256))
    settings = CompressSettings.of(num_hiddens=24, embedding=8)
    archives = {}
    for target in targets:
        use(target)
        archives[target] = compress(data, settings=settings)
    assert len(set(archives.values())) == 1, {t: len(a) for t, a in archives.items()}
    for reader in targets:
        use(reader)
        for writer in targets:
            assert decompress(archives[writer]) == data, f"written by {writer}, read by {reader}"


@pytest.mark.slow
def test_every_build_and_thread_count_writes_the_same_pretrained_archive(deep_run, monkeypatch):
    # deepnet.c's products run 16, 8 or 4 floats wide by build, and split between two threads or
    # not; none of it may change a bit, or one machine could not read another's archive.
    targets, use = _every_build(monkeypatch)
    data = TEXT.encode()[:1500] + "☕".encode()
    archives = {}
    for target in targets:
        use(target)
        for threads in (1, 2):
            settings = dataclasses.replace(WITH_RUN, threads=threads, lr=0.003)
            archive = compress(data, run=deep_run, settings=settings)
            header, frames, _ = unpack(archive)
            assert header.settings["network"] == "c"
            archives[target, threads] = frames  # the header records the thread count: compare the rest
    assert len({tuple(frames) for frames in archives.values()}) == 1
    use(targets[0])
    assert decompress(archive, run=deep_run) == data  # the last one written, read by another build


@pytest.mark.slow
def test_without_a_c_compiler_compress_says_so_in_one_line(tmp_path):
    (tmp_path / "in.txt").write_bytes(b"some text")
    env = {**os.environ, "PYTHONPATH": SRC, "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "CC": str(tmp_path / "no-such-cc")}  # a fresh cache: the kernel must be built, and cannot
    done = subprocess.run([sys.executable, "-m", "charlm", "compress", str(tmp_path / "in.txt"),
                           str(tmp_path / "a.chlm"), "--online"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "charlm: error: charlm's compressor builds a small C kernel once and needs a C compiler for it: "
        f"install gcc (or set CC); '{tmp_path / 'no-such-cc'}' does not run"]
    assert not (tmp_path / "a.chlm").exists()


@pytest.mark.parametrize("alphabet", [258, 3000, 60000])
def test_the_count_tables_stay_within_their_memory_budget(alphabet):
    from charlm.compression.codec import TABLE_BYTES, Alphabet, _config

    letters = torch.zeros(alphabet, dtype=torch.uint8)
    config = _config(CompressSettings.of(lanes=1), Alphabet(alphabet, alphabet - 2, 0, 0, letters, letters))
    tables = 8 * (1 << config.rows_log2) * alphabet * 2  # 6 orders and 2 word experts of 16-bit counts
    assert tables <= TABLE_BYTES
    assert config.rows_log2 >= 8
    if alphabet == 258:
        assert config.rows_log2 == 16  # bytes get the full default


def test_lanes_cover_the_input_once_with_lengths_differing_by_at_most_one():
    for n in range(0, 40):
        for lanes in (1, 2, 3, 7):
            spans = lane_spans(n, lanes)
            assert [s for s, _ in spans] == sorted(s for s, _ in spans)
            covered = [i for s, k in spans for i in range(s, s + k)]
            assert covered == list(range(n))
            assert max(k for _, k in spans) - min(k for _, k in spans) <= 1


def test_the_container_round_trips_and_checks_every_field():
    header = Header("online", {"settings": {"lanes": 2}, "torch": "x"})
    frames = [Frame(CODED, 12, 12, b"payload"), Frame(STORED, 3, 3, b"raw")]
    archive = pack(header, frames, Trailer(15, 1234))
    assert unpack(archive) == (header, frames, Trailer(15, 1234, 10, zlib.crc32(b"payloadraw")))
    with pytest.raises(ArchiveError, match="unexpected bytes after its end"):
        unpack(archive + b"\0")
    for cut in range(len(archive)):
        with pytest.raises(ArchiveError, match="cut short|not a charlm archive"):
            unpack(archive[:cut])
    for bit in range(8 * len(archive)):  # every single flipped bit is found, wherever it is
        flipped = bytearray(archive)
        flipped[bit // 8] ^= 1 << bit % 8
        with pytest.raises(ArchiveError):
            unpack(bytes(flipped))
    with pytest.raises(ArchiveError, match="frames are not the ones it was written with"):
        unpack(pack(header, frames[:1], Trailer(15, 1234))[:-29] + archive[-29:])  # a frame left out


@pytest.mark.parametrize("bad", [{"lanes": -1}, {"block": -1}, {"lr": 2.0}, {"orders": (0,)},
                                 {"orders": (2, 2)}, {"total": 100}, {"cell": "transformer"},
                                 {"rows": 1000}, {"words": 3}, {"limit": 1}])
def test_settings_out_of_range_are_refused(bad):
    with pytest.raises(ValueError):
        CompressSettings.of(**bad)


def test_progress_is_reported_up_to_the_whole_input_both_ways():
    data = TEXT.encode()[:300]
    seen: list[tuple[int, int]] = []
    archive = compress(data, settings=SMALL, progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1] == (len(data), len(data))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)  # it only moves forward
    seen.clear()
    assert decompress(archive, progress=lambda done, total: seen.append((done, total))) == data
    assert seen[-1] == (len(data), len(data))


@pytest.mark.slow
def test_the_faster_of_the_cpus_level_and_the_one_below_is_raced_once_and_kept(monkeypatch, tmp_path):
    from charlm.compression import build

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # a machine that never raced
    raced: list[str] = []

    def timed(level: str) -> float:
        raced.append(level)
        return {"x86-64-v4": 1.4, "x86-64-v3": 0.8}[level]  # v3 quicker, as on a Zen 4 EPYC
    build.fastest.cache_clear()
    choice = build.fastest("x86-64-v4", timed)
    assert choice.value == "x86-64-v3" and "x86-64-v3 30.0 KB/s" in choice.reason
    assert raced == ["x86-64-v4", "x86-64-v3"]
    build.fastest.cache_clear()  # a new process: the answer is read back, not raced again
    assert build.fastest("x86-64-v4", timed).value == "x86-64-v3" and len(raced) == 2
    # The CPU's own level wins a tie, and a level with only portable below it is not raced.
    (record,) = (tmp_path / "charlm" / "kernels").glob("*.race.json")
    record.write_text('{"x86-64-v4": 1.0, "x86-64-v3": 1.0}', encoding="utf-8")
    build.fastest.cache_clear()
    assert build.fastest("x86-64-v4", timed).value == "x86-64-v4"
    assert build.fastest("x86-64-v3", timed).value == "x86-64-v3" and len(raced) == 2
    build.fastest.cache_clear()


def test_a_race_times_a_build_by_coding_its_text_as_compress_does():
    # The race runs only on a CPU with a level below its own (AVX-512): here it is called directly,
    # so that a machine without AVX-512 still runs the code that times the builds.
    from charlm.compression import race

    assert len(race.race_text()) == race.RACE_BYTES
    assert 0 < race.seconds("portable") < 60


def test_a_level_asked_for_is_built_as_asked_with_no_race(monkeypatch):
    from charlm.compression import build, race
    from charlm.hardware import machine

    monkeypatch.setattr(build, "fastest",
                        lambda level, seconds: pytest.fail("no race when a level is asked for"))
    monkeypatch.setenv("CHARLM_KERNELS_TARGET", "portable")
    assert build.chosen(None, race.seconds) == "portable"
    monkeypatch.setenv("CHARLM_KERNELS_TARGET", "auto")
    monkeypatch.setattr(build, "fastest", lambda level, seconds: machine.Choice("portable", "measured"))
    assert build.chosen(None, race.seconds) == "portable"  # auto: what the race chose


# ---- the bitwise stage and the learner thread (issue 20) -------------------------------------------


def test_the_learner_thread_changes_the_time_but_not_one_bit(monkeypatch):
    # net.c backpropagates on a thread of its own beside the next block, and applies each gradient a
    # block later on a fixed schedule: the archive must be the very one a single thread writes.
    from charlm.compression import codec, kernel

    data = TEXT.encode()
    settings = CompressSettings.of(num_hiddens=32, embedding=8, block=4)
    threaded = compress(data, settings=settings)
    class Serial(kernel.Network):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs, serial=True)

    monkeypatch.setattr(codec, "Network", Serial)
    serial = compress(data, settings=settings)
    assert serial == threaded
    assert decompress(threaded) == data  # read back by the serial decoder
    monkeypatch.undo()
    assert decompress(serial) == data


def _hard_wrapped(data_dir, size: int) -> bytes:
    return (data_dir / "timemachine.txt").read_bytes()[:size]  # a Gutenberg book: lines of ~70


@pytest.mark.slow
def test_the_bitwise_stage_codes_smaller_than_the_symbol_mixture_alone(data_dir):
    data = _hard_wrapped(data_dir, 40_000)
    whole = _coded_bits_per_byte(compress(data, settings=CompressSettings.of(bit_models=0)))
    bitwise = _coded_bits_per_byte(compress(data, settings=CompressSettings.of()))
    assert bitwise < 0.97 * whole  # measured 2.608 -> 2.475 on these 40 KB (the whole book: 2.19 -> 2.08)


@pytest.mark.slow
def test_the_bitwise_stage_learns_where_hard_wrapped_lines_break(data_dir):
    # A book's line breaks inside paragraphs cost the symbol mixture a tenth of a bit a byte (the same
    # text with them turned into spaces codes that much smaller): it cannot tell that a line is about
    # to end. The column contexts and the mixer chosen by the column can; most of that cost goes.
    wrapped = _hard_wrapped(data_dir, 40_000)
    unwrapped = re.sub(rb"(?<=\S)\n(?=\S)", b" ", wrapped)

    def cost(bit_models: int) -> float:
        settings = CompressSettings.of(bit_models=bit_models)
        return (_coded_bits_per_byte(compress(wrapped, settings=settings))
                - _coded_bits_per_byte(compress(unwrapped, settings=settings)))

    assert cost(21) < 0.6 * cost(0)  # measured 0.046 against 0.101 bits per byte


@pytest.mark.slow
def test_a_vocabulary_of_more_than_256_symbols_is_coded_in_more_bits(tmp_path):
    # Chinese text: a character run's vocabulary of some 300 symbols, nine bits a symbol in the
    # bitwise stage, whose text contexts see each symbol's stand-in byte (codec._glyph).
    text = "".join(chr(0x4E00 + (i * 7919) % 300) for i in range(3000)) + "\n"
    folder = tmp_path / "zh"
    folder.mkdir()
    (folder / "book.txt").write_text(text * 2, encoding="utf-8")
    assert main(["train", "--corpus", str(folder / "book.txt"), "--clean", "raw", "--max-tokens", "-1",
                 "--num-hiddens", "16", "--embedding", "8", "--cell", "lstm", "--epochs", "1",
                 "--batch-size", "4", "--num-steps", "16", "--out", str(folder / "run"), "--device", "cpu",
                 "-q", "--sample-every", "0"]) == 0
    data = (text[:1500] + "ABC abc\n").encode()
    archive = compress(data, run=folder / "run", settings=WITH_RUN)
    assert decompress(archive, run=folder / "run") == data


def test_the_progress_bar_shows_the_rate_and_the_time_left(monkeypatch):
    import argparse
    import io
    import time

    from charlm.cli import files

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    update, close = files._progress_bar(argparse.Namespace(quiet=False), "compress")
    update(0, 1_000_000)
    time.sleep(0.2)
    update(4096 * 50, 1_000_000)  # a multiple of 4096 is redrawn at once
    close()
    last = [line for line in screen.getvalue().split("\r") if "20%" in line][-1]
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, [\d.]+[kM]?B/s\]", last), last  # elapsed<left, rate


@pytest.mark.parametrize("value", [-1, 22])
def test_bit_models_out_of_range_is_an_error_naming_the_flag(value):
    with pytest.raises(ValueError, match=r"--bit-models must be an integer in 0\.\.21"):
        CompressSettings.of(bit_models=value)


def test_the_api_refuses_the_online_networks_settings_with_a_trained_run_as_the_cli_does(char_run):
    for changed in (dict(num_hiddens=8), dict(cell="gru"), dict(seed=3)):
        with pytest.raises(ValueError, match=f"--{next(iter(changed)).replace('_', '-')} shapes the online"):
            compress(b"the time", run=char_run, settings=CompressSettings.of(**changed))


# -- the online network's first weights: the byte model of English, or the seeded ones -----------

def test_the_online_network_starts_from_the_byte_model_of_english_and_codes_english_smaller():
    text = _time_machine()[:20_000]
    english, seeded = compress(text), compress(text, settings=SEEDED)
    assert unpack(english)[0].settings["settings"]["start"] == "english"
    assert unpack(seeded)[0].settings["settings"]["start"] == "seed"
    assert decompress(english) == text and decompress(seeded) == text
    assert len(english) < 0.93 * len(seeded)  # a network that already reads English, from the first byte


def test_the_start_is_english_for_the_default_network_and_seeded_for_another_shape_or_a_seed():
    from charlm.compression.codec import resolved

    assert (resolved(None, None).start, resolved(None, None).lr) == ("english", 7e-5)  # it learns gently
    assert resolved(None, None, TEXT.encode()).start == resolved(None, None, b"").start == "english"
    lyrics = "\u4e0d\u80fd\u8aaa\u7684\u79d8\u5bc6\n".encode() * 50  # Chinese: English would cost bits
    assert (resolved(None, None, lyrics).start, resolved(None, None, lyrics).lr) == ("seed", 2.5e-3)
    assert resolved(CompressSettings.of(start="english"), None, lyrics).start == "english"  # as asked
    assert resolved(CompressSettings.of(num_hiddens=24), None).start == "seed"
    assert resolved(CompressSettings.of(seed=3), None).start == "seed"
    assert resolved(CompressSettings.of(start="seed"), None).start == "seed"
    with pytest.raises(ValueError, match="--start english fits the default network only"):
        resolved(CompressSettings.of(num_hiddens=24, start="english"), None)
    with pytest.raises(ValueError, match="--seed sets the seeded weights"):
        resolved(CompressSettings.of(seed=3, start="english"), None)
    with pytest.raises(ValueError, match="--start must be one of english, seed"):
        CompressSettings.of(start="french")


def test_every_build_this_cpu_runs_writes_the_same_archive_from_the_byte_model_of_english(monkeypatch):
    targets, use = _every_build(monkeypatch)
    data = TEXT.encode()[:2000]
    archives = set()
    for target in targets:
        use(target)
        archives.add(compress(data))
    assert len(archives) == 1 and decompress(archives.pop()) == data


def test_an_archive_of_format_4_decodes_from_the_seeded_weights(monkeypatch):
    from charlm.compression import container

    data = TEXT.encode()[:3000]
    header, frames, trailer = unpack(compress(data, settings=SEEDED))
    before = {k: v for k, v in header.settings["settings"].items() if k != "start"}  # as format 4 wrote
    monkeypatch.setattr(container, "FORMAT_VERSION", 4)
    old = pack(Header(header.mode, {**header.settings, "settings": before}), frames, trailer)
    assert old[6] == 4
    assert decompress(old) == data


def test_an_archive_of_another_byte_model_of_english_is_refused():
    data = TEXT.encode()[:2000]
    header, frames, trailer = unpack(compress(data))
    assert decompress(pack(header, frames, trailer)) == data
    other = pack(Header(header.mode, {**header.settings, "start": "0123456789abcdef"}), frames, trailer)
    with pytest.raises(ArchiveError, match="starts from the byte model of English '0123456789abcdef'"):
        decompress(other)


def test_a_missing_or_damaged_byte_model_is_one_line_saying_to_reinstall(tmp_path, monkeypatch, capsys):
    from charlm.compression import codec

    shipped = codec._prior_path().read_bytes()
    book, prior = tmp_path / "book.txt", tmp_path / "english-bytes.safetensors"
    book.write_text(TEXT[:2000])
    monkeypatch.setattr(codec, "_prior_path", lambda: prior)
    assert main(["compress", str(book), str(tmp_path / "a.chlm")]) == 2
    assert "english-bytes.safetensors: no such weights file; reinstall charlm, or give --start seed" in \
        capsys.readouterr().err
    damaged = bytearray(shipped)
    damaged[-10] ^= 0x01  # one bit of one weight
    prior.write_bytes(bytes(damaged))
    assert main(["compress", str(book), str(tmp_path / "a.chlm")]) == 2
    err = capsys.readouterr().err
    assert "damaged: the tensors do not match the SHA-256" in err and "\n" not in err.strip()
    assert main(["compress", str(book), str(tmp_path / "b.chlm"), "--start", "seed"]) == 0
    assert not (tmp_path / "a.chlm").exists()  # the failed run left no archive


def test_the_byte_model_of_english_is_the_file_the_docs_name():
    import hashlib

    from charlm.compression import codec

    digest = hashlib.sha256(codec._prior_path().read_bytes()).hexdigest()
    doc = (Path(__file__).parents[1] / "docs" / "compression.md").read_text(encoding="utf-8")
    assert f"`{digest}`" in doc
    assert codec.start_digest() == digest[:16]
