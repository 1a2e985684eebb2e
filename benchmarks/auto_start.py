"""The grid rule 7 of the auto recipe is fitted on (docs/auto.md): on texts of several sizes and
scripts, for budgets of 2 and 10 minutes, does a run that starts from charlm's English model end
better than the auto recipe's new model?

Every run is `charlm train TEXT --max-minutes M` with the start forced one way or the other, and
is scored on the 50,000 characters (20,000 for the lyrics) that follow the text in its source (the
best validation weights, bits per character). The English model alone, not fine-tuned, is scored
too. One JSON line per run goes to a results file; a run already there is skipped, so the grid fills
in over several sittings.
Run nothing else while it measures: the budget is wall-clock time.

    python -m benchmarks.auto_start --minutes 2
    python -m benchmarks.auto_start --minutes 10 --texts unseen-authors-5m shakespeare-1m
    python -m benchmarks.auto_start --table
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
import zipfile
from pathlib import Path

from charlm import train
from charlm.checkpoint import load, trained_tokens
from charlm.data.bookshelf import books_of, read_manifest
from charlm.data.gutenberg import without_boilerplate
from charlm.data.textfiles import read_file_text
from charlm.evaluation import evaluate_run
from charlm.training import auto

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "auto-start.jsonl"
HELD_OUT = 50_000


def _data() -> Path:
    return Path(os.environ.get("CHARLM_DATA", "../shared/data"))


def _war_of_the_worlds() -> str:
    return "".join(without_boilerplate([read_file_text(_data() / "36-0.txt")]))


def _shakespeare() -> str:
    return (_data() / "tinyshakespeare.txt").read_text(encoding="utf-8")


def _unseen_authors() -> str:
    """The books of pg-authors's test authors, whom the English model never read."""
    manifest = Path(__file__).resolve().parents[1] / "src" / "charlm" / "data" / "pg-authors.manifest.tsv"
    with (_data() / "pg-authors.txt").open(encoding="utf-8", newline="") as corpus:
        chunks = iter(lambda: corpus.read(1 << 22), "")
        return "".join(books_of(chunks, read_manifest(manifest), "test"))


# Debian's fortune files: quotations and sayings in German and Spanish, public prose in the Latin
# alphabet other than English (apt-get install fortunes-de fortunes-es).
FORTUNES = Path("/usr/share/games/fortunes")


def _fortunes(language: str, names: tuple[str, ...]) -> str:
    folder = FORTUNES / language
    if not folder.is_dir():
        raise SystemExit(f"{folder} is missing: apt-get install fortunes-{language}")
    return "".join((folder / name).read_text(encoding="utf-8") for name in names)


def _german() -> str:
    return _fortunes("de", ("zitate",))


def _spanish() -> str:
    names = sorted(p.name for p in (FORTUNES / "es").glob("*.fortunes"))
    return _fortunes("es", tuple(names))


def _jaychou() -> str:
    with zipfile.ZipFile(_data() / "jaychou_lyrics.txt.zip") as archive:
        return io.TextIOWrapper(archive.open("jaychou_lyrics.txt"), encoding="utf-8").read()


# name -> (the source, where the text starts in it, its length, the held-out length after it)
TEXTS = {
    "war-of-the-worlds-20k": (_war_of_the_worlds, 30_000, 20_000, HELD_OUT),
    "war-of-the-worlds-150k": (_war_of_the_worlds, 30_000, 150_000, HELD_OUT),
    "shakespeare-1m": (_shakespeare, 0, 1_000_000, HELD_OUT),
    "unseen-authors-5m": (_unseen_authors, 0, 5_000_000, HELD_OUT),
    # German and Spanish: nearly all their characters are in the English model's alphabet
    "german-150k": (_german, 0, 150_000, HELD_OUT),
    "german-1m": (_german, 0, 1_000_000, HELD_OUT),
    "spanish-150k": (_spanish, 0, 150_000, HELD_OUT),
    # Chinese, 63,000 characters in all: most of them are not in the English model's alphabet
    "jaychou-lyrics": (_jaychou, 0, 43_000, 20_000),
}
STARTS = ("scratch", "english")
# A start and the settings it adds. "english-every-row" gives every new character a row, as a new
# model's vocabulary does: rule 7's threshold makes rare characters <unk>, which is cheaper to
# predict than each of them, so on a text in another script only this compares like with like.
VARIANTS = {"scratch": ("scratch", {}), "english": ("english", {}),
            "english-every-row": ("english", {"extend_min_count": 1})}


