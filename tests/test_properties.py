"""Properties over random input, and fuzzing of every loader with damaged files (hypothesis).

Part one states what holds for *any* text: the vocabulary maps its tokens both ways and survives
JSON; cleaning and tokenizing never crash and keep what each mode promises (text.py's docstrings);
the mini-batch iterators cut the book's windows (d2l §8.3.4) for any corpus length, batch size and
num_steps. Part two feeds the loaders of a real run folder with cut, bit-flipped, overwritten and
random files: each load either succeeds, and then what it returns is sound, or raises the one
documented error naming the file (ValueError for `Vocab.load`, CheckpointError for the run folder),
which `charlm` turns into a one-line message. Any other exception would be a traceback for the user.

Examples are derandomized, so every run draws the same cases and a failure replays exactly.
"""

import collections
import json
import re
import shutil
import struct

import pytest
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from charlm import RNNLM, ModelConfig, Vocab, load
from charlm.batches import BatchStream
from charlm.checkpoint import RUN_FORMAT, CheckpointError, load_trainer, read_config, read_weights
from charlm.config import TrainConfig
from charlm.text import CLEAN_MODES, TOKEN_KINDS, clean_lines, flatten, split_prefix, tokenize
from charlm.train import train

PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ = settings(PROPERTY, max_examples=200)

# Pieces that tend to break text handling, mixed with arbitrary code points (never surrogates,
# which no UTF-8 file can hold): line ends of every platform, control characters, Unicode
# whitespace and line separators, combining marks, CJK, emoji with joiners and flags, characters
# whose lower case is longer (İ), and the vocabulary's own special tokens.
PIECES = ["\r\n", "\r", "\n", "\t", "\x00", "\x1c", "\x7f", "\x85", "\u2028", "\u00a0", "\u3000",
          "e\u0301", "\u0301", "漢字", "想要有直升机", "😀", "👩\u200d👩\u200d👧", "🇫🇷", "İ", "ß", "ǅ",
          " ", "  ", "<unk>", "<eos>", "The Time-Machine,"]
texts = st.lists(st.one_of(st.characters(codec="utf-8"), st.sampled_from(PIECES)), max_size=40).map("".join)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("properties")


# ---------------------------------------------------------------------------------------------
# The vocabulary (d2l §8.2.3)


@PROPERTY
@given(text=texts, token=st.sampled_from(TOKEN_KINDS))
def test_every_token_of_the_text_maps_to_an_index_and_back(text, token):
    lines = tokenize(clean_lines(text, "raw" if token == "char" else "lines"), token)
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
def test_json_round_trip_gives_an_equal_vocabulary(workspace, text, token, min_freq):
    tokens = flatten(tokenize(clean_lines(text, "raw" if token == "char" else "lines"), token))
    vocab = Vocab(tokens, min_freq=min_freq, reserved_tokens=["<eos>"])
    again = Vocab.from_dict(json.loads(json.dumps(vocab.to_dict())))
    vocab.save(workspace / "vocab.json")
    loaded = Vocab.load(workspace / "vocab.json")
    for copy in (again, loaded):
        assert copy == vocab and copy.token_freqs == vocab.token_freqs
        assert copy[tokens] == vocab[tokens] and copy.token_to_idx == vocab.token_to_idx


# ---------------------------------------------------------------------------------------------
# Cleaning and tokenizing (text.py)

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


# ---------------------------------------------------------------------------------------------
# Mini-batches (d2l §8.3.4)

stream_args = st.fixed_dictionaries({
    "length": st.integers(0, 300), "batch_size": st.integers(1, 6), "num_steps": st.integers(1, 9),
    "sampling": st.sampled_from(["random", "sequential"]), "random_offset": st.booleans(),
    "seed": st.integers(0, 2**32), "shuffle": st.integers(0, 2**32),
    "dtype": st.sampled_from([torch.int64, torch.int32, torch.int16, list])})


def _stream(args):
    """A stream over a corpus of distinct ids in shuffled order, and each id's corpus position.
    The corpus is handed over as an int64, int32 or int16 tensor or a list; batches are int64."""
    g = torch.Generator().manual_seed(args["shuffle"])
    corpus = torch.randperm(args["length"], generator=g) + 1000  # ids are not positions
    position = {int(token): pos for pos, token in enumerate(corpus)}
    given = corpus.tolist() if args["dtype"] is list else corpus.to(args["dtype"])
    stream = BatchStream(given, args["batch_size"], args["num_steps"], sampling=args["sampling"],
                         seed=args["seed"], random_offset=args["random_offset"])
    return stream, corpus, position


