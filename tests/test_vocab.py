"""Vocabulary: the book's ordering, lookups both ways, JSON round trip, known answers; then the same
for any text (hypothesis): every token maps to an index and back, and the vocabulary survives JSON."""

import collections
import json

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from charlm import Vocab, load_corpus
from charlm.data.text import TOKEN_KINDS, clean_lines, flatten, tokenize
from strategies import PROPERTY, texts


def test_order_is_unk_then_reserved_then_by_frequency_ties_first_seen():
    # counts: b 3, a 2, c 2 (a seen before c), d 1
    vocab = Vocab(list("abcabbcd"), reserved_tokens=["<pad>", "<bos>"])
    assert vocab.idx_to_token == ["<unk>", "<pad>", "<bos>", "b", "a", "c", "d"]
    assert vocab.token_freqs == [("b", 3), ("a", 2), ("c", 2), ("d", 1)]


def test_min_freq_drops_rare_tokens_to_unk():
    vocab = Vocab(list("aaabbc"), min_freq=2)
    assert vocab.idx_to_token == ["<unk>", "a", "b"]
    assert vocab["c"] == vocab.unk == 0


def test_lookup_is_recursive_over_lists_and_tuples():
    vocab = Vocab([["x", "y"], ["y"]])  # per-line lists, as the book passes them
    assert vocab[["y", ("x", "zz")]] == [1, [2, 0]]
    assert vocab.to_tokens([1, 2, 0]) == ["y", "x", "<unk>"]
    assert vocab.to_tokens(2) == "x"


def test_a_token_equal_to_unk_in_the_text_does_not_get_a_second_index():
    vocab = Vocab(["<unk>", "<unk>", "a"])  # PTB's text contains literal <unk> tokens
    assert vocab.idx_to_token == ["<unk>", "a"]


def test_json_round_trip_preserves_everything(tmp_path):
    vocab = Vocab(list("hello wörld 😀"), reserved_tokens=["<eos>"])
    vocab.save(tmp_path / "vocab.json")
    again = Vocab.load(tmp_path / "vocab.json")
    assert again == vocab and again.token_freqs == vocab.token_freqs
    assert again["😀"] == vocab["😀"] != vocab.unk
    assert json.loads((tmp_path / "vocab.json").read_text("utf-8"))["version"] == 1


@pytest.mark.parametrize("content, match", [
    ("not json", "vocab.json"),
    ('{"format": "charlm-vocab", "version": 99, "idx_to_token": ["<unk>"]}', "version 99"),
    ('{"format": "charlm-vocab", "version": 1, "idx_to_token": ["a"]}', "starting with '<unk>'"),
    ('{"format": "charlm-vocab", "version": 1, "idx_to_token": ["<unk>", "a", "a"]}', "distinct"),
    ('[1, 2]', "not a charlm vocabulary"),
])
def test_malformed_vocab_files_are_value_errors_naming_the_problem(tmp_path, content, match):
    path = tmp_path / "vocab.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        Vocab.load(path)


def test_time_machine_known_answer(data_dir):
    # d2l §8.2: 170,580 characters, 26 letters + space + <unk> = 28 entries.
    corpus, vocab = load_corpus("timemachine", clean="d2l", token="char")
    assert len(corpus) == 170_580 and len(vocab) == 28
    assert vocab.token_freqs[:2] == [(" ", 29_927), ("e", 17_838)]
    assert vocab.idx_to_token[:3] == ["<unk>", " ", "e"]


def test_time_machine_book_default_keeps_first_10000_tokens(data_dir):
    corpus, vocab = load_corpus("timemachine", max_tokens=10_000)
    full, full_vocab = load_corpus("timemachine")
    assert len(corpus) == 10_000 and len(vocab) == 28
    # The vocabulary is counted on the tokens kept, so ids may differ; the tokens may not.
    assert vocab.to_tokens(corpus.tolist()) == full_vocab.to_tokens(full[:10_000].tolist())


def test_jaychou_lyrics_known_answer(data_dir):
    # d2l-zh §6.3: the first 10,000 characters hold 1,027 distinct characters; + <unk> = 1,028.
    corpus, vocab = load_corpus("jaychou-lyrics", clean="lyrics", max_tokens=10_000)
    assert len(corpus) == 10_000 and len(vocab) == 1_028
    assert "".join(vocab.to_tokens(corpus[:6].tolist())) == "想要有直升机"


