"""Project Gutenberg's header and licence are left out, in every form they have had, wherever the
chunks of a text are cut; other texts pass through untouched."""

from __future__ import annotations

import random

import pytest

from charlm.data import gutenberg
from charlm.data.gutenberg import without_boilerplate

BODY = ("CHAPTER I.\n\nThe Time Traveller (for so it will be convenient to speak of him) was expounding a "
        "recondite matter to us.\n") * 40
HEADER = ("The Project Gutenberg eBook of The Time Machine, by H. G. Wells\n\nThis eBook is for the use of "
          "anyone anywhere in the United States and most other parts of the world at no cost.\n\n"
          "Title: The Time Machine\n\n")
LICENCE = ("\n\nUpdated editions will replace the previous one--the old editions will be renamed.\n"
           "START: FULL LICENSE\n" + "THE FULL PROJECT GUTENBERG LICENSE\n" * 50)

NEWER = (HEADER + "*** START OF THE PROJECT GUTENBERG EBOOK THE TIME MACHINE ***\n" + BODY
         + "*** END OF THE PROJECT GUTENBERG EBOOK THE TIME MACHINE ***" + LICENCE)
OLDER = (HEADER + "*** START OF THIS PROJECT GUTENBERG EBOOK THE TIME MACHINE ***\n" + BODY
         + "End of the Project Gutenberg EBook of The Time Machine, by H. G. Wells\n\n"
         + "*** END OF THIS PROJECT GUTENBERG EBOOK THE TIME MACHINE ***" + LICENCE)
SMALL_PRINT = (HEADER + "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n" + BODY
               + "End of Project Gutenberg's The Time Machine, by H. G. Wells\n" + LICENCE)
NO_SPACES = (HEADER + "***START OF THE PROJECT GUTENBERG EBOOK THE TIME MACHINE***\n" + BODY
             + "***END OF THE PROJECT GUTENBERG EBOOK THE TIME MACHINE***\n" + LICENCE)


def stripped(text: str, size: int | None = None) -> tuple[str, int]:
    """The text through without_boilerplate, given in chunks of `size` (whole if None)."""
    chunks = [text] if size is None else [text[i:i + size] for i in range(0, len(text), size)]
    left_out: list[int] = []
    out = "".join(without_boilerplate(chunks, left_out))
    return out, left_out[0]


@pytest.mark.parametrize("text", [NEWER, OLDER, SMALL_PRINT, NO_SPACES],
                         ids=["newer", "older", "small-print", "no-spaces"])
def test_the_book_alone_is_left_and_the_rest_is_counted(text):
    out, left_out = stripped(text)
    assert out == BODY
    assert left_out == len(text) - len(BODY)


@pytest.mark.parametrize("size", [1, 7, 60, 4097, 70_000])
def test_any_cut_of_the_chunks_gives_the_same_text(size):
    assert stripped(OLDER, size) == stripped(OLDER)
    # a marker cut in two by a chunk boundary is still found
    at = OLDER.index("End of the Project")
    assert stripped(OLDER[:at + 9] + OLDER[at + 9:], at + 9) == stripped(OLDER)


def test_a_long_header_up_to_the_opening_limit_is_found():
    padded = HEADER + "x" * (gutenberg.HEAD_CHARS - len(HEADER) - 200) + "\n" + NEWER[len(HEADER):]
    assert stripped(padded, 1000)[0] == BODY


def test_a_text_that_is_no_gutenberg_file_passes_untouched():
    text = BODY + "End of the Project Gutenberg EBook of nothing: a sentence in a novel\n" + BODY
    assert stripped(text, 50) == (text, 0)
    assert stripped("", None) == ("", 0)


def test_markers_past_the_opening_are_the_books_own_text():
    late = "a" * (gutenberg.HEAD_CHARS + 10) + "\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\nmore\n"
    assert stripped(late, 4096) == (late, 0)
    assert stripped(late + "*** END OF THE PROJECT GUTENBERG EBOOK X ***\n", 4096)[1] == 0


