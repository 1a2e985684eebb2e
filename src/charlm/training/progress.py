"""What a training run shows while it runs: a bar over its tokens on a terminal, a line in the log
at each record, and the signals that stop it between two batches."""

from __future__ import annotations

import signal
import time
from typing import Any

from tqdm import tqdm


class TokenBar:
    """On a terminal, a bar over the run's tokens with the rate and the time left; nothing in a log
    or on a rank other than 0 (tqdm draws only on a terminal)."""

    def __init__(self, total: int, show: bool) -> None:
        self.bar = tqdm(total=total, unit="tok", unit_scale=True, disable=None if show else True,
                        leave=False, dynamic_ncols=True)
        self.began, self.done = time.perf_counter(), 0  # this session's tokens, from when

    def __enter__(self) -> TokenBar:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def advance(self, tokens: int, planned: int, seconds_left: float | None) -> None:
        """Move on by `tokens`. Under a time budget (`seconds_left`) the bar ends where the budget runs
        out at this session's speed, if that comes before the `planned` tokens, so the time left it
        shows is the budget's."""
        if self.bar.disable:
            return
        self.done += tokens
        if seconds_left is not None:
            rate = self.done / max(time.perf_counter() - self.began, 1e-9)
            self.bar.total = int(min(planned, self.bar.n + tokens + max(seconds_left, 0) * rate))
        self.bar.update(tokens)

    def show(self, record: dict[str, Any]) -> None:
        self.bar.set_postfix_str(f"perplexity {record['train_ppl']:.2f}", refresh=False)


def format_record(record: dict[str, Any]) -> str:
    """One line of the log: ``epoch 3: perplexity ...``, or mid-epoch ``epoch 1 (37%, step 2,000): ...``."""
    where = f"epoch {record['epoch']}"
    if "batch" in record:
        where += f" ({record['batch'] / record['batches']:.0%}, step {record['step']:,})"
    text = f"{where}: perplexity {record['train_ppl']:.2f}, {record['tokens_per_sec']:.0f} tokens/sec"
    if "val_ppl" in record:
        text += f", validation perplexity {record['val_ppl']:.2f} ({record['val_bpt']:.3f} bits/token"
        text += f" on the first {record['val_tokens']:,} tokens)" if "val_tokens" in record else ")"
    if record.get("stopped"):
        text += f"; stopped: {record['stopped']}"
    if record.get("sample"):
        text += f"\n  {record['sample']}"
    return text


class SignalFlag:
    """Record SIGINT / SIGTERM instead of raising at an arbitrary point, so that the loop stops
    between two batches, with model and optimizer consistent, and saves. A second signal of the
    same kind gets the original handler (Ctrl-C twice stops at once)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.saved: dict[int, Any] = {}

    def __enter__(self) -> SignalFlag:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self.saved[signum] = signal.signal(signum, self._record)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _record(self, signum: int, frame: Any) -> None:
        self.signum = signum
        signal.signal(signum, self.saved[signum])

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.saved.items():
            signal.signal(signum, handler)