def test_word_vocabulary_of_a_small_text(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("the cat sat\nthe end\n")
    corpus, vocab = load_corpus(path, clean="raw", token="word")
    assert vocab.to_tokens(corpus.tolist()) == ["the", "cat", "sat", "the", "end"]
    assert vocab.idx_to_token[1] == "the"


def test_tokenize_then_vocab_matches_load_corpus(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("Abc, ab!\nBa")
    corpus, vocab = load_corpus(path)
    tokens = [t for line in tokenize(clean_lines("Abc, ab!\nBa"), "char") for t in line]
    assert vocab.to_tokens(corpus.tolist()) == tokens


# ---- for any text (d2l §8.2.3) --------------------------------------------------------------------


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    """One folder for the whole module: hypothesis runs many examples per test call."""
    return tmp_path_factory.mktemp("vocab")


def _tokens_of(text: str, token: str) -> list[list[str]]:
    """The text's tokens per line: characters of the untouched text, or the words of each line."""
    return tokenize(clean_lines(text, "raw" if token == "char" else "lines"), token)


@PROPERTY
@given(text=texts, token=st.sampled_from(TOKEN_KINDS))
def test_every_token_of_the_text_maps_to_an_index_and_back(text, token):
    lines = _tokens_of(text, token)
    tokens = flatten(lines)
    vocab = Vocab(lines)  # per-line lists, as the book passes them
    for t in tokens:
        assert t in vocab and vocab.to_tokens(vocab[t]) == t
    assert vocab.to_tokens(vocab[tokens]) == tokens
    assert vocab.to_tokens(torch.tensor(vocab[tokens], dtype=torch.int64)) == tokens
    # <unk> first, then one index per distinct token: a literal "<unk>" in the text gets no second one.
    assert vocab.idx_to_token[0] == "<unk>" and vocab.unk == 0
    assert len(vocab) == 1 + len(set(tokens) - {"<unk>"})
    assert sorted(vocab.token_to_idx.values()) == list(range(len(vocab)))


@PROPERTY
@given(text=texts, stranger=st.text(min_size=1, max_size=4))
def test_unknown_tokens_map_to_unk(text, stranger):
    vocab = Vocab(list(text))
    assume(stranger not in text and stranger != "<unk>")
    assert stranger not in vocab and vocab[stranger] == vocab.unk == 0
    assert vocab.to_tokens(vocab[[stranger, stranger]]) == ["<unk>", "<unk>"]
    assert vocab.unknown([stranger, *text, stranger]) == [stranger]


@PROPERTY
@given(text=texts)
def test_frequencies_are_the_counts_most_frequent_first_ties_first_seen(text):
    vocab = Vocab(list(text))
    freqs = vocab.token_freqs
    counts = collections.Counter(text)
    assert dict(freqs) == counts and len(freqs) == len(counts)
    for (a, fa), (b, fb) in zip(freqs, freqs[1:]):
        assert fa > fb or (fa == fb and text.index(a) < text.index(b))
    # With min_freq=0 the indices follow the same order.
    assert vocab.idx_to_token[1:] == [t for t, _ in freqs]


@PROPERTY
@given(text=texts, min_freq=st.integers(0, 4),
       reserved=st.lists(st.sampled_from(["<pad>", "<bos>", "<eos>", "a", "😀"]), unique=True, max_size=3))
def test_min_freq_and_reserved_tokens(text, min_freq, reserved):
    vocab = Vocab(list(text), min_freq=min_freq, reserved_tokens=reserved)
    assert vocab.idx_to_token[:1 + len(reserved)] == ["<unk>", *reserved]
    for t, count in collections.Counter(text).items():
        assert (t in vocab) == (count >= min_freq or t in reserved)
        assert vocab.to_tokens(vocab[t]) == (t if t in vocab else "<unk>")


@PROPERTY
@given(text=texts, token=st.sampled_from(TOKEN_KINDS), min_freq=st.integers(0, 2))
def test_json_round_trip_gives_an_equal_vocabulary(vocab_dir, text, token, min_freq):
    tokens = flatten(_tokens_of(text, token))
    vocab = Vocab(tokens, min_freq=min_freq, reserved_tokens=["<eos>"])
    again = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    vocab.save(vocab_dir / "vocab.json")
    loaded = Vocab.load(vocab_dir / "vocab.json")
    for copy in (again, loaded):
        assert copy == vocab and copy.token_freqs == vocab.token_freqs
        assert copy[tokens] == vocab[tokens] and copy.token_to_idx == vocab.token_to_idx
