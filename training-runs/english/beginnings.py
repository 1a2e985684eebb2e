"""How the English model reads the beginning of a text, from a zero state and after its preamble (a
blank line): the figures of docs/english.md, "Where a text begins".

    python training-runs/english/beginnings.py [RUN]    # default: the model charlm ships

It prints the bits per character of one letter's opening sentence each way, what `generate` writes
after "Dear John," each way, and how many of 78 beginnings (26 capital letters, each followed by
three sentence tails) the model reads at more than 3 bits per character, which no English sentence
costs it once it reads as it learned to.
"""

import string
import sys

import torch

import charlm

DEAR = "Dear John, I went to the market this morning and bought some bread and a little cheese."
TAILS = ("ear John, I went to the market this morning.",
         "e rain had stopped by the time we reached the farm.",
         "o you know the way to the station from here?")
WRONG = 3.0  # bits per character


def bits(model: charlm.RNNLM, vocab: charlm.Vocab, text: str) -> float:
    return charlm.evaluate_ids(model, torch.tensor(vocab[list(text)])).bits_per_token


def main(name: str) -> None:
    run = charlm.load(name)
    model, vocab = run.model, run.vocab
    preamble = torch.tensor(vocab[["\n", "\n"]])
    config = charlm.GenerateConfig(num_preds=80, seed=0)
    for label, start in (("from zeros", None), ("after a blank line", preamble)):
        model.preamble = start
        print(f"{label}: {bits(model, vocab, DEAR):.2f} bits/char for {DEAR!r}; "
              f"generate writes {charlm.generate(model, vocab, 'Dear John,', config)[0]!r}")
        wrong = [letter + tail[:2] for letter in string.ascii_uppercase for tail in TAILS
                 if bits(model, vocab, letter + tail) > WRONG]
        print(f"  {len(wrong)} of {26 * len(TAILS)} beginnings above {WRONG} bits/char: "
              f"{', '.join(wrong) or 'none'}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "english")
