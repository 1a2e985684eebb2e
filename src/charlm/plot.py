"""The perplexity curve as a PNG: the book's Animator (d2l §3.4), drawn to a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_perplexity(history: list[dict[str, Any]], path: Path) -> None:
    """Training perplexity per epoch and validation perplexity where measured, log scale."""
    if not history:
        return
    import matplotlib  # imported here: a module import should not pick a plotting backend

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot([r["epoch"] for r in history], [r["train_ppl"] for r in history], label="train")
    val = [(r["epoch"], r["val_ppl"]) for r in history if "val_ppl" in r]
    if val:
        ax.plot(*zip(*val), marker="o", label="validation")
    ax.set(xlabel="epoch", ylabel="perplexity", yscale="log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
