"""Training speed on a busy machine: the same run alone, beside a busy loop, and beside itself.

    python -m benchmarks.load                  # the book's default run, 3 rounds (about 4 minutes)
    python -m benchmarks.load --epochs 10 --rounds 1 -- --cell lstm --num-hiddens 256

Users train beside a browser, an IDE or a second training run. A process whose threads spin at a
barrier every step waiting for a partner the scheduler has put aside loses far more than its fair
share, so this measures what charlm keeps. Each round runs, one after another:

- ``alone``: one `charlm train` with the machine to itself;
- ``busy loop``: the same beside a Python busy loop on one core (``while True: pass``);
- ``side by side``: two identical trainings started together (each reported).

The figure is each run's median tokens/s over its epochs (the first one, warm-up, left out) as a
ratio to ``alone`` in the same round, so a machine that is slower all round cancels out. The issue's
floors: at least 0.40 beside a busy loop, at least 0.35 each side by side (on two cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BUSY_LOOP = [sys.executable, "-c", "while True: pass"]


def train_command(out: Path, epochs: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "charlm", "train", "--out", str(out), "--epochs", str(epochs),
            "--eval-every", "0", "--sample-every", "0", "--save-every", "0", "-q", *extra]


def tokens_per_sec(run_dir: Path) -> float:
    """Median tokens/s of a finished run's epochs, the first (warm-up) left out."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["tokens_per_sec"] for r in records[1:] or records]
    return statistics.median(speeds)


def run_together(commands: list[list[str]], env: dict[str, str]) -> None:
    """Start the training commands together, with a busy loop too when asked, and wait for them."""
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for c in commands]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"training failed ({proc.returncode}): {err.strip()[-500:]}")


def one_round(folder: Path, epochs: int, extra: list[str], env: dict[str, str]) -> dict[str, float]:
    alone, busy, left, right = (folder / name for name in ("alone", "busy", "left", "right"))
    run_together([train_command(alone, epochs, extra)], env)
    spinner = subprocess.Popen(BUSY_LOOP)
    try:
        run_together([train_command(busy, epochs, extra)], env)
    finally:
        spinner.kill()
        spinner.wait()
    run_together([train_command(left, epochs, extra), train_command(right, epochs, extra)], env)
    return {name: tokens_per_sec(path) for name, path in
            (("alone", alone), ("busy loop", busy), ("side by side 1", left), ("side by side 2", right))}


def table(rounds: list[dict[str, float]]) -> list[str]:
    rows = ["| run | tokens/s (median of rounds) | vs alone (median, range) |", "|---|---|---|"]
    for name in rounds[0]:
        speeds = [r[name] for r in rounds]
        ratios = [r[name] / r["alone"] for r in rounds]
        rows.append(f"| {name} | {statistics.median(speeds):,.0f} | {statistics.median(ratios):.2f}x "
                    f"({min(ratios):.2f}-{max(ratios):.2f}) |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=30, help="epochs per training run (default 30)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three settings (default 3)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the training runs (to compare settings)")
    parser.add_argument("extra", nargs="*", help="flags for `charlm train` after --")
    args = parser.parse_args()
    env = {**os.environ, **dict(item.split("=", 1) for item in args.env)}
    from charlm.hardware import machine

    facts = machine.probe()
    command = " ".join(args.extra) or "(defaults)"
    print(f"# {facts.describe_cpu()}, {facts.cores} cores; charlm train {command}, "
          f"{args.epochs} epochs; {' '.join(args.env) or 'environment as is'}", flush=True)
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            rounds.append(one_round(Path(tmp) / str(k), args.epochs, args.extra, env))
            print("  round", k + 1, {name: round(v) for name, v in rounds[-1].items()}, flush=True)
    print("\n".join(table(rounds)))


if __name__ == "__main__":
    main()
