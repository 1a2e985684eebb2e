"""Copy the English model's training run, as it stands, into the package (src/charlm/english, what
`charlm.load("english")` and every command without a RUN use): its best weights in half precision
(half the bytes of float32), its config, vocabulary and metrics; then it prints the file's size and
SHA-256 and the validation curve, as docs/english.md gives them. A later session on a fresh machine
continues from them with `--init-from english` if the run folder itself (with the optimizer's
state) is gone.

    python training-runs/english/snapshot.py /work/english/gru
"""

import hashlib
import json
import shutil
import sys
from pathlib import Path

from charlm.checkpoint import load, save_weights

here = Path(__file__).resolve().parents[2] / "src" / "charlm" / "english"
run = Path(sys.argv[1])
shutil.copyfile(run / "vocab.json", here / "vocab.json")
# The metrics up to the best validation, the weights shipped: what they were trained on (the auto
# recipe reads its step count), not what the run did after.
records = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
best = min((r for r in records if "val_loss" in r), key=lambda r: r["val_loss"])
kept = [r for r in records if r["step"] <= best["step"]]
lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
(here / "metrics.jsonl").write_text(lines, encoding="utf-8")
config = json.loads((run / "config.json").read_text(encoding="utf-8"))
config["train"]["prefix"] = "It was "  # what `charlm generate` starts from without --prefix
# Every text begins where a book of its corpus does, after a blank line: the model trained with its
# state carried and never learned to read from zeros (docs/english.md, "Where a text begins").
config["train"]["preamble"] = "\n\n"
(here / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
model = load(run, which="best").model.half()
save_weights(here / "model.safetensors", model)
print(f"snapshot of {run} written to {here}")

# What docs/english.md states of the file (a test holds the SHA-256 to it), and its curve.
weights = (here / "model.safetensors").read_bytes()
print(f"model.safetensors: {len(weights):,} bytes, SHA-256 {hashlib.sha256(weights).hexdigest()}")
print(f"best: step {best['step']:,}, {best['val_bpt']:.3f} bits/char on the validation authors\n")
print("| step | minutes | bits/char |\n|---:|---:|---:|")
for r in kept:
    if "val_bpt" in r:
        print(f"| {r['step']:,} | {r['elapsed'] / 60:.0f} | {r['val_bpt']:.3f} |")
