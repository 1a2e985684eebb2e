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


def shoot_read(s: Shooter, text: str, save: bool = True) -> None:
    page = s.page
    page.fill("#read-text", text)
    page.eval_on_selector("#read-text", "box => { box.scrollTop = 0; }")  # the passage's start in view
    page.click("#read-go")
    page.wait_for_selector("#read-result:not([hidden])")
    # The tooltip of a well-predicted character a little into the text: the model's five guesses.
    count = page.locator("#read-out .tok").count()
    page.hover(f"#read-out .tok[data-i='{min(count - 1, 60)}']")
    page.wait_for_selector("#tip:not([hidden])")
    if save:
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


def shoot_why(s: Shooter, text: str) -> None:
    """Read, with a character clicked: the ones before it coloured by their share in it."""
    page = s.page
    s.tab("read")
    count = page.locator("#read-out .tok").count()
    page.click(f"#read-out .tok[data-i='{min(count - 1, 120)}']")
    page.wait_for_selector("#read-why:not([hidden])")
    page.eval_on_selector("#read-why", "e => e.scrollIntoView({block: 'start'})")
    s.save("why")


def shoot_hold(s: Shooter, unit: int) -> None:
    """Neurons, with a unit switched off: the text read again, and the units ranked by cost."""
    page = s.page
    s.tab("neurons")
    page.select_option("#neuron-layer", index=0)
    page.fill("#neuron-unit", str(unit))
    page.fill("#hold-value", "0")
    page.click("#hold-rank")
    page.wait_for_selector("#hold-ranking .unit-btn", timeout=300_000)
    page.click("#hold-ranking .unit-btn")  # the costliest unit, switched off and the text read again
    page.wait_for_selector("#hold-read-result:not([hidden])", timeout=60_000)
    page.click("#hold-write")
    page.wait_for_selector("#hold-write-result:not([hidden])", timeout=60_000)
    page.eval_on_selector("#hold-card", "e => e.scrollIntoView({block: 'start'})")
    s.save("hold")


def shoot_saved(s: Shooter, browser) -> None:
    """The Read view saved as a file, opened from disk with no network."""
    with s.page.expect_download() as info:
        s.tab("read")
        s.page.click("#save-view")
    saved = s.out / "explorer-saved-view.html"
    info.value.save_as(saved)
    context = browser.new_context(viewport=s.page.viewport_size, offline=True)
    page = context.new_page()
    page.goto(saved.as_uri())
    page.screenshot(path=str(s.out / "explorer-saved.png"))
    print(f"wrote {s.out / 'explorer-saved.png'}")
    context.close()
    saved.unlink()


def shoot_phone(browser, url: str, out: Path, text: str) -> None:
    """Read on a 390-pixel phone screen."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("body[data-ready='true']")
    page.fill("#read-text", text[:300])
    page.click("#read-go")
    page.wait_for_selector("#read-result:not([hidden])")
    page.screenshot(path=str(out / "explorer-phone.png"))
    print(f"wrote {out / 'explorer-phone.png'}")
    context.close()


def shoot_export(browser, run: Path, out: Path, prefix: str) -> None:
    """The page `charlm export RUN page.html` writes, opened from disk, after a greedy sample."""
    from charlm.export import export

    page_file = export(run, out / "explorer-export-page.html")
    context = browser.new_context(viewport={"width": 1000, "height": 600}, offline=True)
    page = context.new_page()
    page.goto(page_file.as_uri())
    page.wait_for_selector("body[data-ready='true']")
    page.fill("#write-prefix", prefix)
    page.fill("#write-num-preds", "600")
    page.fill("#write-temperature", "0.7")
    page.fill("#write-seed-input", "3")
    page.click("#write-go")
    page.wait_for_selector("#write-out[data-done='true']")
    page.screenshot(path=str(out / "explorer-export.png"))
    print(f"wrote {out / 'explorer-export.png'} ({page.inner_text('#write-speed')})")
    context.close()
    page_file.unlink()


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
    parser.add_argument("--unit", type=int, default=0, help="the unit Neurons starts from (default: 0)")
    parser.add_argument("--only", nargs="+", choices=("views", "why", "hold", "saved", "phone", "export"),
                        default=("views", "why", "hold", "saved", "phone", "export"),
                        help="which images to make (default: all)")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    runs = [Path(r) for r in args.run]
    text = Path(args.text).read_text(encoding="utf-8") if args.text else passage(runs[0])
    out = Path(args.out).resolve()  # file:// addresses of what it saves need a full path
    out.mkdir(parents=True, exist_ok=True)
    server = start(runs, host="127.0.0.1", port=0)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto(server.url)
            page.wait_for_selector("body[data-ready='true']")
            s = Shooter(page, out)
            shoot_read(s, text, save="views" in args.only)  # first: the views below start from its text
            if "views" in args.only:
                shoot_write(s, args.prefix, args.seed)
                shoot_neurons(s, args.preset)
                shoot_compare(s, len(runs))
                shoot_training(s)
            if "why" in args.only:
                shoot_why(s, text)
            if "hold" in args.only:
                shoot_hold(s, args.unit)
            if "saved" in args.only:
                shoot_saved(s, browser)
            if "phone" in args.only:
                shoot_phone(browser, server.url, out, text)
            if "export" in args.only:
                shoot_export(browser, runs[0], out, args.prefix)
            browser.close()
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
