"""Does this machine continue a run exactly as the machine that started it would have?

A run of the English recipe outlives a session, and a session may get another machine. Before the
run goes on there, this probe resumes a throwaway copy of its checkpoint for a few steps, validates,
and prints that validation loss to the last bit. Run it on the old machine before the checkpoint is
carried over, and on the new one before `charlm resume`: the same number means the two compute the
run's steps identically, so the weights the run ends in are the recipe's on either machine.

    python training-runs/english/probe.py RUN [--code DIR] [--steps 20]

`--code` is the copy of the package the run trains with (its PYTHONPATH). The run itself is only
read; the probe needs the machine to itself only for its speed, not for its result.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def first_validation(metrics: Path, after: int) -> dict | None:
    """The first record from step `after` on with a validation loss, if one is written yet."""
    if not metrics.exists():
        return None
    for line in metrics.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["step"] >= after and "val_loss" in record:
            return record
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--code", type=Path, help="the package copy the run trains with")
    parser.add_argument("--steps", type=int, default=20, help="steps to take at least before validating")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "probe"
        shutil.copytree(args.run, copy)
        last = json.loads((copy / "metrics.jsonl").read_text(encoding="utf-8").splitlines()[-1])["step"]
        env = dict(os.environ, CHARLM_THREADS="2")
        if args.code:
            env["PYTHONPATH"] = str(args.code.resolve())
        # Through the API: the CLI of the copy a run trains with may predate `resume --eval-every 20steps`.
        resume = (f"from charlm.training.run import resume; resume({str(copy)!r}, "
                  f"eval_every='{args.steps}steps', sample_every=0, save_every='24h')")
        command = [sys.executable, "-c", resume]
        worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
        try:
            while (record := first_validation(copy / "metrics.jsonl", last + args.steps)) is None:
                if worker.poll() is not None:
                    sys.exit(f"probe: the resumed copy stopped (exit {worker.returncode}) before validating")
                time.sleep(2)
        finally:
            worker.kill()
            worker.wait()
    print(json.dumps({"from_step": last, "step": record["step"], "val_loss": repr(record["val_loss"])}))


if __name__ == "__main__":
    main()
