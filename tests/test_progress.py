"""What a run shows while it trains: a bar over its tokens on a terminal that ends where the time
budget does, and one log line per record."""

from __future__ import annotations

import io
import sys
import time

from charlm.training.progress import TokenBar, format_record


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_bar_counts_tokens_and_ends_where_the_budget_runs_out(monkeypatch):
    screen = Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    with TokenBar(total=1_000_000, show=True) as bar:
        bar.advance(10_000, planned=1_000_000, seconds_left=None)
        assert bar.bar.total == 1_000_000 and bar.bar.n == 10_000
        time.sleep(0.1)
        # 20,000 tokens in about 0.1 s with 1 s of budget left: about 200,000 more fit, not 980,000
        bar.advance(10_000, planned=1_000_000, seconds_left=1.0)
        assert 100_000 < bar.bar.total < 300_000
        bar.show({"train_ppl": 7.25})
        bar.bar.refresh()
    assert "tok" in screen.getvalue() and "perplexity 7.25" in screen.getvalue()


def test_in_a_log_or_on_another_rank_there_is_no_bar(monkeypatch):
    screen = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", screen)
    with TokenBar(total=100, show=True) as bar:
        bar.advance(50, planned=100, seconds_left=None)
    with TokenBar(total=100, show=False) as bar:
        bar.advance(50, planned=100, seconds_left=None)
    assert screen.getvalue() == ""


def test_a_record_is_one_line_with_where_in_the_run_it_was_made():
    record = {"epoch": 1, "batch": 37, "batches": 100, "step": 2000, "train_ppl": 5.5,
              "tokens_per_sec": 1234.4, "val_ppl": 4.0, "val_bpt": 2.0, "val_tokens": 1_000_000}
    assert format_record(record) == ("epoch 1 (37%, step 2,000): perplexity 5.50, 1234 tokens/sec, "
                                     "validation perplexity 4.00 (2.000 bits/token on the first "
                                     "1,000,000 tokens)")