def test_a_text_without_newlines_streams_without_being_held_whole():
    rng = random.Random(0)
    body = "".join(rng.choice("abc ") for _ in range(50_000))  # no newline at all
    text = HEADER + "*** START OF THE PROJECT GUTENBERG EBOOK X ***\n" + body
    chunks = [text[i:i + 1000] for i in range(0, len(text), 1000)]
    pieces = list(without_boilerplate(chunks))
    assert "".join(pieces) == body
    assert max(len(p) for p in pieces) < gutenberg.HEAD_CHARS + gutenberg.LONGEST_LINE + 1000


def test_the_war_of_the_worlds_loses_its_header_and_licence(data_dir):
    text = (data_dir / "36-0.txt").read_text(encoding="utf-8", errors="replace")
    out, left_out = stripped(text, 4096)
    assert out.lstrip().startswith("cover") and out.rstrip().endswith("dead.")
    assert "Project Gutenberg" not in out
    assert 0.04 < left_out / len(text) < 0.1  # the header, and the 19 KB licence


# ---- where texts are read --------------------------------------------------------------------------

def test_training_and_its_held_out_end_read_the_book_alone_and_say_so(tmp_path, caplog):
    import logging

    from charlm import load_splits

    path = tmp_path / "book.txt"
    path.write_text(OLDER, encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="charlm.data.dataset"):
        splits = load_splits(path, clean="raw")
    held_out = "".join(splits.vocab.to_tokens(splits.val.tolist() + splits.test.tolist()))
    assert "LICENSE" not in held_out and BODY.endswith(held_out)
    assert f"left out {len(OLDER) - len(BODY):,} characters of Project Gutenberg's" in caplog.text
    whole = load_splits(path, clean="raw", keep_boilerplate=True)
    assert "LICENSE" in "".join(whole.vocab.to_tokens(whole.test.tolist()))


def test_a_run_evaluates_a_gutenberg_file_as_its_book_and_an_older_run_as_it_trained(tmp_path):
    import json

    from charlm.cli import main
    from charlm.evaluation import evaluate_run

    path = tmp_path / "book.txt"
    path.write_text(OLDER, encoding="utf-8")
    run = tmp_path / "run"
    assert main(["train", str(path), "--recipe", "book", "--clean", "raw", "--max-tokens", "-1",
                 "--epochs", "1", "--num-hiddens", "16", "--out", str(run), "--device", "cpu", "-q"]) == 0
    book = evaluate_run(run, corpus=str(path))[0].num_tokens
    whole = evaluate_run(run, corpus=str(path), keep_boilerplate=True)[0].num_tokens
    assert (book + 1, whole + 1) == (len(BODY), len(OLDER))  # every token but the first is predicted
    # A run saved before boilerplate was left out has no such setting: it read its text whole.
    config = json.loads((run / "config.json").read_text())
    assert config["train"].pop("keep_boilerplate") is False
    (run / "config.json").write_text(json.dumps(config))
    from charlm.checkpoint import run_configs

    assert run_configs(run)[1].keep_boilerplate is True


def test_the_explorer_reads_the_book_and_the_compressor_keeps_every_byte(tmp_path):
    from charlm import compress, decompress, load
    from charlm.cli import main
    from charlm.inspection.reading import read

    path = tmp_path / "book.txt"
    path.write_text(BODY, encoding="utf-8")
    assert main(["train", str(path), "--recipe", "book", "--clean", "raw", "--max-tokens", "-1",
                 "--epochs", "1", "--num-hiddens", "16", "--out", str(tmp_path / "run"), "--device", "cpu",
                 "-q"]) == 0
    run = load(tmp_path / "run")
    reading = read(run, NEWER)
    assert "".join(reading.tokens) == BODY and reading.left_out == len(NEWER) - len(BODY)
    assert len(read(run, NEWER, keep_boilerplate=True).tokens) == len(NEWER)
    data = NEWER.encode()
    assert decompress(compress(data)) == data
