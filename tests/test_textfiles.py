"""A user's text file: the encoding found without a flag, chunks decoded exactly, line endings made
"\\n", and every way the bytes can be wrong said with the offset."""

import json
import logging

import pytest

from charlm.cli import main
from charlm.data import textfiles
from charlm.data.corpora import CorpusError
from charlm.data.textfiles import detect_encoding, iter_file_text, read_file_text

# An e-book's kind of text: curly quotes, an em dash, an apostrophe, accented letters.
BOOK = ("\u201cWell,\u201d said the Time Traveller \u2014 it\u2019s a caf\u00e9, na\u00efve as it "
        "seems.\n") * 40


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("encoding,expected", [
    ("cp1252", "cp1252"),              # the e-books that charlm used to refuse
    ("utf-8", "utf-8"),
    ("utf-8-sig", "utf-8-sig"),        # UTF-8 with a byte-order mark
    ("utf-16", "utf-16"),              # with its byte-order mark (little-endian here)
    ("utf-16-be", None),               # big-endian: the mark written by hand below
    ("utf-32", "utf-32"),
])
def test_the_encoding_is_found_and_the_text_read_as_written(tmp_path, encoding, expected):
    data = BOOK.encode(encoding)
    if encoding == "utf-16-be":
        data, expected = b"\xfe\xff" + data, "utf-16"
    path = _write(tmp_path, "book.txt", data)
    assert detect_encoding(path)[0] == expected
    assert read_file_text(path) == BOOK


def test_latin1_text_reads_right_whichever_of_the_two_legacy_encodings_is_named(tmp_path):
    text = "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, \u00e0 la fran\u00e7aise\n" * 30
    path = _write(tmp_path, "latin1.txt", text.encode("latin-1"))
    assert detect_encoding(path)[0] in ("cp1252", "iso8859-1")  # the same letters for these bytes
    assert read_file_text(path) == text


def test_a_long_ascii_start_does_not_hide_what_follows(tmp_path, monkeypatch):
    monkeypatch.setattr(textfiles, "SAMPLE_BYTES", 1024)
    monkeypatch.setattr(textfiles, "CHUNK_BYTES", 4096)
    preamble = "This eBook is for the use of anyone anywhere at no cost.\n" * 400  # ~23 KB of ASCII
    path = _write(tmp_path, "book.txt", (preamble + BOOK).encode("cp1252"))
    encoding, how = detect_encoding(path)
    assert encoding == "cp1252" and f"from byte {len(preamble)}" in how
    assert read_file_text(path) == preamble + BOOK


def test_the_encoding_used_is_said_in_one_line_unless_it_is_plain_utf8(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="charlm")
    path = _write(tmp_path, "book.txt", BOOK.encode("cp1252"))
    read_file_text(path)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert said == [f"reading {path} as cp1252 (not UTF-8 (from byte 0); charset-normalizer's best guess)"]
    caplog.clear()
    read_file_text(_write(tmp_path, "plain.txt", BOOK.encode("utf-8")))  # what anyone expects: not said
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []


def test_a_given_encoding_is_used_as_given(tmp_path):
    path = _write(tmp_path, "book.txt", BOOK.encode("cp1252"))
    assert read_file_text(path, encoding="cp1250") != BOOK  # no detection second-guesses the user
    assert read_file_text(path, encoding="windows-1252") == BOOK


@pytest.mark.parametrize("ending", ["\r\n", "\r", "\n"])
def test_windows_and_old_mac_line_endings_become_newlines_even_across_chunks(tmp_path, monkeypatch, ending):
    monkeypatch.setattr(textfiles, "CHUNK_BYTES", 7)  # chunk borders fall between \r and \n too
    lines = [f"line {i} of the text" for i in range(50)]
    path = _write(tmp_path, "book.txt", ending.join(lines).encode("utf-8") + ending.encode())
    assert read_file_text(path) == "\n".join(lines) + "\n"
    assert len("".join(iter_file_text(path, chunk_bytes=7))) == len("\n".join(lines)) + 1


def test_an_undecodable_byte_is_an_error_at_its_offset_in_the_whole_file(tmp_path, monkeypatch):
    monkeypatch.setattr(textfiles, "CHUNK_BYTES", 16)
    data = b"x" * 100 + "\u00e9".encode() + b"y" * 10 + b"\x92 it" + b"z" * 40
    path = _write(tmp_path, "book.txt", data)
    with pytest.raises(CorpusError, match=r"not valid utf-8 \(byte 0x92 at offset 112\); pass the file's "
                                          r"encoding with --encoding, or --errors replace"):
        read_file_text(path, encoding="utf-8")
    text = read_file_text(path, encoding="utf-8", errors="replace")
    assert text == "x" * 100 + "\u00e9" + "y" * 10 + "\ufffd it" + "z" * 40


def test_a_utf8_character_split_by_a_chunk_border_reads_whole(tmp_path):
    path = _write(tmp_path, "book.txt", BOOK.encode("utf-8"))
    for size in (1, 2, 3, 5):
        assert "".join(iter_file_text(path, "utf-8", chunk_bytes=size)) == BOOK


@pytest.mark.parametrize("data,message", [
    (b"", "the file is empty"),
    (b" \r\n\t\r\n", "the file holds only whitespace"),
    (bytes(range(256)) * 4, "looks like a binary file"),
    (b"A\x81B\x8d" * 50, "cannot tell its text encoding"),
])
def test_files_that_are_not_text_are_said_to_be_so(tmp_path, data, message):
    path = _write(tmp_path, "f.txt", data)
    with pytest.raises(CorpusError, match=message):
        read_file_text(path)


@pytest.mark.slow
def test_a_windows_1252_ebook_trains_evaluates_and_generates_with_no_encoding_flag(tmp_path, monkeypatch,
                                                                                    capsys):
    monkeypatch.chdir(tmp_path)
    book = _write(tmp_path, "ebook.txt", (BOOK * 3).encode("cp1252"))
    tiny = ["--num-hiddens", "16", "--batch-size", "4", "--num-steps", "8", "--epochs", "1",
            "--sample-every", "0", "--clean", "raw", "--max-tokens", "-1", "--device", "cpu", "-q"]
    assert main(["train", "--corpus", str(book), "--out", "run", *tiny]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert saved["encoding"] == "cp1252"  # recorded, so evaluation reads the text alike
    vocab = json.loads((tmp_path / "run" / "vocab.json").read_text())
    assert "\u201c" in json.dumps(vocab, ensure_ascii=False)  # the curly quote is a token, not two bytes
    capsys.readouterr()
    assert main(["evaluate", "run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["num_tokens"] > 0
    other = _write(tmp_path, "other.txt", BOOK.encode("utf-16"))  # another file, another encoding
    assert main(["evaluate", "run", "--corpus", str(other), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_tokens"] == len(BOOK) - 1
    assert main(["generate", "run", "--prefix", "\u201cWell", "--num-preds", "5"]) == 0
    assert capsys.readouterr().out.startswith("\u201cWell")
