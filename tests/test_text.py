"""Cleaning modes and tokenizers."""

import pytest

from charlm.text import clean_lines, flatten, split_prefix, tokenize


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
