"""Train / validation / test splits: fixed by the token stream, never by batch shape."""

import pytest

from charlm import load_corpus, load_splits
from charlm.data.dataset import split_bounds


def test_split_is_contiguous_tails_in_order():
    # [ train | val | test ] of 100 tokens: [0, 90), [90, 95), [95, 100). Not 89: 1 - 0.05 - 0.05
    # is 0.8999... in floats, and the boundary is computed exactly.
    assert split_bounds(100, 0.05, 0.05) == (90, 95)
    assert split_bounds(1_115_394, 0.1, 0.0) == (1_003_854, 1_115_394)  # tinyshakespeare, no test part


def test_tinyshakespeare_validation_is_the_last_ten_percent(data_dir):
    # floor(1,115,394 * 0.9) = 1,003,854 training characters; the remaining 111,540 validate.
    splits = load_splits("tinyshakespeare", clean="raw")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (1_003_854, 111_540, 0)
    assert "".join(splits.vocab.to_tokens(splits.val[:5].tolist())) == "?\n\nGR"


def test_ptb_uses_its_own_three_files(data_dir):
    # One <eos> per sentence (line): the usual 929,589 / 73,760 / 82,430 word-level tokens.
    splits = load_splits("ptb", clean="lines", token="word", eos=True)
    assert len(splits.vocab) == 10_000  # PTB's 9,999 words + <eos>, with its own <unk> merged in
    assert (len(splits.train), len(splits.val), len(splits.test)) == (929_589, 73_760, 82_430)


def test_max_tokens_cuts_the_training_part_only(data_dir):
    whole = load_splits("timemachine")
    cut = load_splits("timemachine", max_tokens=10_000)
    book, _ = load_corpus("timemachine", max_tokens=10_000)
    assert len(cut.train) == 10_000 and len(cut.val) == len(whole.val) > 8_000
    assert cut.vocab.to_tokens(cut.train.tolist()) == cut.vocab.to_tokens(book.tolist())


def test_vocabulary_comes_from_training_tokens_so_new_ones_are_unk(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("a" * 90 + "b" * 10)
    splits = load_splits(str(path), clean="raw")
    assert splits.vocab.idx_to_token == ["<unk>", "a"]
    assert splits.val.tolist() == [0] * 5 and splits.test.tolist() == [0] * 5


def test_unknown_split_name_is_an_error(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abc" * 20)
    with pytest.raises(ValueError, match="split must be one of train, val, test"):
        load_splits(str(path))["validation"]


@pytest.mark.parametrize("max_tokens", [0, -2])
def test_max_tokens_must_be_positive_or_minus_one(tmp_path, max_tokens):
    path = tmp_path / "t.txt"
    path.write_text("abc")
    with pytest.raises(ValueError, match="--max-tokens must be a positive count or -1"):
        load_corpus(str(path), max_tokens=max_tokens)


def test_text_with_no_tokens_after_cleaning_is_an_error(tmp_path):
    path = tmp_path / "digits.txt"
    path.write_text("1234 5678\n")
    with pytest.raises(ValueError, match="no tokens are left after 'd2l' cleaning"):
        load_corpus(str(path))
