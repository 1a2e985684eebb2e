"""The perplexity curve as a PNG: the book's Animator (d2l §3.4), drawn to a file.

`perplexity_figure` builds the picture from the history and touches no file, so tests can read its
axes; `plot_perplexity` writes it into the run folder. Matplotlib is imported inside them, with the
Agg canvas and without pyplot: importing this module picks no backend and leaves no global figures.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Tick mantissas per decade, coarsest first. A log axis labels only powers of ten by default and
# writes the minor ticks as 9×10^0, so a run whose perplexity stays within one decade got no
# readable label; we take the coarsest ladder that still puts MIN_TICKS plain numbers on the axis.
LADDERS = ((1,), (1, 2, 5), (1, 1.5, 2, 3, 5, 7), (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8, 9))
MIN_TICKS = 4
# No vocabulary we train on reaches a million types, so a perplexity above this is worse than
# guessing uniformly: the run has diverged. The axis stops here and lets such points leave the frame;
# otherwise one epoch at 1e162 squeezes the whole curve into a line and writes 160-digit labels.
CEILING = 1e6
UNITS = {"char": "per character", "word": "per token"}  # what one step of the perplexity counts


def plain_number(value: float) -> str:
    """A tick label without exponents: 1.5 -> '1.5', 20.0 -> '20', 120000.0 -> '120,000'."""
    if value == round(value):
        return f"{round(value):,}"
    return f"{value:.6g}"


def short_number(value: float) -> str:
    """Three significant digits for the legend: 1.0512 -> '1.05', 1234.5 -> '1,234'; an exponent
    only past CEILING, where the number just says the run diverged: 1.1e162 -> '1.1e+162'."""
    return f"{value:,.0f}" if 100 <= value < CEILING else f"{value:.3g}"


def log_limits(values: list[float]) -> tuple[float, float]:
    """The y range for `values` on a log axis, padded 5% of its decades each side so the end points
    sit inside the frame (±5% of the value for a single value, which has no range to pad)."""
    lo, hi = min(values), max(values)
    pad = 0.05 * math.log10(hi / lo) if hi > lo else math.log10(1.05)
    return lo / 10**pad, hi * 10**pad


def framed(values: list[float]) -> list[float]:
    """The values the y axis must show: those up to CEILING, and CEILING itself when some went past
    it (or to inf), so a diverging curve visibly leaves through the top. NaN is dropped.

    [30, 1.1e162, inf] -> [30, 1e6]; [inf] -> [1, 1e6], an empty frame of the usual range."""
    shown = [y for y in values if 0 < y <= CEILING]
    if not shown:
        return [1.0, CEILING]
    if any(y > CEILING for y in values):
        shown.append(CEILING)
    return shown


def epochs_done(record: dict[str, Any]) -> float:
    """Where a record falls on the x axis: its epoch, or for a record made mid-epoch (a huge text,
    reporting by steps or by the clock) the fraction of epochs done: batch 250 of 1,000 in epoch 3
    is at 2.25."""
    if "batch" in record:
        return record["epoch"] - 1 + record["batch"] / record["batches"]
    return record["epoch"]


def epoch_limits(epochs: list[float]) -> tuple[float, float]:
    """The x range: every epoch, padded 4%; one epoch gets a whole epoch each side, since the
    default, 0.96 to 1.04, has no whole epoch to label."""
    first, last = min(epochs), max(epochs)
    pad = 0.04 * (last - first) if last > first else 1
    return first - pad, last + pad


def plain_ticks(lo: float, hi: float) -> list[float]:
    """Readable tick values in [lo, hi] for a log axis: round numbers, at least MIN_TICKS of them.

    (1, 150) -> [1, 2, 5, 10, 20, 50, 100]: one tick per decade would give only 1, 10, 100.
    (4, 9) -> [4, 5, 6, 7, 8, 9]: within one decade only the finest ladder gives four.
    A range narrower still is nearly linear, so it gets evenly spaced round numbers, fewer if need be:
    (4.1, 4.3) -> [4.1, 4.15, 4.2, 4.25, 4.3].
    """
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for ladder in LADDERS:
        # round() drops float noise such as 1.2 * 10 = 12.000000000000002
        ticks = [round(m * 10.0**k, 12) for k in decades for m in ladder]
        ticks = [t for t in ticks if lo <= t <= hi]
        if len(ticks) >= MIN_TICKS:
            return ticks
    from matplotlib.ticker import MaxNLocator

    ticks = MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
    return [round(float(t), 12) for t in ticks if lo <= t <= hi]


def title_of(run: str | None, data: str | None) -> str:
    """'run-small · timemachine'; a user file is named by its file name, not its whole path."""
    return " · ".join(part for part in (run, data and Path(data).name) if part)


def validation_label(val: list[tuple[float, float]]) -> str:
    """The last and the best validation perplexity: best.safetensors holds the best, which an
    overfitting run reaches long before its last epoch."""
    best_epoch, best = min(val, key=lambda point: point[1])
    last = f"validation (last {short_number(val[-1][1])}"
    if best_epoch == val[-1][0]:
        return last + ")"
    return last + f", best {short_number(best)} at epoch {plain_number(round(best_epoch, 2))})"


def perplexity_figure(history: list[dict[str, Any]], *, run: str | None = None,
                      data: str | None = None, token: str | None = None) -> Figure:
    """Training perplexity per epoch and validation perplexity where measured, on a log axis.

    `run` (the run folder's name) and `data` (a corpus name or a file path) make the title;
    `token` ('char' or 'word') gives the unit of the y axis. `history` holds at least one epoch.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator

    fig = Figure(figsize=(6.4, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    train = [(epochs_done(r), r["train_ppl"]) for r in history]
    val = [(epochs_done(r), r["val_ppl"]) for r in history if r.get("val_ppl") is not None]
    # Markers show where each epoch ended while there are few; a lone point has no line to show.
    ax.plot(*zip(*train), marker="." if len(train) <= 30 else None,
            label=f"train (last {short_number(train[-1][1])})")
    if val:  # measured only every --eval-every epochs: the markers show which
        ax.plot(*zip(*val), marker="o", markersize=5, label=validation_label(val))
    ax.set_yscale("log")
    ax.set_ylim(*log_limits(framed([y for _, y in train + val])))
    ax.set_xlim(*epoch_limits([e for e, _ in train]))  # autoscaling would skip the epochs at inf
    ax.yaxis.set_major_locator(FixedLocator(plain_ticks(*ax.get_ylim())))
    ax.yaxis.set_major_formatter(lambda y, _: plain_number(y))
    ax.yaxis.set_minor_locator(NullLocator())  # unlabelled minor ticks would only crowd the labels
    # No epoch 1.5, or 60, while every record ends an epoch; a huge text's mid-epoch records need fractions.
    whole = all("batch" not in r for r in history)
    ax.xaxis.set_major_locator(MaxNLocator(integer=whole, steps=[1, 2, 5, 10]))
    unit = UNITS.get(token or "")
    ax.set(xlabel="epoch", ylabel=f"perplexity ({unit})" if unit else "perplexity",
           title=title_of(run, data))
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_perplexity(history: list[dict[str, Any]], path: Path, *, data: str | None = None,
                    token: str | None = None) -> None:
    """Draw `perplexity_figure` to `path`, titled with the name of the folder it is written into."""
    if not history:
        return
    fig = perplexity_figure(history, run=path.resolve().parent.name, data=data, token=token)
    # Written beside and renamed, so a reader never sees half a PNG; checkpoint.remove_temp_files
    # knows this name.
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    tmp.replace(path)
