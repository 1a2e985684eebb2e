"""Cleaning modes and tokenizers: known answers, then what each mode promises for any text (hypothesis):
nothing crashes, and every mode keeps exactly what its docstring in text.py says it keeps."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from charlm.data.text import CLEAN_MODES, TOKEN_KINDS, clean_lines, flatten, split_prefix, tokenize
from strategies import PROPERTY, texts


def test_d2l_cleaning_keeps_letters_lowercased_one_line_per_line():
    # The book's rule: re.sub('[^A-Za-z]+', ' ', line).strip().lower(), line by line.
    assert clean_lines("The Time-Machine,\n  by H. G. Wells [1898]\n\n", "d2l") == [
        "the time machine", "by h g wells", ""]


def test_lines_cleaning_splits_lines_like_a_file_iterator():
    assert clean_lines(" a cat \n\nsat\n", "lines") == [" a cat ", "", "sat"]


def test_d2l_char_stream_joins_lines_without_separator():
    # The book flattens per-line tokens directly: "wells" followed by "i" reads "wellsi".
    tokens = flatten(tokenize(clean_lines("by wells\nI\n", "d2l"), "char"))
    assert "".join(tokens) == "by wellsi"


def test_lower_cleaning_keeps_punctuation_and_collapses_whitespace():
    assert clean_lines("Hello,  World!\n\tBye.\r\n", "lower") == ["hello, world! bye."]


def test_lyrics_cleaning_replaces_each_newline_and_carriage_return_by_a_space():
    assert clean_lines("想要有\r\n直升机", "lyrics") == ["想要有  直升机"]


def test_raw_cleaning_touches_nothing_and_keeps_unicode_characters():
    text = "Ünïcode\r\n≠ bytes 😀"
    lines = clean_lines(text, "raw")
    assert lines == [text]
    tokens = flatten(tokenize(lines, "char"))
    assert "😀" in tokens and len(tokens) == len(text)


def test_word_tokens_split_on_whitespace_with_optional_eos_per_line():
    assert tokenize(["the cat  sat", "", "on"], "word") == [["the", "cat", "sat"], [], ["on"]]
    assert tokenize(["a b", "c"], "word", eos=True) == [["a", "b", "<eos>"], ["c", "<eos>"]]


def test_prefix_is_split_like_the_model_tokens():
    assert split_prefix("time traveller", "char")[:4] == ["t", "i", "m", "e"]
    assert split_prefix("time traveller", "word") == ["time", "traveller"]


@pytest.mark.parametrize("call, match", [
    (lambda: clean_lines("x", "shout"), "clean must be one of d2l, lower, lyrics, raw, lines"),
    (lambda: tokenize(["x"], "bpe"), "token must be one of char, word"),
    (lambda: tokenize(["x"], "char", eos=True), "eos applies to word tokens only"),
])
def test_unknown_modes_are_errors_naming_the_choices(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ---- for any text -------------------------------------------------------------------------------

LETTERS_RUNS = re.compile("[A-Za-z]+")
D2L_LINE = re.compile("(?:[a-z]+(?: [a-z]+)*)?")  # lowercase words, single spaces, nothing at the ends


@PROPERTY
@given(text=texts, mode=st.sampled_from(CLEAN_MODES), token=st.sampled_from(TOKEN_KINDS),
       eos=st.booleans())
def test_any_text_cleans_and_tokenizes_into_lists_of_strings(text, mode, token, eos):
    lines = clean_lines(text, mode)
    assert isinstance(lines, list) and lines and all(isinstance(line, str) for line in lines)
    per_line = tokenize(lines, token, eos=eos and token == "word")
    assert len(per_line) == len(lines)
    assert all(isinstance(t, str) for tokens in per_line for t in tokens)
    assert flatten(per_line) == [t for tokens in per_line for t in tokens]
    prefix = split_prefix(text, token)
    assert isinstance(prefix, list) and all(isinstance(t, str) for t in prefix)


@PROPERTY
@given(text=texts)
def test_raw_char_tokens_are_the_text_code_point_by_code_point(text):
    # 'raw' is one untouched line; characters are code points, so "e\u0301" is two tokens.
    assert clean_lines(text, "raw") == [text]
    assert flatten(tokenize(clean_lines(text, "raw"), "char")) == list(text)
    assert split_prefix(text, "char") == list(text)


@PROPERTY
@given(text=texts)
def test_lines_mode_splits_on_newline_only_like_a_file_iterator(text):
    lines = clean_lines(text, "lines")
    assert all("\n" not in line for line in lines)
    # A final newline ends the last line rather than starting an empty one.
    assert "\n".join(lines) == (text[:-1] if text.endswith("\n") else text)


@PROPERTY
@given(text=texts)
def test_d2l_mode_keeps_the_ascii_letters_of_each_line_lowercased(text):
    # The book: re.sub('[^A-Za-z]+', ' ', line).strip().lower(); restated as "its letter runs, joined".
    raw_lines = clean_lines(text, "lines")
    lines = clean_lines(text, "d2l")
    assert len(lines) == len(raw_lines)
    for raw, line in zip(raw_lines, lines):
        assert D2L_LINE.fullmatch(line)
        assert line == " ".join(LETTERS_RUNS.findall(raw)).lower()


@PROPERTY
@given(text=texts)
def test_lower_mode_is_one_line_of_words_separated_by_single_spaces(text):
    [line] = clean_lines(text, "lower")
    assert line == " ".join(text.split()).lower()  # str.split: the same Unicode whitespace as \s


@PROPERTY
@given(text=texts)
def test_lyrics_mode_turns_each_line_break_into_one_space(text):
    [line] = clean_lines(text, "lyrics")
    assert len(line) == len(text) and "\n" not in line and "\r" not in line
    assert all(c == (" " if t in "\r\n" else t) for c, t in zip(line, text))


@PROPERTY
@given(text=texts, eos=st.booleans())
def test_word_tokens_are_the_non_whitespace_runs(text, eos):
    lines = clean_lines(text, "lines")
    for line, tokens in zip(lines, tokenize(lines, "word", eos=eos)):
        words = tokens[:-1] if eos else tokens
        assert not eos or tokens[-1] == "<eos>"
        assert all(w and not any(c.isspace() for c in w) for w in words)
        assert "".join(words) == "".join(c for c in line if not c.isspace())


@PROPERTY
@given(text=texts)
def test_char_tokens_are_single_code_points_that_rebuild_each_line(text):
    for mode in CLEAN_MODES:
        lines = clean_lines(text, mode)
        for line, tokens in zip(lines, tokenize(lines, "char")):
            assert all(len(t) == 1 for t in tokens) and "".join(tokens) == line
