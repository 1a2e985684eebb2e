"""Carry the English run over to the next session (training-runs/english/README.md, "Across sessions").

    python training-runs/english/carry.py out /work/english/gru training-runs/english/gru-run
    python training-runs/english/carry.py in training-runs/english/gru-run /work/english/gru

`out` copies what an exact resume reads: the checkpoint (weights, the optimizer's moments, the
schedule's and the data's position, the random state), the best weights, config, vocabulary and
metrics. The last weights (model.safetensors) are left behind: they are the checkpoint's own weights,
so `in` writes them again from it. `out` checks first that the file written again holds the very
tensors the run saved (the bytes differ in the header's order; a resume reads only the checkpoint).
"""

import shutil
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from charlm.checkpoint import save_weights

CARRIED = ("config.json", "vocab.json", "metrics.jsonl", "best.safetensors", "trainer.pt")


class _Saved:
    """The checkpoint's weights where save_weights expects a model: it reads only state_dict()."""

    def __init__(self, checkpoint: Path):
        self.tensors = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]

    def state_dict(self) -> dict:
        return self.tensors


def last_weights(run: Path, path: Path) -> None:
    save_weights(path, _Saved(run / "trainer.pt"))


def main() -> None:
    way, source, dest = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    if way == "out":
        with tempfile.TemporaryDirectory() as scratch:
            again = Path(scratch) / "model.safetensors"
            last_weights(source, again)
            saved, written = load_file(source / "model.safetensors"), load_file(again)
            if saved.keys() != written.keys() or not all(torch.equal(saved[k], written[k]) for k in saved):
                sys.exit("carry: the checkpoint's weights do not give model.safetensors again; carry it too")
    elif way != "in":
        sys.exit("carry: the first argument is out or in")
    dest.mkdir(parents=True, exist_ok=True)
    for name in CARRIED:
        shutil.copyfile(source / name, dest / name)
    if way == "in":
        last_weights(dest, dest / "model.safetensors")
    print(f"carried {source} -> {dest}")


if __name__ == "__main__":
    main()
