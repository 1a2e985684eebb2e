"""The author split of pg-authors.txt: whole authors held out, not the file's tail.

    python training-runs/english/split.py ../shared/data OUT

The 77 authors of the manifest, sorted by name: index % 10 == 4 validates, index % 10 == 9 tests,
the rest trains. The books keep the file's order. The manifest's character counts include the blank
line that joins each book to the next, so they cut the file back into its books. Writes OUT/train.txt,
OUT/val.txt, OUT/test.txt, and OUT/english-train-val-test.txt: the training authors, then as much of
the validation and test authors as makes charlm's 90 / 5 / 5 split of a text file fall at their
boundaries.
"""

import csv
import sys
from pathlib import Path


def part_of(index: int) -> str:
    return "val" if index % 10 == 4 else "test" if index % 10 == 9 else "train"


def split(data: Path) -> dict[str, str]:
    with (data / "pg-authors.manifest.tsv").open(encoding="utf-8") as f:
        books = list(csv.DictReader(f, delimiter="\t"))
    text = (data / "pg-authors.txt").read_text(encoding="utf-8")
    authors = sorted({book["path"].split("/")[0] for book in books})
    parts = {author: part_of(i) for i, author in enumerate(authors)}
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    start = 0
    for book in books:
        end = start + int(book["characters"])
        out[parts[book["path"].split("/")[0]]].append(text[start:end])
        start = end
    return {name: "".join(pieces) for name, pieces in out.items()}


def main() -> None:
    data, folder = Path(sys.argv[1]), Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    parts = split(data)
    for name, text in parts.items():
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
        print(f"{name}: {len(text):,} characters")
    held = int(len(parts["train"]) / 0.9 * 0.05) + 10  # 5 % each of the whole, as charlm cuts it
    joined = parts["train"] + parts["val"][:held] + parts["test"][:held]
    (folder / "english-train-val-test.txt").write_text(joined, encoding="utf-8")


if __name__ == "__main__":
    main()
