"""charlm's own English model ships inside the package: every command that needs a model works with
no RUN, ``charlm.load("english")`` gives it, and a missing or damaged copy is one line saying so."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest
import torch

import charlm
from charlm import checkpoint
from charlm.checkpoint import CheckpointError
from charlm.cli import main

ENGLISH = Path(charlm.__file__).resolve().parent / "english"
DOC = Path(__file__).resolve().parents[1] / "docs" / "english.md"
BOOK = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age "
        "of foolishness, it was the epoch of belief, it was the epoch of incredulity.\n") * 30


def test_the_english_model_loads_by_name_and_is_the_character_model_the_docs_describe():
    run = charlm.load("english")
    assert run.path == ENGLISH and run.token == "char"
    config = run.model.config
    shape = f"a {config.num_layers} x {config.num_hiddens} {config.cell.upper()}"
    row = re.search(r"^\| model \| (.*)$", DOC.read_text(encoding="utf-8"), re.MULTILINE)
    assert row and row.group(1).startswith(shape) and f"{len(run.vocab)} characters" in row.group(1)
    assert len(run.vocab) == config.vocab_size
    assert all(ch in run.vocab.token_to_idx for ch in "the quick brown fox, THE LAZY DOG.\n")


def test_the_shipped_weights_are_the_file_the_docs_name_and_fit_in_8_mb():
    weights = ENGLISH / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    named = re.search(r"SHA-256 `([0-9a-f]{64})`", DOC.read_text(encoding="utf-8"))
    assert named and named.group(1) == digest
    assert weights.stat().st_size <= 8 * 1024 * 1024


def test_generate_with_no_run_writes_with_the_english_model_and_says_so(capsys, caplog):
    assert main(["generate", "--prefix", "It was", "--num-preds", "40", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("It was") and len(out.rstrip("\n")) == len("It was") + 40
    assert "no RUN given: using english" in caplog.text
    run = charlm.load("english")
    config = charlm.GenerateConfig(num_preds=40, seed=0)
    assert out.rstrip("\n") == charlm.generate(run.model, run.vocab, "It was", config)[0]


def test_evaluate_with_no_run_scores_any_text_with_the_english_model(tmp_path, capsys):
    (tmp_path / "book.txt").write_text(BOOK, encoding="utf-8")
    assert main(["evaluate", "--corpus", str(tmp_path / "book.txt"), "--json"]) == 0
    answer = charlm.evaluate("english", corpus=str(tmp_path / "book.txt"))[0]
    assert f'"bits_per_character": {answer.bits_per_token}' in capsys.readouterr().out
    assert answer.num_tokens == len(BOOK) - 1


def test_serve_with_no_run_opens_the_english_model(monkeypatch, capsys):
    from charlm.serve import server as serving

    opened = []

    def serve(self) -> None:  # what `charlm serve` would show, without waiting for Ctrl-C
        opened.extend(run.path for run in self.explorer.runs.values())
        self.close()
    monkeypatch.setattr(serving.ExplorerServer, "serve", serve)
    assert main(["serve", "--port", "0"]) == 0
    assert opened == [ENGLISH] and "r0 = " in capsys.readouterr().out


def test_a_folder_named_english_where_charlm_runs_is_that_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "english").mkdir()
    with pytest.raises(CheckpointError, match="english: not a charlm run folder"):
        charlm.load("english")


def _package_copy(tmp_path, monkeypatch) -> Path:
    """A copy of the english folder where checkpoint.py looks for it."""
    package = tmp_path / "charlm"
    shutil.copytree(ENGLISH, package / "english")
    monkeypatch.setattr(checkpoint, "__file__", str(package / "checkpoint.py"))
    return package / "english"


def test_a_missing_english_model_is_one_line_saying_to_reinstall(tmp_path, monkeypatch, capsys):
    folder = _package_copy(tmp_path, monkeypatch)
    (folder / "model.safetensors").unlink()
    assert main(["generate", "--prefix", "It was"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"charlm: error: {folder / 'model.safetensors'}: charlm's english model is missing "
                       f"from this installation; reinstall charlm")


def test_damaged_english_weights_are_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    folder = _package_copy(tmp_path, monkeypatch)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x04
    weights.write_bytes(bytes(data))
    assert main(["generate", "--prefix", "It was"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"charlm: error: {weights}: damaged: the tensors do not match the SHA-256")


@pytest.mark.slow
def test_a_small_text_fine_tunes_from_the_english_model(tmp_path):
    (tmp_path / "book.txt").write_text(BOOK * 4, encoding="utf-8")
    result = charlm.train(charlm.TrainConfig.of(corpus=str(tmp_path / "book.txt"), init_from="english",
                                                clean="raw", max_tokens=-1, epochs=1, batch_size=8,
                                                num_steps=64, device="cpu"), out=tmp_path / "run")
    run = charlm.load(result.run_dir)
    assert run.model.config == charlm.load("english").model.config and run.config.init_from == "english"


@pytest.mark.slow
def test_the_compressor_codes_with_the_english_model(data_dir):
    data = (data_dir / "timemachine.txt").read_bytes()[:20_000]
    archive = charlm.compress(data, run="english")
    assert charlm.decompress(archive, run="english") == data
    assert len(archive) < 0.9 * len(charlm.compress(data))  # measured 5,314 against 6,745 bytes


DEAR = "Dear John, I went to the market this morning and bought some bread and a little cheese."


def test_the_english_model_begins_every_text_after_a_blank_line():
    """It trained with its state carried from batch to batch, so a zero state was new to it: from
    zeros it read "Dear John" at 17 bits a character and wrote "$$$$" after it. Its books are joined
    by a blank line, and after one it reads as it learned to."""
    run = charlm.load("english")
    assert run.config.preamble == "\n\n" and run.model.preamble.tolist() == run.vocab[["\n", "\n"]]
    ids = torch.tensor(run.vocab[list(DEAR)])
    assert charlm.evaluate_ids(run.model, ids).bits_per_token < 3.0
    config = charlm.GenerateConfig(num_preds=80, seed=0)
    written = charlm.generate(run.model, run.vocab, "Dear John,", config)[0]
    assert sum(c.isalpha() or c in " ,.;'\"\n-" for c in written) / len(written) > 0.9, written


def test_a_run_fine_tuned_from_it_keeps_its_preamble(tmp_path):
    (tmp_path / "book.txt").write_text(BOOK, encoding="utf-8")
    result = charlm.train(charlm.TrainConfig.of(corpus=str(tmp_path / "book.txt"), init_from="english",
                                                epochs=1, batch_size=4, num_steps=16, max_tokens=400,
                                                eval_every=0, sample_every=0, device="cpu"),
                          out=tmp_path / "tuned")
    assert charlm.load(tmp_path / "tuned").config.preamble == "\n\n"
    assert result.model.preamble is not None
