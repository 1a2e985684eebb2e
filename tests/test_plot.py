"""perplexity.png: a curve a newcomer can read after a 3-epoch run and after a 500-epoch one."""

import math
import subprocess
import sys
import warnings

import pytest

from charlm.training import plot
from charlm.training.plot import (
    CEILING,
    epoch_limits,
    framed,
    perplexity_figure,
    plain_number,
    plain_ticks,
    plot_perplexity,
)


def short_run(val_epochs):
    """Three epochs, validation measured at `val_epochs` only (as --eval-every leaves it)."""
    history = [{"epoch": e, "train_ppl": p} for e, p in zip((1, 2, 3), (9.3, 6.1, 4.6))]
    for record in history:
        if record["epoch"] in val_epochs:
            record["val_ppl"] = record["train_ppl"] * 1.08
    return history


def long_run():
    """500 epochs overfitting: training falls from ~25 to ~1.05, validation (every 50) climbs to 150."""
    history = [{"epoch": e, "train_ppl": 1.05 + 24 * math.exp(-e / 40)} for e in range(1, 501)]
    for record in history[49::50]:
        record["val_ppl"] = 5 * 30 ** ((record["epoch"] - 50) / 450)
    return history


def narrow_run():
    """A plateau: everything between 4.1 and 4.35, far less than one decade."""
    return [{"epoch": e, "train_ppl": 4.3 - 0.02 * e, "val_ppl": 4.35 - 0.01 * e} for e in range(1, 11)]


def word_run():
    """A word model from ~5,000 down to ~120, with one epoch that overflowed to inf."""
    history = [{"epoch": e, "train_ppl": 9000 * 0.6**e + 120} for e in range(1, 21)]
    history[4]["train_ppl"] = math.inf
    history[-1]["val_ppl"] = 310.0
    return history


def diverged_run():
    """lr 100 without clipping: a finite perplexity of 1e162, then inf (test_faults drives one)."""
    return [{"epoch": 1, "train_ppl": 30.0, "val_ppl": 25.0}, {"epoch": 2, "train_ppl": 1.1e162},
            {"epoch": 3, "train_ppl": math.inf}]


HISTORIES = {"short": short_run({3}), "long": long_run(), "narrow": narrow_run(), "word": word_run(),
             "diverged": diverged_run()}


def y_tick_labels(fig):
    """The y labels as drawn: the texts are only filled in when the figure is rendered."""
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_ylim()
    return [t.get_text() for t in ax.get_yticklabels() if lo <= t.get_position()[1] <= hi]


def line(fig, name):
    return next(ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith(name))


@pytest.mark.parametrize(("lo", "hi", "ticks"), [
    (1, 150, [1, 2, 5, 10, 20, 50, 100]),  # 1, 10, 100 alone are too few: 1-2-5 per decade
    (4, 9, [4, 5, 6, 7, 8, 9]),  # within a decade only the finest ladder gives four
    (4.1, 4.3, [4.1, 4.15, 4.2, 4.25, 4.3]),  # no ladder fits: evenly spaced, as on a linear axis
    (1, 1e6, [1, 10, 100, 1000, 1e4, 1e5, 1e6]),  # wide enough for one tick per decade
])
def test_ticks_are_round_numbers_at_least_four_of_them(lo, hi, ticks):
    assert plain_ticks(lo, hi) == pytest.approx(ticks)


@pytest.mark.parametrize(("value", "text"), [(1.5, "1.5"), (20.0, "20"), (1.2 * 10, "12"),
                                             (120000.0, "120,000"), (4.1499999999999995, "4.15")])
def test_plain_number_has_no_exponent_or_float_noise(value, text):
    assert plain_number(value) == text


@pytest.mark.parametrize("name", HISTORIES)
def test_y_labels_are_several_plain_numbers_whatever_the_range(name):
    labels = y_tick_labels(perplexity_figure(HISTORIES[name]))
    assert len(labels) >= 3, labels
    for text in labels:
        assert not any(mark in text for mark in ("×", "10^", "$", "e+", "e-")), labels
        float(text.replace(",", ""))  # a plain number, nothing else


def test_a_diverged_run_keeps_the_axis_at_the_ceiling_with_a_handful_of_labels():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tight_layout warns when 160-digit labels leave no room
        fig = perplexity_figure(diverged_run())
        labels = y_tick_labels(fig)
    assert labels[-1] == "1,000,000" and len(labels) <= 8
    assert fig.axes[0].get_xlim() == pytest.approx((0.92, 3.08))  # epochs 2 and 3 stay in view


