"""The explorer's speed, as its page sees it: ``python -m benchmarks.serve`` (about two minutes).

A 2 x 512 LSTM (charlm's default scratch implementation, fp32) is trained for one short epoch on
*The Time Machine* read raw (so 10,000 characters are 10,000 tokens), then served on a free port by
`charlm serve` in a process of its own. Every figure but the last two comes through HTTP, JSON and
all, as the page gets it; each is the median of several runs, with the range. Beside the streaming
speeds, ``charlm.stream`` on the same model without the server, the baseline that says what the
server and the probabilities cost.

    python -m benchmarks.serve              # prints the table and rewrites it in docs/explorer.md
    python -m benchmarks.serve --no-doc     # prints it only
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from charlm import GenerateConfig, load, stream, train
from charlm.data.corpora import iter_source_text
from charlm.hardware import machine
from charlm.inspection import reading as ins

DOC = Path(__file__).resolve().parents[1] / "docs" / "explorer.md"
BEGIN, END = "<!-- benchmark: begin -->", "<!-- benchmark: end -->"


def _model(folder: Path) -> Path:
    train(out=folder, corpus="timemachine", clean="raw", cell="lstm", num_hiddens=512, num_layers=2,
          max_tokens=20_000, epochs=1, batch_size=32, num_steps=64, optimizer="adam", lr=0.002,
          sample_every=0, eval_every=1, device="cpu", precision="fp32")
    return folder


def _post(port: int, path: str, body: dict) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    return conn.getresponse()


def _timed(port: int, path: str, body: dict) -> float:
    start = time.perf_counter()
    response = _post(port, path, body)
    data = response.read()
    assert response.status == 200, data[:200]
    return time.perf_counter() - start


def _stream(port: int, body: dict) -> tuple[float, float]:
    """(seconds to the first token, tokens per second after it) of one generation."""
    start = time.perf_counter()
    response = _post(port, "/api/generate", body)
    first = count = 0
    for line in response:
        record = json.loads(line)
        if "tokens" in record:
            if not first:
                first = time.perf_counter()
            count += len(record["tokens"][0])
    end = time.perf_counter()
    return first - start, (count - 1) / (end - first)


def _stats(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def _repeat(fn: Callable[[], float], times: int) -> tuple[float, float, float]:
    fn()  # once to warm up (kernels loaded, caches filled)
    return _stats([fn() for _ in range(times)])


Row = tuple[str, str, tuple[float, float, float], str]  # what, target, (median, low, high), unit


def _generation_rows(port: int, run, prefix: str, repeats: int) -> list[Row]:
    sampled = {"run": "r0", "prefix": prefix, "num_preds": 3000, "seed": 0}
    greedy = {**sampled, "greedy": True}
    firsts = [_stream(port, {**sampled, "num_preds": 5, "seed": i})[0] for i in range(repeats)]
    rows = [("first character on the page, after a 1,000-character prefix", "<= 200 ms",
             _stats([1000 * v for v in firsts]), "ms"),
            ("streaming, sampled", ">= 2,000 chars/s", _repeat(lambda: _stream(port, sampled)[1], repeats),
             "chars/s"),
            ("streaming, greedy", ">= 10,000 chars/s", _repeat(lambda: _stream(port, greedy)[1], repeats),
             "chars/s")]
    for name, settings in (("sampled", {"seed": 0}), ("greedy", {"greedy": True})):
        config = GenerateConfig(num_preds=3000, **settings)

        def plain(config=config) -> float:
            start = time.perf_counter()
            for _ in stream(run.model, run.vocab, prefix, config):
                pass
            return 3000 / (time.perf_counter() - start)
        rows.append((f"baseline: `charlm.stream`, {name}, no server", "", _repeat(plain, 3), "chars/s"))
    return rows


def _read_rows(port: int, text: str) -> list[Row]:
    page = {"run": "r0", "text": text[:10_000]}
    # a new text each time, so that the trace is computed rather than found in the cache
    texts = iter(text[i:i + 10_000] for i in range(1, 1000))
    return [("Read view of 10,000 characters: bits and top-5 everywhere", "<= 1.5 s",
             _repeat(lambda: _timed(port, "/api/analyze", page), 3), "s"),
            ("the same with h and tanh(c) of every layer (the Neurons view)", "<= 4 s",
             _repeat(lambda: _timed(port, "/api/analyze", {"run": "r0", "text": next(texts), "states": True}),
                     3), "s")]


def _library_rows(run, text: str) -> list[Row]:
    reading = ins.read(run, text[:10_000])

    def with_h() -> float:
        start = time.perf_counter()
        ins.score(run.model, reading.ids, trace=ins.trace(run.model, reading.ids, kinds=("h",)))
        return time.perf_counter() - start
    trace = ins.trace(run.model, reading.ids, kinds=("h",))  # 2 x 512 = 1,024 units
    mask = ins.mask_of(reading, preset="vowel")

    def search() -> float:
        start = time.perf_counter()
        ins.rank_units(trace, mask)
        return 1000 * (time.perf_counter() - start)
    units, steps = trace.values.shape[1], trace.values.shape[0]
    return [("library: bits, top-5 and h of every layer", "<= 2 s", _repeat(with_h, 3), "s"),
            (f"library: unit search, {units:,} units x {steps:,} characters", "<= 50 ms", _repeat(search, 20),
             "ms")]


def measure(repeats: int = 5) -> list[Row]:
    text = "".join(iter_source_text("timemachine"))[20_000:40_000]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = _model(Path(tmp) / "lstm-2x512")
        run = load(run_dir)
        with _server(run_dir) as port:
            return (_generation_rows(port, run, text[:1000], repeats) + _read_rows(port, text)
                    + _library_rows(run, text))


@contextlib.contextmanager
def _server(run_dir: Path) -> Iterator[int]:
    """`charlm serve` in a process of its own, as a user starts it (a server thread in this process
    would share its interpreter lock with the client reading the stream); its port."""
    process = subprocess.Popen([sys.executable, "-m", "charlm", "serve", str(run_dir), "--port", "0"],
                               stdout=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # "charlm serve: http://127.0.0.1:PORT/  (r0 = ...)"
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if match is None:
            raise RuntimeError(f"charlm serve did not print its address: {line!r}")
        yield int(match.group(1))
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: it stops cleanly
        process.wait(timeout=30)


def table(rows: list[Row]) -> str:
    facts = machine.probe()
    features = " ".join(sorted(f for f in facts.cpu_features if f.startswith(("avx", "amx"))))
    lines = [f"Measured on {facts.cpu_model} ({facts.arch}; {features}), {torch.get_num_threads()} threads, "
             f"torch {torch.__version__}, "
             f"`python -m benchmarks.serve`:", "",
             "| what | target | median (range) |", "|---|---|---|"]
    for what, target, (median, low, high), unit in rows:
        digits = 0 if unit in ("chars/s", "ms") and median >= 10 else 2
        low_high = f"{low:,.{digits}f}-{high:,.{digits}f}"
        lines.append(f"| {what} | {target} | {median:,.{digits}f} {unit} ({low_high}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-doc", action="store_true", help="print the table only")
    args = parser.parse_args()
    text = table(measure(args.repeats))
    print(text)
    if not args.no_doc:
        doc = DOC.read_text(encoding="utf-8")
        head, rest = doc.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        DOC.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    main()
