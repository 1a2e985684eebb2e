"""Copy the English model's training run, as it stands, into the package (src/charlm/english, what
`charlm.load("english")` and every command without a RUN use): its best weights in half precision
(7 MB instead of 14), its config, vocabulary and metrics. A later session on a fresh machine
continues from them with `--init-from english` if the run folder itself (with the optimizer's
state) is gone.

    python training-runs/english/snapshot.py /work/english/run
"""

import json
import shutil
import sys
from pathlib import Path

from charlm.checkpoint import load, save_weights

here = Path(__file__).resolve().parents[2] / "src" / "charlm" / "english"
run = Path(sys.argv[1])
for name in ("vocab.json", "metrics.jsonl"):
    shutil.copyfile(run / name, here / name)
config = json.loads((run / "config.json").read_text(encoding="utf-8"))
config["train"]["prefix"] = "It was "  # what `charlm generate` starts from without --prefix
(here / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
model = load(run, which="best").model.half()
save_weights(here / "model.safetensors", model)
print(f"snapshot of {run} written to {here}")
