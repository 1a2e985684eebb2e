"""Run folders: atomic files, round trips, and a clear error for every damaged file."""

import gzip
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from charlm import RNNLM, ModelConfig, TrainConfig, Vocab, load, resume
from charlm.checkpoint import (
    RUN_VERSION,
    CheckpointError,
    atomic_write,
    load_trainer,
    run_configs,
    save_run_files,
    save_trainer,
    save_weights,
)


@pytest.fixture
def run(tmp_path):
    vocab = Vocab(list("hello world"))
    model = RNNLM(ModelConfig(len(vocab), 8, cell="lstm", num_layers=2))
    save_run_files(tmp_path, model, vocab, TrainConfig(model=model.config))
    save_weights(tmp_path / "model.safetensors", model)
    return tmp_path, model


def test_load_rebuilds_the_same_model_in_eval_mode(run):
    folder, model = run
    loaded = load(folder)
    X = torch.randint(0, len(loaded.vocab), (2, 5))
    assert torch.equal(loaded.model(X)[0], model.eval()(X)[0]) and not loaded.model.training
    assert loaded.model.config == model.config and loaded.token == "char"
    config = json.loads((folder / "config.json").read_text())
    assert config["version"] == 2 and list(config) == sorted(config)


def _flip_bit(data: bytes, at: int) -> bytes:
    """One bit of one byte changed: the file stays a well-formed safetensors file."""
    flipped = bytearray(data)
    flipped[at] ^= 0x10
    return bytes(flipped)


@pytest.mark.parametrize("damage, match", [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "damaged or not a safetensors"),
    (lambda p: p.write_bytes(b"\x00" * 64), "damaged or not a safetensors"),
    (lambda p: p.write_bytes(_flip_bit(p.read_bytes(), -20)), "do not match the SHA-256"),
    (lambda p: p.unlink(), "no such weights file"),
])
def test_a_damaged_weights_file_is_an_error_naming_it(run, damage, match):
    folder, _ = run
    damage(folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=match) as err:
        load(folder)
    assert "model.safetensors" in str(err.value)


def test_a_config_from_a_newer_format_is_refused(run):
    folder, _ = run
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "version": 3}))
    with pytest.raises(CheckpointError, match="format version 3 is not supported"):
        load(folder)


def test_weights_that_do_not_fit_the_config_are_refused(run):
    folder, _ = run
    save_weights(folder / "model.safetensors", RNNLM(ModelConfig(9, 16, cell="lstm", num_layers=2)))
    with pytest.raises(CheckpointError, match="has shape"):
        load(folder)


def test_a_vocabulary_that_does_not_match_the_model_is_refused(run):
    folder, _ = run
    Vocab(list("abc")).save(folder / "vocab.json")
    with pytest.raises(CheckpointError, match="4 tokens, but the model was built for vocab_size=9"):
        load(folder)


def test_trainer_state_never_unpickles_code(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "trainer.pt").write_bytes(pickle.dumps({"format": "charlm-run", "x": Exploit()}))
    with pytest.raises(CheckpointError, match="not a readable charlm trainer state"):
        load_trainer(tmp_path / "trainer.pt")
    assert not marker.exists()


def test_trainer_state_round_trip(tmp_path):
    save_trainer(tmp_path / "trainer.pt", {"epoch": 3, "rng": torch.get_rng_state()})
    assert load_trainer(tmp_path / "trainer.pt")["epoch"] == 3


def test_a_failed_write_leaves_the_previous_file_intact(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write(path, lambda f: f.write(b"good"))

    def crash(f):
        f.write(b"half")
        raise OSError("disk full")
    with pytest.raises(OSError):
        atomic_write(path, crash)
    assert path.read_bytes() == b"good" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


# -- run folders written by earlier releases ---------------------------------------------------------

FOLDERS = Path(__file__).parent / "data" / "run-folders"


def _tiny_text(folder: Path) -> None:
    """The text the kept runs were trained on: the first 6,000 characters of the embedded book."""
    from charlm.data.corpora import CORPORA, embedded_file

    text = gzip.decompress(embedded_file(CORPORA["timemachine"]).read_bytes()).decode("utf-8")
    (folder / "tiny.txt").write_text(text[:6000], encoding="utf-8")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_run_folder_of_each_format_loads_into_typed_configs(version):
    model, train = run_configs(FOLDERS / version)
    assert model == ModelConfig(vocab_size=28, num_hiddens=8, cell="lstm", impl="builtin", embedding=4,
                                gru_reset_after=model.gru_reset_after)
    assert isinstance(train, TrainConfig) and train.model == model
    assert (train.corpus, train.epochs, train.batch_size, train.num_steps) == ("tiny.txt", 2, 4, 10)
    run = load(FOLDERS / version)
    assert run.config == train and run.token == "char" and len(run.vocab) == 28


def test_both_formats_hold_the_same_run():
    """v1 and v2 were trained with the same settings, before and after the redesign: the same weights."""
    v1, v2 = load(FOLDERS / "v1", which="last"), load(FOLDERS / "v2", which="last")
    for name, tensor in v1.model.state_dict().items():
        assert torch.equal(tensor, v2.model.state_dict()[name]), name


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_a_run_folder_of_each_format_resumes_and_is_saved_in_the_current_format(version, tmp_path,
                                                                                 monkeypatch):
    shutil.copytree(FOLDERS / version, tmp_path / "run")
    _tiny_text(tmp_path)
    monkeypatch.chdir(tmp_path)  # the runs name their corpus "tiny.txt"
    result = resume(tmp_path / "run", epochs=3, sample_every=0)
    assert [r["epoch"] for r in result.history] == [1, 2, 3]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["version"] == RUN_VERSION and "cell" not in saved["train"]


def test_a_runs_prefix_is_its_own_else_the_books_for_its_corpus():
    from charlm.checkpoint import Run

    def run(config):
        return Run(RNNLM(ModelConfig(5, 4)), Vocab.from_counts({"a": 1}), config, Path("r"))
    assert run(TrainConfig(prefix="it was")).prefix == "it was"
    assert run(TrainConfig(corpus="timemachine")).prefix == "time traveller"  # the book's, unrecorded
    assert run(TrainConfig(corpus="my.txt")).prefix == ""
    assert run(None).prefix == ""  # a run without its training settings records none
