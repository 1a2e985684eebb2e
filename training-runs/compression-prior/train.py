"""Train the byte model that the online compressor starts from (docs/compression.md, "Starting from
English"): the online network's own shape (bytes -> 32-wide embedding -> LSTM of 96 -> 256 logits)
on the UTF-8 bytes of pg-authors's training authors, written in half precision into the package.

Counted in steps, with one seed and two threads, so that the same machine writes the same file:

    CHARLM_DATA=../shared/data python training-runs/compression-prior/train.py [STEPS]

It prints the held-out bits per byte (the validation authors' first 1 MB) as it goes.
"""

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from charlm import RNNLM
from charlm.checkpoint import save_weights
from charlm.compression.codec import PRIOR_FILE, _online_model
from charlm.data.corpora import read_source
from charlm.evaluation import cross_entropy

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 14_000
BATCH, LENGTH = 64, 128  # 8 KB a step: ~115 k bytes/s on two Zen 3 cores
LR, MIN_LR, WARMUP, WEIGHT_DECAY, CLIP = 3e-3, 1e-4, 100, 0.01, 1.0


def as_bytes(split: str) -> torch.Tensor:
    data = read_source("pg-authors", split).encode("utf-8")
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8).astype(np.int64))


def held_out_bits(lm: RNNLM, held: torch.Tensor) -> float:
    lm.eval()
    with torch.no_grad():
        logits, _ = lm(held[:-1].view(1, -1))
        loss = cross_entropy(logits, held[1:].view(1, -1)).item()
    lm.train()
    return loss / math.log(2)


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    train, held = as_bytes("train"), as_bytes("val")[: 1 << 20]
    columns = (len(train) - 1) // BATCH  # sequential partitioning: row b reads its own stretch
    X, Y = train[: columns * BATCH].view(BATCH, columns), train[1: columns * BATCH + 1].view(BATCH, columns)
    lm = RNNLM(_online_model())
    optimizer = torch.optim.AdamW(lm.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    state, start = None, time.perf_counter()
    for step in range(STEPS):
        progress = step / STEPS
        for group in optimizer.param_groups:
            cosine = MIN_LR + (LR - MIN_LR) * (1 + math.cos(math.pi * progress)) / 2
            group["lr"] = min(1.0, (step + 1) / WARMUP) * cosine
        at = (step * LENGTH) % (columns - LENGTH)
        if at < LENGTH:
            state = None  # a new pass over the rows starts from a zero state
        logits, state = lm(X[:, at: at + LENGTH], state)
        state = tuple(s.detach() for s in state)
        loss = cross_entropy(logits, Y[:, at: at + LENGTH])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), CLIP)
        optimizer.step()
        if (step + 1) % 2000 == 0 or step + 1 == STEPS:
            print(f"step {step + 1}: held-out {held_out_bits(lm, held):.4f} bits/byte, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    out = Path(__file__).resolve().parents[2] / "src" / "charlm" / PRIOR_FILE
    save_weights(out, lm.half())
    print(f"written {out}")


if __name__ == "__main__":
    main()
