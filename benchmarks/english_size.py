"""The English model's candidate sizes, side by side on this machine: what each costs to train, to
write with and to read with, and the size of its file (docs/english.md).

    python -m benchmarks.english_size [--json]

Untrained models of the vocabulary the shipped one has (287 characters, an embedding of 64):
speed does not depend on the weights. For each candidate, LSTM and GRU, from 1 x 512 to 3 x 768:

- training: tokens per second of the recipe's step (batch 32 x 128, AdamW), as the auto recipe
  measures a candidate (:func:`charlm.training.auto.measure_speed`); this bounds what it can learn
  in the hours a CPU gives it;
- writing: characters per second of ``charlm generate`` (one sample, temperature 0.7), on the
  torch.nn layers the recipe trains (``impl builtin``) and on the same weights as the scratch model,
  whose greedy loop runs in C++;
- reading: characters per second of the explorer's analysis of a text (read, score, trace);
- the file: its weights in half precision.

The held-out score of each needs its own long training run; docs/english.md says which were trained.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from charlm.checkpoint import Run
from charlm.config import TrainConfig
from charlm.data.vocab import Vocab
from charlm.generation import GenerateConfig, generate
from charlm.inspection.reading import read, score, trace
from charlm.models import RNNLM, ModelConfig
from charlm.training.auto import BASE, measure_speed

CANDIDATES = [(cell, layers, hidden)
              for cell in ("lstm", "gru") for hidden in (512, 768) for layers in (1, 2, 3)]
VOCAB = 287
TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
        "foolishness, it was the epoch of belief, it was the epoch of incredulity. ") * 20


def _model(cell: str, layers: int, hidden: int, impl: str) -> RNNLM:
    torch.manual_seed(0)
    return RNNLM(ModelConfig(VOCAB, hidden, cell=cell, impl=impl, num_layers=layers, embedding=64)).eval()


def _vocab() -> Vocab:
    chars = sorted(set(TEXT))
    return Vocab(chars + [chr(0x100 + i) for i in range(VOCAB - 1 - len(chars))])


def _best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(cell: str, layers: int, hidden: int) -> dict:
    vocab = _vocab()
    builtin = _model(cell, layers, hidden, "builtin")
    params = sum(p.numel() for p in builtin.parameters())
    config = TrainConfig.of(**{**BASE, "cell": cell, "num_layers": layers, "num_hiddens": hidden,
                               "vocab_size": VOCAB, "batch_size": 32, "num_steps": 128})
    train = measure_speed(config, torch.device("cpu"), "fp32", steps=3)
    n = 400
    sampled = GenerateConfig(num_preds=n, temperature=0.7, seed=0)
    write = {}
    for impl in ("builtin", "scratch"):
        model = _model(cell, layers, hidden, impl)
        write[impl] = n / _best_of(3, lambda m=model: generate(m, vocab, "It was", sampled))
    run = Run(builtin, vocab, None, None)
    reading = read(run, TEXT[:3000])

    def analyse() -> None:
        states = trace(builtin, reading.ids, kinds=("h", "c") if cell == "lstm" else ("h",))
        score(builtin, reading.ids, trace=states)
    return {"cell": cell, "layers": layers, "hidden": hidden, "params": params,
            "file_mb": params * 2 / 1e6, "train_tokens_per_s": train,
            "write_builtin_chars_per_s": write["builtin"], "write_scratch_chars_per_s": write["scratch"],
            "read_chars_per_s": len(reading.ids) / _best_of(3, analyse)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per candidate")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    if not args.json:
        print("| model | parameters | file (fp16) | training tokens/s | writing chars/s (torch.nn / scratch) "
              "| reading chars/s |\n|---|---:|---:|---:|---:|---:|")
    for candidate in CANDIDATES:
        row = measure(*candidate)
        if args.json:
            print(json.dumps(row), flush=True)
            continue
        print(f"| {row['layers']} x {row['hidden']} {row['cell'].upper()} | {row['params'] / 1e6:.1f} M "
              f"| {row['file_mb']:.1f} MB | {row['train_tokens_per_s']:,.0f} "
              f"| {row['write_builtin_chars_per_s']:,.0f} / {row['write_scratch_chars_per_s']:,.0f} "
              f"| {row['read_chars_per_s']:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
