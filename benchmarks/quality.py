"""Quality per CPU-minute: train a quality recipe and print its validation loss against wall time.

    python -m benchmarks.quality shakespeare-cpu-10min            # trains (10 minutes), then reports
    python -m benchmarks.quality --report runs/a runs/b           # reports runs already trained

The curve comes from the run's metrics.jsonl: ``elapsed`` is the run's wall-clock seconds at the end
of each epoch (validations, samples and checkpoints included), ``val_loss`` the validation loss in
nats per token there. The reference points of the issue are printed beside it, with the loss of
the run read off at the same wall times (the last validation at or before each time).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from charlm.cli import main as charlm_main

# (seconds, nats per character, what) on tinyshakespeare's last 10 %, from the issue (issue 7).
REFERENCES = [(75, 1.886, "a small transformer, its CPU recipe"),
              (60, 1.665, "torch.nn.LSTM 1x512, Adam 3e-3, no dropout"),
              (240, 1.522, "the same LSTM, its best (it then overfits)"),
              (600, 1.525, "the same transformer trained 10 minutes")]


def curve(run_dir: Path) -> list[tuple[float, float]]:
    """(elapsed seconds, validation loss) of every validated epoch of a run."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["elapsed"], r["val_loss"]) for r in rows if "val_loss" in r and "elapsed" in r]


def loss_at(points: list[tuple[float, float]], seconds: float) -> float | None:
    """The run's validation loss known at `seconds`: the last validation at or before it."""
    known = [loss for t, loss in points if t <= seconds]
    return known[-1] if known else None


def report(run_dir: Path) -> str:
    points = curve(run_dir)
    lines = [f"### {run_dir.name}", "", "| wall time (s) | validation loss (nats/char) |", "|---|---|"]
    lines += [f"| {t:.0f} | {loss:.4f} |" for t, loss in points]
    lines += ["", "| reference | its loss | this run at the same time |", "|---|---|---|"]
    for seconds, loss, what in REFERENCES:
        ours = loss_at(points, seconds)
        lines.append(f"| {what}, {seconds} s | {loss:.3f} | {'-' if ours is None else f'{ours:.3f}'} |")
    best = min((loss for _, loss in points), default=float("nan"))
    lines += ["", f"Best validation loss: {best:.4f} nats/char ({best / 0.6931471805599453:.4f} bits/char)."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="*", help="quality recipes to train, e.g. shakespeare-cpu-10min")
    parser.add_argument("--out", type=Path, default=Path("runs/quality"), help="where the runs go")
    parser.add_argument("--report", nargs="*", type=Path, default=[], help="run folders to report only")
    args = parser.parse_args()
    runs = list(args.report)
    for recipe in args.recipes:
        out = args.out / recipe
        if charlm_main(["train", "--recipe", recipe, "--out", str(out)]) != 0:
            raise SystemExit(f"training {recipe} failed")
        runs.append(out)
    for run in runs:
        print(report(run), end="\n\n")


if __name__ == "__main__":
    main()
