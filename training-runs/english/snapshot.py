"""Copy the English model's training run, as it stands, into this folder: its best weights in half
precision (7 MB instead of 14), its config, vocabulary and metrics. A later session on a fresh
machine continues from them with `--init-from` if the run folder itself (with the optimizer's
state) is gone.

    python training-runs/english/snapshot.py /work/english/run
"""

import shutil
import sys
from pathlib import Path

from charlm.checkpoint import load, save_weights

here = Path(__file__).resolve().parent
run = Path(sys.argv[1])
for name in ("config.json", "vocab.json", "metrics.jsonl"):
    shutil.copyfile(run / name, here / name)
model = load(run, which="best").model.half()
save_weights(here / "model.safetensors", model)
print(f"snapshot of {run} written to {here}")
