"""Every loader of a run folder, fed damaged files (hypothesis): cut, bit-flipped, overwritten,
replaced by noise, or valid JSON with one field changed.

Each load either succeeds, and then what it returns is sound, or raises the one documented error
naming the file: ValueError for `Vocab.load`, CheckpointError for the run folder, which `charlm`
turns into a one-line message. Any other exception would be a traceback for the user. The files
come from a real (tiny, one-epoch) training run; tests/test_checkpoint.py has the known cases.

Examples are derandomized, so every run draws the same cases and a failure replays exactly.
"""

import json
import re
import shutil
import struct

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from charlm import RNNLM, ModelConfig, Vocab, load
from charlm.checkpoint import (
    RUN_FORMAT,
    RUN_VERSION,
    CheckpointError,
    load_trainer,
    read_config,
    read_weights,
)
from charlm.config import TrainConfig
from charlm.training.run import train
from strategies import PROPERTY

FUZZ = settings(PROPERTY, max_examples=200)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """One folder for the whole module: hypothesis runs many examples per test call."""
    return tmp_path_factory.mktemp("damage")


BOOK = "the time traveller for so it will be convenient to speak of him was expounding\n" * 6


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run folder written by a real (one-epoch, tiny) training run: the files to damage."""
    root = tmp_path_factory.mktemp("run")
    (root / "book.txt").write_text(BOOK)
    config = TrainConfig(model=ModelConfig(num_hiddens=8), corpus=str(root / "book.txt"), max_tokens=-1,
                         batch_size=2, num_steps=5, epochs=1, eval_every=0, sample_every=0, save_every=1,
                         device="cpu")
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
    model = RNNLM(ModelConfig.from_dict(read_config(folder)["model"]))
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
        assert state["format"] == RUN_FORMAT and 1 <= state["version"] <= RUN_VERSION


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
        assert loaded == state and state["format"] == RUN_FORMAT and 1 <= state["version"] <= RUN_VERSION


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
