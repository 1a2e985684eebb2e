"""torchrun with a time budget, under load: every run must finish, none may hang.

    python -m benchmarks.torchrun_budget --runs 10 --busy 1

Starts `--busy` busy loops (one core each), then launches ``torchrun --nproc_per_node 2 -m charlm
train`` with ``--max-minutes`` `--runs` times in a row on a small text, each in a session of its own
with a deadline: past it, the whole launch is killed and counted as a hang. Reports each run's
wall time, the slowest, and how many hung. Before the ranks shared rank 0's clock (issue 29), a rank
whose own clock had passed the budget left the loop while the other waited in the next epoch's
collective for ever.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEXT = "the time traveller for so it will be convenient to speak of him was expounding\n" * 400


def busy_loop() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(folder: Path, run: str, minutes: float, deadline: float) -> tuple[float, bool]:
    """One torchrun job; (wall seconds, whether it finished by itself with exit 0)."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
            "127.0.0.1", "--master_port", str(free_port()), "-m", "charlm", "train", "--corpus", "book.txt",
            "--recipe", "book", "--max-tokens", "-1", "--num-hiddens", "32", "--batch-size", "8",
            "--num-steps", "16", "--epochs", "100000", "--max-minutes", str(minutes), "--eval-every", "1",
            "--sample-every", "0", "--device", "cpu", "--precision", "fp32", "--out", run, "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=deadline)
        ok = proc.returncode == 0
        if not ok:
            print(err.decode(errors="replace")[-2000:], file=sys.stderr)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun's workers run in sessions of their own:
        subprocess.run(["pkill", "-KILL", "-f", "--", f"--out {run}"], check=False)  # found by their run
        proc.wait()
        ok = False
    return time.perf_counter() - start, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--busy", type=int, default=1, help="busy loops beside the runs (one core each)")
    parser.add_argument("--minutes", type=float, default=0.1, help="each run's --max-minutes")
    parser.add_argument("--deadline", type=float, default=180.0, help="seconds before a run counts as hung")
    args = parser.parse_args(argv)
    loops = [busy_loop() for _ in range(args.busy)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            (folder / "book.txt").write_text(TEXT)
            times = []
            for k in range(args.runs):
                seconds, ok = launch(folder, f"run{k}", args.minutes, args.deadline)
                times.append((seconds, ok))
                print(f"run {k + 1}: {seconds:.1f} s, {'finished' if ok else 'HUNG or failed'}", flush=True)
    finally:
        for loop in loops:
            loop.kill()
    finished = sum(ok for _, ok in times)
    print(f"{finished} of {args.runs} finished with --max-minutes {args.minutes:g} beside {args.busy} busy "
          f"loop(s); the slowest took {max(s for s, _ in times):.1f} s")
    return 0 if finished == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