def write_texts(name: str, folder: Path) -> tuple[Path, Path]:
    source, begin, size, held = TEXTS[name]
    text = source()
    if len(text) < begin + size + held:
        raise SystemExit(f"{name}: the source has {len(text):,} characters, fewer than the grid needs")
    paths = folder / f"{name}.txt", folder / f"{name}.held-out.txt"
    paths[0].write_text(text[begin:begin + size], encoding="utf-8")
    paths[1].write_text(text[begin + size:begin + size + held], encoding="utf-8")
    return paths


def bits(run: str | Path, held_out: Path) -> float | None:
    try:
        return evaluate_run(run, corpus=str(held_out), device="cpu")[0].bits_per_token
    except ValueError as err:  # a text in a script the model never saw
        print(f"  not scored: {err}")
        return None


def measure(name: str, minutes: float, start: str, folder: Path) -> dict:
    text, held_out = write_texts(name, folder)
    forced, extra = VARIANTS[start]
    given = {"corpus": str(text), "max_minutes": minutes, "device": "cpu", "sample_every": "0", **extra}
    began = time.perf_counter()
    config, choice, data = auto.configure(given, start=forced)
    print(" ", auto.describe(choice, config), flush=True)
    out = folder / f"{name}-{minutes:g}-{start}"
    result = train(config, out=out, data=data)
    model = config.model
    return {"text": name, "minutes": minutes, "start": start, "bits": bits(out, held_out),
            "val_loss": result.val.loss if result.val else None,
            "seconds": round(time.perf_counter() - began), "model": f"{model.num_layers}x{model.num_hiddens}",
            "passes": round(choice.epochs, 2),
            "rule": choice.start.why, "english_tokens": trained_tokens(load("english")),
            "when": time.strftime("%Y-%m-%d %H:%M")}


def zero_shot(name: str, folder: Path) -> dict:
    _, held_out = write_texts(name, folder)
    return {"text": name, "minutes": 0, "start": "english", "bits": bits("english", held_out),
            "english_tokens": trained_tokens(load("english")), "when": time.strftime("%Y-%m-%d %H:%M")}


def done(results: Path) -> list[dict]:
    if not results.is_file():
        return []
    return [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines() if line.strip()]


def table(rows: list[dict]) -> str:
    """One line per text and budget: bits per character from scratch, from English, and the gain."""
    lines = ["| text | minutes | new model (auto) | from English, fine-tuned | change | English alone | "
             "from English, every new character a row |", "|---|---:|---:|---:|---:|---:|---:|"]
    latest = {(r["text"], r["minutes"], r["start"]): r for r in rows}  # the last run of each wins
    alone = {t: r["bits"] for (t, m, s), r in latest.items() if m == 0}
    for text in TEXTS:
        for minutes in sorted({m for t, m, _ in latest if t == text and m}):
            scratch, english = (latest.get((text, minutes, s), {}).get("bits") for s in STARTS)
            change = f"{100 * (english / scratch - 1):+.1f} %" if scratch and english else "—"
            every = latest.get((text, minutes, "english-every-row"), {}).get("bits")
            cells = [f"{b:.3f}" if b else "—" for b in (scratch, english, alone.get(text), every)]
            lines.append(f"| {text} | {minutes:g} | {cells[0]} | {cells[1]} | {change} | {cells[2]} "
                         f"| {cells[3]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", nargs="+", choices=list(TEXTS), default=list(TEXTS))
    parser.add_argument("--minutes", type=float, nargs="+", default=[2.0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--starts", nargs="+", choices=list(VARIANTS), default=list(STARTS))
    parser.add_argument("--again", action="store_true", help="measure runs already in the results again")
    parser.add_argument("--table", action="store_true", help="print the results as a table and stop")
    args = parser.parse_args()
    if args.table:
        print(table(done(args.results)))
        return
    tokens = trained_tokens(load("english"))
    have = {(r["text"], r["minutes"], r["start"]) for r in done(args.results)
            if r.get("english_tokens") == tokens}  # runs from other English weights are measured again
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.texts:
            jobs = [(0.0, "english")] + [(m, s) for m in args.minutes for s in args.starts]
            for minutes, start in jobs:
                if (name, minutes, start) in have and not args.again:
                    continue
                print(f"{name}, {minutes:g} min, from {start}", flush=True)
                row = measure(name, minutes, start, Path(tmp)) if minutes else zero_shot(name, Path(tmp))
                print(f"  {row['bits']} bits/char", flush=True)
                with args.results.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(table(done(args.results)))


if __name__ == "__main__":
    main()
