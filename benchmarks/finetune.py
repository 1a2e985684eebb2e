"""What fine-tuning buys: a model of tinyshakespeare fine-tuned on 20 KB of another book, against
models trained on those 20 KB alone, all scored on held-out text of that book.

    python -m benchmarks.finetune                       # 5 + 4 x 2 minutes on 2 cores
    python -m benchmarks.finetune --pretrain-minutes 10 --minutes 3 --book 36-0.txt

The small text is 20 KB of the book after its first 30 KB (past any preamble); the held-out text
is the 50 KB after it. Every run gets the same wall-clock budget and keeps its best validation
weights, which are the ones scored. Prints a markdown table of held-out bits per character.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from charlm import TrainConfig, load, train
from charlm.config import from_recipe
from charlm.data.textfiles import read_file_text
from charlm.evaluation import evaluate_run

RECIPE = "shakespeare-cpu-10min"
# From scratch on 20 KB: the recipe's own model, and a smaller one that overfits less.
SCRATCH = {
    "the recipe's model (2 x 512 LSTM)": {},
    "a small model (1 x 256 LSTM, dropout 0.3)": dict(num_layers=1, num_hiddens=256, dropout=0.0,
                                                       dropout_output=0.3),
}


def texts(book: Path, folder: Path) -> tuple[Path, Path]:
    text = read_file_text(book)  # the book's encoding is found (36-0.txt is Windows-1252)
    small, held_out = folder / "small.txt", folder / "held-out.txt"
    small.write_text(text[30_000:50_000], encoding="utf-8")
    held_out.write_text(text[50_000:100_000], encoding="utf-8")
    return small, held_out


def score(run: Path, held_out: Path) -> tuple[float, str]:
    result, _, what = evaluate_run(run, corpus=str(held_out), device="cpu")
    return result.bits_per_token, what


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--book", default="36-0.txt", help="a file in CHARLM_DATA (default: 36-0.txt)")
    parser.add_argument("--pretrain-minutes", type=float, default=5.0)
    parser.add_argument("--minutes", type=float, default=2.0, help="budget of each run on the small text")
    args = parser.parse_args()
    data = Path(os.environ.get("CHARLM_DATA", "../shared/data"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        small, held_out = texts(data / args.book, work)
        start = time.perf_counter()
        pretrained = train(from_recipe(RECIPE, max_minutes=args.pretrain_minutes, sample_every=0),
                           out=work / "pretrained")
        print(f"pretrained on tinyshakespeare for {args.pretrain_minutes:g} min: validation "
              f"{pretrained.val.loss:.4f} nats/char ({time.perf_counter() - start:.0f} s)")
        budget = dict(max_minutes=args.minutes, epochs=100_000, sample_every=0, eval_every=1, save_every=1,
                      val_rows=1, warmup_steps=5)
        rows = [("tinyshakespeare's model, not fine-tuned", *score(work / "pretrained", held_out))]
        vocab = load(work / "pretrained").vocab
        text = held_out.read_text(encoding="utf-8")
        missing = sum(1 for ch in text if ch not in vocab.token_to_idx)
        print(f"{missing} of {len(text)} held-out characters ({100 * missing / len(text):.2f} %) are not in "
              f"tinyshakespeare's vocabulary: for its models they are <unk>")
        train(TrainConfig.of(corpus=str(small), init_from=str(work / "pretrained"), lr=1e-3,
                             optimizer="adamw", lr_schedule="cosine", min_lr=1e-4, batch_size=32,
                             num_steps=128, device="cpu", **budget), out=work / "tuned")
        rows.append((f"fine-tuned on the 20 KB ({args.minutes:g} min)", *score(work / "tuned", held_out)))
        for name, changes in SCRATCH.items():
            config = from_recipe(RECIPE, corpus=str(small), **budget, **changes)
            folder = work / f"scratch-{len(rows)}"
            train(config, out=folder)
            label = f"from scratch on the 20 KB: {name} ({args.minutes:g} min)"
            rows.append((label, *score(folder, held_out)))
    print(f"\nheld-out text: 50 KB of {args.book}; bits per character (the best validation weights)\n")
    print("| model | held-out bits per character |\n|---|---|")
    for name, bpc, _ in rows:
        print(f"| {name} | {bpc:.3f} |")


if __name__ == "__main__":
    main()
