"""Training on a big text, as a user runs it: the first line, the checkpoints, kill -9, peak memory.

    python -m benchmarks.big_text --mb 100 --minutes 6 --kill-at 300          # synthetic text
    python -m benchmarks.big_text --text ../shared/data/pg-authors.txt --minutes 6 --kill-at 300

Runs ``charlm train TEXT --max-minutes M`` (the auto recipe) in a child process, with the log going
to a pipe, not a terminal, and reports:

- when each line of output came, in seconds from the start (the first within a minute, issue 29);
- each moment ``trainer.pt`` changed, and the intervals between checkpoints;
- with ``--kill-at S``: a SIGKILL S seconds in, then what it lost: the training time between the last
  checkpoint and the kill, and whether ``charlm resume`` takes the run on;
- the child's peak resident memory (``wait4``'s ``ru_maxrss``), beside the size of the text's token
  ids, which is what memory may grow by with the text.

A synthetic text (``--mb``) is English-like words drawn from a fixed list with a seeded generator,
written in 8 MB pieces, so a 1 GB file needs no 1 GB string. The results go to docs/scale.md.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

WORDS = ("the time traveller for so it will be convenient to speak of him was expounding a recondite "
         "matter to us his grey eyes shone and twinkled usually pale face flushed animated fire burned "
         "brightly soft radiance incandescent lights lilies silver caught bubbles that flashed passed "
         "our glasses chairs being patents embraced caressed rather than submitted sat upon there "
         "luxurious after dinner atmosphere when thought roams gracefully free trammels precision").split()
PIECE = 8 << 20


def synthetic_text(path: Path, megabytes: int, seed: int = 0) -> None:
    """`megabytes` MB of seeded word salad in lines of ten to twenty words, written piece by piece."""
    rng = random.Random(seed)
    left = megabytes << 20
    with path.open("w", encoding="ascii") as f:
        while left > 0:
            lines, size = [], 0
            while size < min(PIECE, left):
                line = " ".join(rng.choices(WORDS, k=rng.randint(10, 20))) + ".\n"
                lines.append(line.capitalize())
                size += len(line)
            text = "".join(lines)[:left]
            f.write(text)
            left -= len(text)


class Watch:
    """The child's output lines and the changes of its checkpoint, timed from the start."""

    def __init__(self, proc: subprocess.Popen, run: Path, start: float) -> None:
        self.lines: list[tuple[float, str]] = []
        self.saves: list[float] = []
        self.proc, self.run, self.start = proc, run, start
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._poll, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.perf_counter() - self.start, line.rstrip()))
            print(f"{self.lines[-1][0]:7.1f} s  {line.rstrip()}", flush=True)

    def _poll(self) -> None:
        seen = None
        while self.proc.poll() is None:
            try:
                mtime = (self.run / "trainer.pt").stat().st_mtime_ns
            except FileNotFoundError:
                mtime = None
            if mtime is not None and mtime != seen:
                seen = mtime
                self.saves.append(time.perf_counter() - self.start)
            time.sleep(0.2)


def run_training(text: Path, run: Path, minutes: float, kill_at: float | None, extra: list[str]) -> dict:
    argv = [sys.executable, "-m", "charlm", "train", str(text), "--out", str(run), "--max-minutes",
            str(minutes), *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watch = Watch(proc, run, start)
    if kill_at is not None:
        while proc.poll() is None and time.perf_counter() - start < kill_at:
            time.sleep(0.1)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    time.sleep(0.5)  # the reader thread takes the last lines
    return {"seconds": time.perf_counter() - start, "returncode": proc.returncode,
            "peak_rss_mb": usage.ru_maxrss / 1024, "lines": watch.lines, "saves": watch.saves}


def report(result: dict, run: Path, kill_at: float | None) -> None:
    lines, saves = result["lines"], result["saves"]
    print(f"\nexit {result['returncode']} after {result['seconds']:.0f} s; peak RSS "
          f"{result['peak_rss_mb']:.0f} MB")
    if lines:
        print(f"first line at {lines[0][0]:.1f} s; first line after the auto line at "
              f"{lines[min(1, len(lines) - 1)][0]:.1f} s")
    gaps = [b - a for a, b in zip(saves, saves[1:])]
    print(f"checkpoints at {', '.join(f'{s:.0f}' for s in saves)} s; longest interval "
          f"{max(gaps, default=float('nan')):.0f} s")
    if kill_at is not None and saves:
        print(f"kill -9 at {kill_at:.0f} s: the last checkpoint was written at {saves[-1]:.0f} s, so "
              f"{kill_at - saves[-1]:.0f} s of training were lost")
        from charlm.checkpoint import load_trainer

        saved = load_trainer(run / "trainer.pt")
        print(f"the checkpoint holds epoch {saved['epoch']} batch {saved['batch']}, step "
              f"{saved['steps_done']}, {saved['run_seconds']:.0f} s of training")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", type=Path, help="a text file to train on")
    source.add_argument("--mb", type=int, help="a synthetic text of this many MB")
    parser.add_argument("--minutes", type=float, default=6.0, help="--max-minutes of the run")
    parser.add_argument("--kill-at", type=float, default=None, help="SIGKILL the run this many seconds in")
    parser.add_argument("--resume", action="store_true", help="after the kill, resume the run to its end")
    parser.add_argument("--keep", type=Path, default=None, help="a folder for the text and run (kept)")
    args, extra = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        text = args.text
        if text is None:
            text = folder / f"synthetic-{args.mb}mb.txt"
            if not text.exists():
                began = time.perf_counter()
                synthetic_text(text, args.mb)
                print(f"wrote {text} ({args.mb} MB) in {time.perf_counter() - began:.0f} s", flush=True)
        run = folder / f"run-{int(time.time())}"
        result = run_training(text, run, args.minutes, args.kill_at, extra)
        report(result, run, args.kill_at)
        if args.kill_at is not None and args.resume:
            began = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "charlm", "resume", str(run)], capture_output=True,
                                  text=True)
            print(f"resume: exit {done.returncode} after {time.perf_counter() - began:.0f} s; "
                  f"{(done.stdout + done.stderr).strip().splitlines()[-1:]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
