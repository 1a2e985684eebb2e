"""Big inputs (issue 20): compress and decompress a segment at a time, in bounded memory; a file and a
pipe give the same archive; incompressible segments are stored; damage is found as it is read."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from charlm.compression import (
    ArchiveError,
    CompressSettings,
    compress,
    compress_stream,
    decompress,
    decompress_stream,
    kernel,
)
from charlm.compression.container import CODED, STORED, unpack
from charlm.compression.streaming import segments

TINY = CompressSettings.of(num_hiddens=16, embedding=8, orders=(1, 2))
TEXT = ("The Time Traveller (for so it will be convenient to speak of him) was expounding a recondite "
        "matter to us. His grey eyes shone and twinkled, and his usually pale face was flushed.\n") * 30
SRC = str(Path(__file__).resolve().parents[1] / "src")


class Trickle(io.RawIOBase):
    """A pipe: each read gives at most `most` bytes, whatever was asked for."""

    def __init__(self, data: bytes, most: int) -> None:
        self.data, self.most, self.at = data, most, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.most if n < 0 else min(n, self.most)
        piece = self.data[self.at:self.at + n]
        self.at += len(piece)
        return piece


def test_segments_are_the_same_from_a_file_and_from_a_pipe_that_trickles():
    data = TEXT.encode()[:1000]
    whole = list(segments(io.BytesIO(data), 300))
    assert [len(s) for s in whole] == [300, 300, 300, 100]
    assert list(segments(Trickle(data, 7), 300)) == whole


def test_text_segments_end_between_characters():
    # "é" is two bytes: a segment of 3 would cut it, so it begins the next segment instead
    cut = list(segments(io.BytesIO("abé".encode() + b"cd"), 3, text=True))
    assert cut == [b"ab", "é".encode() + b"c", b"d"]
    data = "naïve café — 東京 ☕ 🙂\n".encode() * 40
    for size in (16, 17, 18, 19):
        pieces = list(segments(io.BytesIO(data), size, text=True))
        assert b"".join(pieces) == data
        assert all(piece.decode("utf-8") for piece in pieces)  # each decodes whole: no character cut


@pytest.mark.parametrize("lanes", [1, 3])
def test_the_stream_functions_round_trip_an_input_of_many_segments(lanes):
    data = TEXT.encode()[:5000] + bytes(range(256))
    settings = CompressSettings.of(num_hiddens=16, embedding=8, orders=(1, 2), lanes=lanes)
    archive = io.BytesIO()
    assert compress_stream(Trickle(data, 999), archive, settings=settings, chunk_size=700) == \
        (len(data), len(archive.getvalue()))
    assert len(unpack(archive.getvalue())[1]) == 8  # 5256 bytes in segments of 700
    out = io.BytesIO()
    assert decompress_stream(Trickle(archive.getvalue(), 333), out) == (len(data), len(archive.getvalue()))
    assert out.getvalue() == data


def test_the_model_learns_on_from_one_segment_to_the_next():
    # Segments are coded streams of their own, but the model is one: cutting the input costs a few
    # bytes a segment (a frame's 21, the coder's last bits), not a model starting afresh.
    data = TEXT.encode()
    whole, cut = len(compress(data, settings=TINY)), len(compress(data, settings=TINY, chunk_size=1000))
    segments_ = -(-len(data) // 1000)
    assert cut - whole < 30 * segments_


def test_pretrained_mode_streams_in_segments(tmp_path):
    from charlm.cli import main

    (tmp_path / "book.txt").write_text(TEXT)
    assert main(["train", "--corpus", str(tmp_path / "book.txt"), "--clean", "raw", "--max-tokens", "-1",
                 "--num-hiddens", "16", "--embedding", "8", "--cell", "lstm", "--epochs", "1", "--batch-size",
                 "4", "--num-steps", "16", "--out", str(tmp_path / "run"), "--device", "cpu", "-q",
                 "--sample-every", "0"]) == 0
    # characters the run knows, ones it does not (escaped), bytes that are not UTF-8, cut anywhere
    data = (TEXT[:900] + "Ωmega ☕ 🙂 東京 ").encode() * 2 + b"\xff\xfe raw \xc3(" + TEXT[:300].encode()
    settings = CompressSettings.of(orders=(1, 2))  # a trained run brings its own network
    archive = compress(data, run=tmp_path / "run", settings=settings, chunk_size=250)
    assert len(unpack(archive)[1]) >= 9
    assert decompress(archive, run=tmp_path / "run") == data


def test_every_segment_the_kernel_sees_is_at_most_one_chunk(monkeypatch):
    # Nothing per byte is kept for the whole input: the kernel gets one segment's symbols at a time,
    # and the coded bytes leave as each segment is done, before the input has all been read.
    sizes, written_while_reading = [], []
    segment = kernel.Kernel.segment

    def seen(self, stream, payload=None):
        sizes.append(stream.symbols.numel())
        return segment(self, stream, payload)

    monkeypatch.setattr(kernel.Kernel, "segment", seen)
    data = TEXT.encode()[:6000]
    sink = io.BytesIO()

    class Watched(io.BytesIO):
        def read(self, n=-1):
            written_while_reading.append(len(sink.getvalue()))
            return super().read(n)

    compress_stream(Watched(data), sink, settings=TINY, chunk_size=1000)
    assert max(sizes) <= 1000 and sum(sizes) == len(data)
    assert written_while_reading[-1] > 4 * 100  # five segments' frames out before the input ended
    sizes.clear()
    assert decompress(sink.getvalue()) == data
    assert max(sizes) <= 1000


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_input(tmp_path):
    # 0.2 MB and 2 MB of the same repeated text through the CLI, each in a process of its own: the
    # tables hold the same contexts and the match history's ring (of 65536 symbols here) is full in
    # both, so a peak that grows with the input would be memory kept per byte. Before streaming it
    # grew by 24 MB (measured); now by about 1 MB.
    script = ("import resource, sys; from charlm.cli import main; "
              "code = main(sys.argv[1:]); print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    peaks = {}
    for size in (200_000, 2_000_000):
        (tmp_path / "in.txt").write_bytes((TEXT.encode() * (size // len(TEXT) + 1))[:size])
        done = subprocess.run([sys.executable, "-c", script, "compress", str(tmp_path / "in.txt"),
                               str(tmp_path / "a.chlm"), "--force", "-q", "--num-hiddens", "8", "--embedding",
                               "4", "--orders", "1", "--words", "0", "--bit-models", "0", "--chunk-size",
                               "65536", "--window", "65536"], env={**os.environ, "PYTHONPATH": SRC},
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        peaks[size] = int(done.stdout.split()[-1])  # KB
    assert peaks[2_000_000] - peaks[200_000] < 5_000, peaks


@pytest.mark.slow
def test_a_file_and_a_pipe_give_the_same_archive(tmp_path):
    data = TEXT.encode()[:4000] + "☕ 🙂".encode()
    (tmp_path / "in.txt").write_bytes(data)
    env = {**os.environ, "PYTHONPATH": SRC}
    flags = ["--online", "-q", "--num-hiddens", "16", "--embedding", "8", "--chunk-size", "1000"]
    from_file = subprocess.run([sys.executable, "-m", "charlm", "compress", str(tmp_path / "in.txt"),
                                str(tmp_path / "a.chlm"), *flags], env=env, capture_output=True, timeout=300)
    assert from_file.returncode == 0, from_file.stderr.decode()
    cat = subprocess.Popen(["cat", str(tmp_path / "in.txt")], stdout=subprocess.PIPE)
    from_pipe = subprocess.run([sys.executable, "-m", "charlm", "compress", "-", "-", *flags],
                               stdin=cat.stdout, env=env, capture_output=True, timeout=300)
    cat.wait()
    assert from_pipe.returncode == 0, from_pipe.stderr.decode()
    assert from_pipe.stdout == (tmp_path / "a.chlm").read_bytes()
    assert len(unpack(from_pipe.stdout)[1]) == 5


@pytest.mark.slow
def test_random_segments_are_stored_and_the_archive_grows_by_a_bounded_overhead():
    noise = random.Random(7).randbytes(4000)
    data = TEXT.encode()[:3000] + noise
    archive = compress(data, settings=TINY, chunk_size=1000)
    header_size = len(compress(b"", settings=TINY)) - 29  # the header alone, less the end and the trailer
    kinds = [frame.kind for frame in unpack(archive)[1]]
    assert kinds[:3] == [CODED] * 3 and kinds[3:] == [STORED] * 4
    assert decompress(archive) == data
    stored = compress(noise, settings=TINY, chunk_size=1000)
    assert len(stored) == len(noise) + header_size + 4 * 21 + 29  # a frame's 21 bytes a segment


def test_damage_anywhere_is_an_archive_error_and_never_wrong_bytes(tmp_path):
    from charlm.cli import main

    data = TEXT.encode()[:1500]
    archive = compress(data, settings=TINY, chunk_size=500)
    rng = random.Random(1)
    for at in sorted(rng.sample(range(len(archive)), 12)):
        damaged = bytearray(archive)
        damaged[at] ^= 1 << rng.randrange(8)
        with pytest.raises(ArchiveError):
            decompress(bytes(damaged))
    for cut in (10, len(archive) // 2, len(archive) - 1):
        with pytest.raises(ArchiveError, match="cut short"):
            decompress(archive[:cut])
    # the CLI leaves no output, not even the segments decoded before the damage was found
    (tmp_path / "cut.chlm").write_bytes(archive[:-40])
    assert main(["decompress", str(tmp_path / "cut.chlm"), str(tmp_path / "out.txt"), "-q"]) == 2
    assert os.listdir(tmp_path) == ["cut.chlm"]
