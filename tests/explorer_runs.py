"""Tiny trained runs for the explorer's tests: made in a temporary folder in a second or two."""

from __future__ import annotations

from pathlib import Path

import torch

from charlm import load, train
from charlm.checkpoint import WEIGHTS, save_weights

TEXT = ('"Is it," said the Time Traveller, "a machine?"\n'
        "The Psychologist looked at him. 'Never,' he answered, 'not in my time.'\n") * 40
VOWELS = "aeiouAEIOU"


def make_run(folder: Path, *, cell: str = "lstm", text: str = TEXT, **changes) -> Path:
    """Train a small run on `text` (kept raw: quotes, capitals and newlines are tokens) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    corpus = folder.parent / f"{folder.name}.txt"
    corpus.write_text(text, encoding="utf-8")
    settings = dict(corpus=str(corpus), clean="raw", max_tokens=-1, cell=cell, impl="builtin",
                    num_hiddens=32, num_layers=2, batch_size=8, num_steps=32, epochs=3, optimizer="adam",
                    lr=0.01, eval_every=1, sample_every=1, num_preds=20, prefix="The ", device="cpu",
                    precision="fp32")
    train(out=folder, **{**settings, **changes})
    return folder


def plant_vowel_unit(run_dir: Path, layer: int = 0, unit: int = 3) -> None:
    """Rewire one unit of a trained builtin run to fire on vowels and not elsewhere (h near 0.76 for
    the LSTM, +1 for the others): every gate of it opens on vowel tokens and shuts on the rest,
    whatever the state before.
    Written into both weights files, so `load` finds it whichever it reads."""
    run = load(run_dir)
    core, vocab = run.model.core, run.vocab
    vowel = torch.tensor([1.0 if tok in VOWELS else -1.0 for tok in vocab.idx_to_token])
    with torch.no_grad():
        gates = 4 if run.model.config.cell == "lstm" else 3 if run.model.config.cell == "gru" else 1
        H = run.model.config.num_hiddens
        W_ih, W_hh = getattr(core, f"weight_ih_l{layer}"), getattr(core, f"weight_hh_l{layer}")
        b_ih, b_hh = getattr(core, f"bias_ih_l{layer}"), getattr(core, f"bias_hh_l{layer}")
        assert layer == 0 and run.model.embedding is None, "one-hot inputs of the first layer only"
        for g in range(gates):  # every gate of the unit follows the input: open on vowels, shut elsewhere
            row = g * H + unit
            W_ih[row] = 8.0 * vowel
            W_hh[row] = 0.0
            b_ih[row] = b_hh[row] = 0.0
        if run.model.config.cell == "lstm":  # forget nothing from before: f = 0 keeps c = i * g
            f_row = H + unit
            W_ih[f_row] = -8.0
            b_ih[f_row] = b_hh[f_row] = -8.0
    for name in set(WEIGHTS.values()):
        if (run_dir / name).is_file():
            save_weights(run_dir / name, run.model)