def _min_tokens(args):
    # One batch needs batch_size * num_steps inputs plus one target after them, whatever the
    # offset: up to num_steps - 1 for random sampling and num_steps for sequential (the book's ranges).
    largest_offset = {"random": args["num_steps"] - 1, "sequential": args["num_steps"]}[args["sampling"]]
    return args["batch_size"] * args["num_steps"] + (largest_offset if args["random_offset"] else 0) + 1


@PROPERTY
@given(args=stream_args)
def test_a_corpus_too_short_for_one_batch_is_a_value_error(args):
    if args["length"] < _min_tokens(args):
        with pytest.raises(ValueError, match=f"corpus of {args['length']} tokens is too short for one batch"):
            _stream(args)
    else:
        stream, _, _ = _stream(args)
        assert stream.min_tokens == _min_tokens(args)
        for _ in range(3):
            assert len(list(stream)) >= 1


@PROPERTY
@given(args=stream_args)
def test_every_batch_is_windows_of_the_corpus_and_y_is_x_one_token_later(args):
    assume(args["length"] >= _min_tokens(args))
    stream, corpus, position = _stream(args)
    B, T = args["batch_size"], args["num_steps"]
    for _ in range(2):
        for X, Y in stream:
            assert X.shape == Y.shape == (B, T) and X.dtype == Y.dtype == torch.int64
            for i in range(B):
                pos = position[int(X[i, 0])]
                assert torch.equal(X[i], corpus[pos:pos + T])
                assert torch.equal(Y[i], corpus[pos + 1:pos + T + 1])


def _starts(batches, position):
    return [[position[int(t)] for t in X[:, 0]] for X, _ in batches]  # (num_batches, B) positions


@PROPERTY
@given(args=stream_args.filter(lambda a: a["sampling"] == "sequential"))
def test_sequential_rows_continue_across_batches_and_the_count_is_the_books(args):
    assume(args["length"] >= _min_tokens(args))
    stream, _, position = _stream(args)
    B, T, L = args["batch_size"], args["num_steps"], args["length"]
    for _ in range(2):
        expected = len(stream)
        starts = _starts(list(stream), position)
        offset = starts[0][0]
        assert 0 <= offset <= (T if args["random_offset"] else 0)
        # Book: num_tokens = ((L - offset - 1) // B) * B, rows of num_tokens // B, cut every T columns.
        row_len = (L - offset - 1) // B
        assert len(starts) == expected == row_len // T
        for k, row_starts in enumerate(starts):  # row i of batch k starts k * T into row i
            assert row_starts == [offset + i * row_len + k * T for i in range(B)]


