"""Rerun the book's experiments (charlm's recipes) and rewrite docs/reproductions.md.

    python -m benchmarks.reproduce                       # every recipe, seeds 0 1 2 (about 35 minutes)
    python -m benchmarks.reproduce --recipes rnn-scratch --seeds 0 --epochs 50 --no-doc  # a quick look
    python -m benchmarks.reproduce --seeds               # no runs: rewrite the doc from the results file

For each recipe and seed: the final training perplexity (what the book reports), tokens per second
on this machine, the perplexity on held-out text of the same book (what the book never shows), and
a greedy sample. The table gives the median over seeds beside the book's figure. Results of earlier
runs are kept in docs/reproductions.jsonl; the document is built from the latest full-length run of
each (recipe, seed), so seeds can be run in separate sittings. The hand-written findings below the
NOTES marker in the document are kept when it is rewritten.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from charlm.config import from_recipe, load_recipe, recipe_names
from charlm.training.run import train

DOC = Path(__file__).resolve().parents[1] / "docs" / "reproductions.md"
NOTES = "<!-- hand-written findings below: kept when benchmarks/reproduce.py rewrites this file -->"


def run_one(recipe: str, seed: int, epochs: int | None) -> dict:
    """Train one recipe with one seed; validation and a greedy sample come at the last epoch only."""
    config = from_recipe(recipe, seed=seed, device="cpu", **({"epochs": epochs} if epochs else {}))
    config = config.replace(eval_every=0, sample_every=config.epochs)
    start = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - start
    at = load_recipe(recipe).get("book_perplexity_at", {})
    return {"recipe": recipe, "seed": seed, "epochs": config.epochs, "train_ppl": result.perplexity,
            "ppl_at": {str(r["epoch"]): r["train_ppl"] for r in result.history if str(r["epoch"]) in at},
            "tokens_per_sec": statistics.median(r["tokens_per_sec"] for r in result.history),
            "val_ppl": result.val.perplexity if result.val else float("nan"), "seconds": seconds,
            "sample": result.history[-1].get("sample") or ""}


def latest_full_runs(results: Path) -> list[dict]:
    """The last recorded full-length run of each (recipe, seed), in recipe then seed order."""
    latest: dict[tuple[str, int], dict] = {}
    if results.exists():
        for line in results.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            # A row with "overrides" was made with settings the recipe no longer has.
            current = row["recipe"] in recipe_names() and not row.get("overrides")
            if current and row["epochs"] == from_recipe(row["recipe"]).epochs:
                latest[row["recipe"], row["seed"]] = row
    return [latest[key] for key in sorted(latest)]


def at_epochs(recipe: str, mine: list[dict]) -> str:
    """'epoch 50: 8.86 / 9.1' for each epoch the book gives a figure for (book / our median)."""
    parts = []
    for epoch, book in load_recipe(recipe).get("book_perplexity_at", {}).items():
        ours = [r["ppl_at"][epoch] for r in mine if epoch in r.get("ppl_at", {})]
        if ours:
            parts.append(f"{epoch}: {book:g} / {statistics.median(ours):.2f}")
    return "; ".join(parts)


def table(rows: list[dict]) -> str:
    lines = ["| recipe | the book reports | perplexity (median; seeds) | by epoch (book / ours) | "
             "held-out perplexity | tokens/s | minutes |", "|---|---|---|---|---|---|---|"]
    for recipe in dict.fromkeys(r["recipe"] for r in rows):
        mine = [r for r in rows if r["recipe"] == recipe]
        ppl = statistics.median(r["train_ppl"] for r in mine)
        seeds = " / ".join(f"{r['train_ppl']:.2f}" for r in mine)
        lines.append(f"| {recipe} | {load_recipe(recipe)['book_reports']} | {ppl:.2f} ({seeds}) | "
                     f"{at_epochs(recipe, mine)} | {statistics.median(r['val_ppl'] for r in mine):.1f} | "
                     f"{statistics.median(r['tokens_per_sec'] for r in mine):,.0f} | "
                     f"{statistics.median(r['seconds'] for r in mine) / 60:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="*", default=None, help="default: all")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2],
                        help="seeds to run (none: only rewrite the document from --results)")
    parser.add_argument("--epochs", type=int, default=None, help="override (default: the recipe's)")
    parser.add_argument("--results", type=Path, default=DOC.with_suffix(".jsonl"),
                        help="raw results, one JSON line per run (appended)")
    parser.add_argument("--no-doc", dest="write_doc", action="store_false",
                        help="do not rewrite docs/reproductions.md")
    args = parser.parse_args()
    rows = []
    # The book's experiments: recipes that say what the book reports (not the quality recipes).
    for recipe in args.recipes or [r for r in recipe_names() if "book_reports" in load_recipe(r)]:
        for seed in args.seeds:
            row = run_one(recipe, seed, args.epochs)
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
            with open(args.results, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    if args.write_doc:
        rows = latest_full_runs(args.results)
        notes = DOC.read_text(encoding="utf-8").partition(NOTES)[2] if DOC.exists() else ""
        DOC.write_text(document(rows) + f"\n{NOTES}{notes or chr(10)}", encoding="utf-8")
        print(f"wrote {DOC}")
    print(table(rows))


def document(rows: list[dict]) -> str:
    machine = (f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
               f"{time.strftime('%Y-%m-%d')}")
    samples = "\n".join(f"- **{r['recipe']}** (seed {r['seed']}): `{r['sample']}`" for r in rows
                        if r["seed"] == min(x["seed"] for x in rows if x["recipe"] == r["recipe"]))
    return f"""# Reproductions of the book's experiments

Written by `python -m benchmarks.reproduce` ({machine}). Each recipe (`charlm recipes`) is trained
with each seed for its full number of epochs; "perplexity" is the training perplexity of the last
epoch, the figure the book reports; "held-out perplexity" is measured on the last 10 % of the same
book (validation 5 % + test 5 %, never trained on), which the book never shows; tokens/s is the
median over epochs. "By epoch" sets the training perplexity at the epochs the book reports beside
the book's figure.

{table(rows)}

The book's experiments train on the first 10,000 characters for hundreds of epochs: the models
memorise them (training perplexity near 1) while the perplexity on the rest of the book grows —
see `perplexity.png` in any run folder.

## Greedy samples after the book's prefix

{samples}
"""


if __name__ == "__main__":
    main()