@pytest.mark.parametrize(("values", "shown"), [
    ([5.0, 4.0], [5.0, 4.0]),
    ([30.0, 1.1e162, math.inf], [30.0, CEILING]),  # the curve leaves through the top of the frame
    ([math.inf, math.nan], [1.0, CEILING]),  # nothing to show: an empty frame of the usual range
])
def test_the_y_axis_frames_every_value_up_to_the_ceiling(values, shown):
    assert framed(values) == shown


def test_one_epoch_gets_a_whole_epoch_either_side():
    assert epoch_limits([1]) == (0, 2)
    assert epoch_limits([1, 2, 3]) == pytest.approx((0.92, 3.08))  # 4% of the 2-epoch span


@pytest.mark.parametrize(("val_epochs", "expected"), [({3}, [3]), ({1, 2, 3}, [1, 2, 3])])
def test_validation_is_a_line_with_markers_so_one_point_shows(val_epochs, expected):
    val = line(perplexity_figure(short_run(val_epochs)), "validation")
    assert list(val.get_xdata()) == expected
    assert val.get_marker() not in (None, "", " ", "None")
    assert val.get_linestyle() == "-"


def test_validation_every_50_epochs_is_drawn_at_every_measurement():
    val = line(perplexity_figure(long_run()), "validation")
    assert list(val.get_xdata()) == list(range(50, 501, 50))


def test_legend_gives_the_last_values_and_the_best_validation_when_it_came_earlier():
    labels = [t.get_text() for t in perplexity_figure(long_run()).axes[0].get_legend().get_texts()]
    assert labels == ["train (last 1.05)", "validation (last 150, best 5 at epoch 50)"]


def test_title_names_the_run_and_the_data_file_not_its_whole_path():
    title = perplexity_figure(short_run({3}), run="lstm-small", data="/home/me/books/novel.txt"
                              ).axes[0].get_title()
    assert "lstm-small" in title and "novel.txt" in title and "/home" not in title
    assert "timemachine" in perplexity_figure(short_run({3}), data="timemachine").axes[0].get_title()


@pytest.mark.parametrize(("token", "ylabel"), [("char", "perplexity (per character)"),
                                               ("word", "perplexity (per token)"),
                                               (None, "perplexity")])
def test_axes_are_labelled_with_units(token, ylabel):
    ax = perplexity_figure(short_run({3}), token=token).axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch", ylabel)


def test_epoch_ticks_are_whole_numbers_even_for_one_epoch():
    fig = perplexity_figure([{"epoch": 1, "train_ppl": 27.0, "val_ppl": 24.5}])
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    epochs = [x for x in ax.get_xticks() if lo <= x <= hi]
    assert 1 in epochs and all(x == int(x) for x in epochs)


def test_plot_perplexity_writes_a_png_titled_with_its_run_folder(tmp_path, monkeypatch):
    drawn = {}

    def spy(history, **kwargs):
        drawn.update(kwargs)
        return perplexity_figure(history, **kwargs)

    monkeypatch.setattr(plot, "perplexity_figure", spy)
    path = tmp_path / "my-run" / "perplexity.png"
    path.parent.mkdir()
    plot_perplexity(short_run({3}), path, data="timemachine", token="char")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert drawn == {"run": "my-run", "data": "timemachine", "token": "char"}
    assert sorted(p.name for p in path.parent.iterdir()) == ["perplexity.png"]  # no temp file left


def test_an_empty_history_writes_nothing(tmp_path):
    plot_perplexity([], tmp_path / "perplexity.png")
    assert not (tmp_path / "perplexity.png").exists()


@pytest.mark.slow
def test_importing_plot_does_not_import_matplotlib():
    code = "import sys; import charlm.training.plot; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_record_from_the_middle_of_an_epoch_sits_at_its_fraction_of_an_epoch():
    # A huge text validates by the clock: batch 250 of 1,000 in epoch 1 is at 0.25, and so on.
    history = [{"epoch": 1, "batch": 250, "batches": 1000, "step": 250, "train_ppl": 9.0, "val_ppl": 8.0},
               {"epoch": 1, "batch": 500, "batches": 1000, "step": 500, "train_ppl": 7.0, "val_ppl": 6.5},
               {"epoch": 1, "train_ppl": 6.0, "val_ppl": 6.0}]
    assert [plot.epochs_done(r) for r in history] == [0.25, 0.5, 1]
    ax = plot.perplexity_figure(history).axes[0]
    assert list(ax.lines[0].get_xdata()) == [0.25, 0.5, 1]
    lo, hi = ax.get_xlim()
    assert lo < 0.25 and hi > 1
