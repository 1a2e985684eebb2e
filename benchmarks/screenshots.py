"""Screenshots of the explorer's five views, for the docs: ``python -m benchmarks.screenshots``.

The server is started on trained runs and the page is driven in Debian's chromium (Playwright) as a
user would drive it: a passage read, a seeded sample written, units found for a preset, two runs
compared and the training curves shown. Each view is saved as ``explorer-<view>.png``.

    python -m benchmarks.screenshots --run runs/tm --run runs/tm-gru --out docs/
    python -m benchmarks.screenshots --run runs/tm --text my_passage.txt --preset "inside quotes"

With one run the Compare view compares it with itself (every difference is zero). The passage read
by default is taken from near the end of the first run's own corpus, the part held out for
validation, so that the model is seen on text it did not train on.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from charlm.data.corpora import read_source
from charlm.serve import start

CHROMIUM = "/usr/bin/chromium"
FALLBACK = ("The Time Traveller (for so it will be convenient to speak of him) was expounding a "
            "recondite matter to us.\n\"You must follow me carefully,\" he said.")


def passage(run_dir: Path, length: int = 900) -> str:
    """About `length` characters of the run's corpus from its last tenth, cut at paragraph breaks."""
    try:
        corpus = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["train"]["corpus"]
        text = read_source(corpus)
    except (OSError, KeyError, ValueError) as err:
        print(f"the run's corpus cannot be read ({err}); a built-in passage is used")
        return FALLBACK
    start_at = text.find("\n\n", int(len(text) * 0.93)) + 2
    end = text.rfind("\n\n", start_at, start_at + length)
    return text[start_at:end if end > start_at else start_at + length].strip()


class Shooter:
    """The page at a fixed size, with a helper to save the viewport as one of the docs' images."""

    def __init__(self, page, out: Path) -> None:
        self.page, self.out = page, out

    def save(self, view: str) -> None:
        path = self.out / f"explorer-{view}.png"
        self.page.screenshot(path=str(path))
        print(f"wrote {path}")

    def tab(self, view: str) -> None:
        self.page.click(f"#tab-{view}")


def shoot_read(s: Shooter, text: str) -> None:
    page = s.page
    page.fill("#read-text", text)
    page.eval_on_selector("#read-text", "box => { box.scrollTop = 0; }")  # the passage's start in view
    page.click("#read-go")
    page.wait_for_selector("#read-result:not([hidden])")
    # The tooltip of a well-predicted character a little into the text: the model's five guesses.
    count = page.locator("#read-out .tok").count()
    page.hover(f"#read-out .tok[data-i='{min(count - 1, 60)}']")
    page.wait_for_selector("#tip:not([hidden])")
    s.save("read")


def shoot_write(s: Shooter, prefix: str, seed: int) -> None:
    page = s.page
    s.tab("write")
    page.fill("#write-prefix", prefix)
    page.fill("#write-num-preds", "400")
    page.fill("#write-temperature", "0.7")
    page.fill("#write-num-samples", "2")
    page.fill("#write-seed-input", str(seed))
    page.click("#write-go")
    page.wait_for_selector("#write-status[data-state='done']", timeout=60_000)
    page.hover("#write-out .sample-text .tok[data-i='40']")
    s.save("write")


def shoot_neurons(s: Shooter, preset: str) -> None:
    page = s.page
    s.tab("neurons")
    page.select_option("#find-preset", preset)
    page.click("#find-go")
    page.wait_for_selector("#find-results .unit-btn", timeout=60_000)
    s.save("neurons")


def shoot_compare(s: Shooter, runs: int) -> None:
    page = s.page
    s.tab("compare")
    page.select_option("#compare-a", "r0")
    page.select_option("#compare-b", "r1" if runs > 1 else "r0")
    page.click("#compare-go")
    page.wait_for_selector("#compare-result:not([hidden])", timeout=60_000)
    s.save("compare")


def shoot_training(s: Shooter) -> None:
    s.tab("training")
    s.page.wait_for_selector("#training-chart svg, #training-chart p")
    s.save("training")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="a run folder (give two to compare)")
    parser.add_argument("--out", default="docs", help="folder for the images (default: docs)")
    parser.add_argument("--text", help="a text file to read (default: a passage of the run's corpus)")
    parser.add_argument("--prefix", default="The Time Traveller ", help="what the samples start from")
    parser.add_argument("--preset", default="space", help="what the units are found for (default: space)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=800)
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    runs = [Path(r) for r in args.run]
    text = Path(args.text).read_text(encoding="utf-8") if args.text else passage(runs[0])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    server = start(runs, host="127.0.0.1", port=0)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto(server.url)
            page.wait_for_selector("body[data-ready='true']")
            s = Shooter(page, out)
            shoot_read(s, text)
            shoot_write(s, args.prefix, args.seed)
            shoot_neurons(s, args.preset)
            shoot_compare(s, len(runs))
            shoot_training(s)
            browser.close()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
