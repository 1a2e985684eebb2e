"""How fast a page of `charlm export RUN page.html` writes, in Debian's chromium on this machine: a
2 x 256 LSTM (the issue's yardstick; random weights, which cost what trained ones do) and, with
``--run``, any run. Prints characters per second (prefix read and characters written, greedy),
the median of ``--repeats`` writes of ``--chars`` characters, and the page's size.

    python -m benchmarks.export_page
    python -m benchmarks.export_page --run english --chars 1000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from charlm import RNNLM, ModelConfig, Vocab
from charlm.checkpoint import Run, load
from charlm.export import export

CHROMIUM = "/usr/bin/chromium"


def lstm_2x256() -> Run:
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(vocab_size=90, num_hiddens=256, cell="lstm", impl="builtin", num_layers=2,
                              embedding=64)).eval()
    return Run(model, Vocab([chr(32 + i) for i in range(89)]), None, Path("lstm-2x256"))


def rates(page_file: Path, chars: int, repeats: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        page = browser.new_context(offline=True).new_page()
        page.goto(page_file.as_uri())
        page.wait_for_selector("body[data-ready='true']")
        page.fill("#write-prefix", "The ")
        page.fill("#write-num-preds", str(chars))
        page.set_checked("#write-greedy", True)
        found = []
        for _ in range(repeats + 1):  # the first write warms the JIT up and is not counted
            page.eval_on_selector("#write-out", "e => { delete e.dataset.done; }")
            page.click("#write-go")
            page.wait_for_selector("#write-out[data-done='true']", timeout=600_000)
            found.append(float(page.get_attribute("#write-speed", "data-rate")))
        browser.close()
    return found[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a run folder, or english (default: a 2 x 256 LSTM)")
    parser.add_argument("--chars", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run = load(args.run) if args.run else lstm_2x256()
    with tempfile.TemporaryDirectory() as tmp:
        page_file = export(run, Path(tmp) / "page.html")
        found = rates(page_file, args.chars, args.repeats)
        c = run.model.config
        median = statistics.median(found)
        print(f"{c.num_layers} x {c.num_hiddens} {c.cell.upper()}: {median:,.0f} characters/s "
              f"(median of {len(found)}: {', '.join(f'{r:,.0f}' for r in found)}), page "
              f"{page_file.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