@PROPERTY
@given(args=stream_args.filter(lambda a: a["sampling"] == "random"))
def test_random_sampling_uses_each_subsequence_at_most_once_per_epoch(args):
    assume(args["length"] >= _min_tokens(args))
    stream, _, position = _stream(args)
    B, T, L = args["batch_size"], args["num_steps"], args["length"]
    for _ in range(2):
        expected = len(stream)
        starts = [s for row in _starts(list(stream), position) for s in row]
        offset = starts[0] % T
        assert offset == 0 or args["random_offset"]
        # Book: num_subseqs = (L - offset - 1) // T subsequences at offset + k * T; num_subseqs // B batches.
        num_subseqs = (L - offset - 1) // T
        assert len(starts) == expected * B == (num_subseqs // B) * B
        assert all((s - offset) % T == 0 and (s - offset) // T < num_subseqs for s in starts)
        assert len(set(starts)) == len(starts)  # same grid, distinct starts: no two windows overlap


# ---------------------------------------------------------------------------------------------
# Fuzzing the loaders of a real run folder

BOOK = "the time traveller for so it will be convenient to speak of him was expounding\n" * 6


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder written by a real (one-epoch, tiny) training run: the files to damage."""
    root = tmp_path_factory.mktemp("run")
    (root / "book.txt").write_text(BOOK)
    config = TrainConfig(corpus=str(root / "book.txt"), max_tokens=-1, num_hiddens=8, batch_size=2,
                         num_steps=5, epochs=1, eval_every=0, sample_every=0, save_every=1, device="cpu")
    train(config, out=root / "run")
    folder = root / "run"
    written = {p.name for p in folder.iterdir()}
    assert {"config.json", "vocab.json", "model.safetensors", "trainer.pt"} <= written
    load(folder)  # the pristine folder loads
    return folder


def _copy(run_folder, workspace, name):
    """A private copy of the run folder for one test, whose damaged file each example overwrites."""
    folder = workspace / name
    if not folder.exists():
        shutil.copytree(run_folder, folder)
    return folder


@st.composite
def damaged(draw, original: bytes, hot: int):
    """`original` cut short, with bits flipped, with a stretch overwritten, or replaced by noise.
    Half of the flips and overwrites land in the first `hot` bytes, where the structure lives."""
    n = len(original)
    where = st.one_of(st.integers(0, min(hot, n) - 1), st.integers(0, n - 1))
    kind = draw(st.sampled_from(["cut", "flip", "overwrite", "noise"]))
    if kind == "cut":
        return original[:draw(st.integers(0, n - 1))]
    if kind == "flip":
        data = bytearray(original)
        for i, bit in draw(st.lists(st.tuples(where, st.integers(0, 7)), min_size=1, max_size=6)):
            data[i] ^= 1 << bit
        return bytes(data)
    if kind == "overwrite":
        at, patch = draw(where), draw(st.binary(min_size=1, max_size=24))
        return original[:at] + patch + original[at + len(patch):]
    return draw(st.binary(max_size=300))


# Leaves include the words the loaders look for, so an edit can swap one valid choice for another.
WORDS = [RUN_FORMAT, "charlm-vocab", "<unk>", "lstm", "gru", "builtin", "book", "relu", "normal",
         "F32", "I32", "U32", "F16", "BF16", "F64", "I64", "BOOL", "U8", "F8_E4M3", "C64"]
leaves = st.one_of(st.none(), st.booleans(), st.integers(-2, 40), st.floats(), st.text(max_size=6),
                   st.sampled_from(WORDS))
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


def _paths(value, prefix=()):
    """Every key path into nested dicts and lists: the places a structured edit can hit."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


@st.composite
def edited_json(draw, original: dict):
    """Valid JSON that differs from `original` at one place: a value replaced or a key removed."""
    data = json.loads(json.dumps(original))
    path = draw(st.sampled_from(list(_paths(data))))
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()):
        parent[path[-1]] = draw(json_values)
    else:
        del parent[path[-1]]
    return json.dumps(data).encode()


def _vocab_is_sound(vocab):
    tokens = vocab.idx_to_token
    assert tokens[0] == "<unk>" and len(set(tokens)) == len(tokens)
    assert all(isinstance(t, str) for t in tokens)
    assert vocab.token_to_idx == {t: i for i, t in enumerate(tokens)}


def _assert_vocab_load(path, data):
    path.write_bytes(data)
    try:
        vocab = Vocab.load(path)
    except ValueError as err:
        event(f"refused: {str(err).removeprefix(f'{path}: ')[:40]}")
        assert str(path) in str(err)
    else:
        event("loaded")
        _vocab_is_sound(vocab)


@FUZZ
@given(data=st.data())
def test_vocab_load_of_a_damaged_file_is_a_value_error_naming_it(run_folder, workspace, data):
    original = (run_folder / "vocab.json").read_bytes()
    fuzzed = data.draw(st.one_of(damaged(original, hot=len(original)), edited_json(json.loads(original))))
    _assert_vocab_load(workspace / "vocab.json", fuzzed)


def _assert_load(folder):
    """charlm.load either rebuilds a consistent run or raises a CheckpointError naming the damage."""
    try:
        run = load(folder)
    except CheckpointError as err:
        event(f"load refused: {str(err).removeprefix(f'{folder}')[:50]}")
        assert str(folder) in str(err)
    else:
        event("loaded")
        _vocab_is_sound(run.vocab)
        assert len(run.vocab) == run.model.config.vocab_size and not run.model.training


@FUZZ
@given(data=st.data())
def test_a_damaged_config_is_a_checkpoint_error(run_folder, workspace, data):
    folder = _copy(run_folder, workspace, "config")
    original = (run_folder / "config.json").read_bytes()
    fuzzed = data.draw(st.one_of(damaged(original, hot=len(original)), edited_json(json.loads(original))))
    (folder / "config.json").write_bytes(fuzzed)
    try:
        config = read_config(folder)
    except CheckpointError as err:
        assert "config.json" in str(err)
    else:
        assert config["format"] == RUN_FORMAT and isinstance(config["model"], dict)
    _assert_load(folder)


@FUZZ
@given(data=st.data())
def test_a_damaged_vocab_in_a_run_folder_is_a_checkpoint_error(run_folder, workspace, data):
    folder = _copy(run_folder, workspace, "vocab")
    original = (run_folder / "vocab.json").read_bytes()
    fuzzed = data.draw(st.one_of(damaged(original, hot=len(original)), edited_json(json.loads(original))))
    (folder / "vocab.json").write_bytes(fuzzed)
    _assert_load(folder)


def _safetensors_header(blob):
    """The JSON header of a safetensors file: an 8-byte little-endian length, then the JSON."""
    (size,) = struct.unpack("<Q", blob[:8])
    return size, json.loads(blob[8:8 + size])


@st.composite
def edited_safetensors(draw, original: bytes):
    """A well-framed safetensors file whose header has one field changed (dtype, shape, offsets...)."""
    size, header = _safetensors_header(original)
    text = draw(edited_json(header)).decode()
    return struct.pack("<Q", len(text)) + text.encode() + original[8 + size:]


@FUZZ
@given(data=st.data())
def test_damaged_weights_are_a_checkpoint_error_naming_the_file(run_folder, workspace, data):
    folder = _copy(run_folder, workspace, "weights")
    original = (run_folder / "model.safetensors").read_bytes()
    size, _ = _safetensors_header(original)
    fuzzed = data.draw(st.one_of(damaged(original, hot=8 + size), edited_safetensors(original)))
    (folder / "model.safetensors").write_bytes(fuzzed)
    model = RNNLM.from_config(ModelConfig.from_dict(read_config(folder)["model"]))
    try:
        tensors = read_weights(folder / "model.safetensors", model)
    except CheckpointError as err:
        assert "model.safetensors" in str(err)
    else:
        assert {k: v.shape for k, v in tensors.items()} == {k: v.shape for k, v in model.state_dict().items()}
    _assert_load(folder)


@FUZZ
@given(data=st.data())
def test_a_damaged_trainer_state_is_a_checkpoint_error_naming_it(run_folder, workspace, data):
    original = (run_folder / "trainer.pt").read_bytes()
    path = workspace / "trainer.pt"
    path.write_bytes(data.draw(damaged(original, hot=len(original))))
    try:
        state = load_trainer(path)
    except CheckpointError as err:
        event(f"refused: {str(err).removeprefix(f'{path}: ')[:50]}")
        assert "trainer.pt" in str(err)
    else:
        event("loaded")
        assert state["format"] == RUN_FORMAT and state["version"] == 1


@PROPERTY
@given(state=st.dictionaries(st.sampled_from(["format", "version", "epoch", "model"]),
                             st.one_of(st.sampled_from([RUN_FORMAT, "charlm-vocab", 0, 1, 2, -1, "1", 1.5]),
                                       st.none(), st.integers(-3, 3)), max_size=4)
       | st.lists(st.integers(), max_size=3) | st.integers())
def test_a_readable_trainer_state_of_the_wrong_shape_is_a_checkpoint_error(workspace, state):
    path = workspace / "wrong.pt"
    torch.save(state, path)
    try:
        loaded = load_trainer(path)
    except CheckpointError as err:
        assert "wrong.pt" in str(err)
    else:
        assert loaded == state and state["format"] == RUN_FORMAT and state["version"] == 1


# Hostile files the random draws never reach: on JSON nested deeper than the interpreter's stack
# json.loads raises RecursionError, and on an integer longer than Python converts by default (4,300
# digits) a plain ValueError that names no file. Both must still be the loaders' one error naming it.
HOSTILE_JSON = [b"[" * 100_000, b'{"format": "charlm-run", "version": ' + b"1" * 5_000 + b"}",
                b'{"format": "charlm-vocab", "version": 1, "idx_to_token": ["<unk>"], "token_freqs": '
                + b"[" * 100_000 + b"]" * 100_000 + b"}"]


@pytest.mark.parametrize("content", HOSTILE_JSON, ids=["deep", "long-int", "deep-inside"])
def test_hostile_json_is_the_documented_error(run_folder, workspace, content):
    (workspace / "hostile.json").write_bytes(content)
    with pytest.raises(ValueError, match="hostile.json"):
        Vocab.load(workspace / "hostile.json")
    for name in ("config.json", "vocab.json"):
        folder = _copy(run_folder, workspace, f"hostile-{name}")
        (folder / name).write_bytes(content)
        with pytest.raises(CheckpointError, match=re.escape(name)):
            load(folder)
        shutil.copy(run_folder / name, folder / name)
