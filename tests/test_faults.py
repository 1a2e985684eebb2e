"""Training under faults: a killed process, a crash or a full disk while saving, a folder that cannot
be written, an exploding loss. Each must leave a run folder that loads and resumes, and say clearly
what went wrong; none may leave a half-written or broken checkpoint."""

import errno
import importlib
import io
import json
import math
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

import charlm.checkpoint as ckpt
from charlm import load
from charlm.checkpoint import load_trainer
from charlm.cli import main
from charlm.config import TrainConfig
from charlm.training.loop import Trainer, TrainingDiverged
from charlm.training.run import train

TEXT = "the time traveller for so it will be convenient to speak of him was expounding\n" * 20
# The book's setup (SGD) on a small file; a text file's default, the auto recipe, is tests/test_auto.py's.
TINY = ["--recipe", "book", "--num-hiddens", "16",
        "--batch-size", "4", "--num-steps", "8", "--max-tokens", "-1",
        "--eval-every", "0", "--sample-every", "0", "--device", "cpu"]
RUN_FILES = {"config.json", "vocab.json", "model.safetensors", "best.safetensors", "trainer.pt",
             "metrics.jsonl", "perplexity.png"}
DIVERGED_EXIT = 1  # cli.main's code for a run that failed, as opposed to a usage error (2)


@pytest.fixture
def book(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(TEXT)
    return path


def tiny(book, **changes):
    return TrainConfig.of(corpus=str(book), max_tokens=-1, num_hiddens=16, batch_size=4, num_steps=8,
                       eval_every=0, sample_every=0, device="cpu").replace(**changes)


def epochs_logged(run):
    """The epoch of every metrics.jsonl line; every line must be whole JSON."""
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def one_error_line(capsys):
    """The error the CLI printed: one line, the last on stderr (log lines may come before it)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.endswith("\n")
    lines = [line for line in err.splitlines() if line.startswith("charlm:")]
    assert len(lines) == 1 and lines[0] == err.splitlines()[-1], err
    assert lines[0].startswith("charlm: error: ")
    return lines[0]


# -- a process killed at an arbitrary moment ----------------------------------------------------------

@pytest.mark.slow
def test_kill_9_mid_training_loses_at_most_one_checkpoint_interval_and_resume_finishes(book, tmp_path):
    run, epochs, save_every = tmp_path / "run", 40, 4
    # CHARLM_KERNELS=0: the Python loops, not a C++ build in this test's fresh cache (a minute)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "CHARLM_KERNELS": "0"}
    argv = [sys.executable, "-m", "charlm", "train", "--corpus", str(book), "--out", str(run), *TINY,
            "--epochs", str(epochs), "--save-every", str(save_every)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and not (
                (run / "trainer.pt").is_file() and (run / "metrics.jsonl").is_file()
                and len((run / "metrics.jsonl").read_bytes().splitlines()) > 2 * save_every):
            time.sleep(0.01)
    finally:
        proc.kill()  # SIGKILL: no handler runs, nothing is flushed or cleaned up
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"

    reached, saved = max(epochs_logged(run)), load_trainer(run / "trainer.pt")
    assert saved["epoch"] % save_every == 0 and saved["batch"] == 0  # a checkpoint due, saved whole
    assert 0 <= reached - saved["epoch"] <= save_every  # at most one checkpoint interval lost
    load(run)  # the weights parse and fit the configuration
    leftovers = {p.name for p in run.iterdir()} - RUN_FILES
    assert all(name.startswith(".") and ".tmp" in name for name in leftovers), leftovers

    (run / ".trainer.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")  # as a kill mid-save leaves it
    assert main(["resume", str(run), "-q"]) == 0
    assert epochs_logged(run) == list(range(1, epochs + 1))  # each epoch once, the lost ones redone
    assert load_trainer(run / "trainer.pt")["epoch"] == epochs
    assert {p.name for p in run.iterdir()} <= RUN_FILES  # and the temporaries are gone


# -- a crash or a full disk while a checkpoint is written ---------------------------------------------

def test_atomic_write_syncs_the_data_before_the_rename_and_the_folder_after_it(tmp_path, monkeypatch):
    events, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        info = os.fstat(fd)
        events.append(("fsync folder",) if stat.S_ISDIR(info.st_mode) else ("fsync file", info.st_size))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("rename", Path(src).name.startswith(".f.bin."), Path(dst).name))
        real_replace(src, dst)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    ckpt.atomic_write(tmp_path / "f.bin", lambda f: f.write(b"data"))
    # all 4 bytes flushed to the temporary file before its fsync; the folder synced after the rename
    assert events == [("fsync file", 4), ("rename", True, "f.bin"), ("fsync folder",)]
    assert (tmp_path / "f.bin").read_bytes() == b"data"


class FullDisk(io.FileIO):
    """A file on a disk that has just filled up: it takes half of what is written, then fails."""

    def write(self, data):
        data = bytes(data)
        super().write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fill_the_disk_after_the_first_checkpoint(run, monkeypatch):
    """checkpoint.atomic_write opens its temporary file with `open`: once the first checkpoint is
    whole (trainer.pt, then model.safetensors), every file it writes is a FullDisk."""
    def disk_open(file, mode="r", *args, **kwargs):
        if "w" in mode and (run / "model.safetensors").exists():
            return FullDisk(file, mode)
        return open(file, mode, *args, **kwargs)
    monkeypatch.setattr(ckpt, "open", disk_open, raising=False)


def test_a_full_disk_mid_training_stops_with_one_clear_line_and_keeps_the_last_checkpoint(
        book, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    fill_the_disk_after_the_first_checkpoint(run, monkeypatch)
    code = main(["train", "--corpus", str(book), "--out", str(run), *TINY, "--epochs", "4",
                 "--save-every", "2"])
    line = one_error_line(capsys)
    assert code == 2
    assert f"{run / 'trainer.pt'}: could not be written: the disk is full" in line
    assert "training stopped after epoch 4" in line and f"`charlm resume {run}`" in line

    saved = load_trainer(run / "trainer.pt")  # the checkpoint of epoch 2, whole
    assert saved["epoch"] == 2
    weights = load(run).model.state_dict()
    assert all(torch.equal(weights[k], saved["model"][k]) for k in weights)  # the same epoch
    assert not list(run.glob(".*.tmp"))  # the half-written temporaries are gone

    monkeypatch.undo()  # space freed: the run continues from its last checkpoint
    assert main(["resume", str(run), "-q"]) == 0
    assert epochs_logged(run) == [1, 2, 3, 4] and load_trainer(run / "trainer.pt")["epoch"] == 4


def test_a_crash_inside_the_serialiser_leaves_every_file_of_the_run_folder_as_it_was(book, tmp_path,
                                                                                     monkeypatch):
    run = tmp_path / "run"
    train(tiny(book, epochs=2, save_every=1), out=run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    trainer = Trainer(tiny(book, epochs=3, save_every=1), run)
    trainer.restore(load_trainer(run / "trainer.pt"))

    def crash(path, state):  # half the file on disk, then the serialiser dies
        ckpt.save_file(path, lambda f: (f.write(b"PK\x03\x04 half"), 1 / 0))
    monkeypatch.setattr(ckpt, "save_trainer", crash)
    with pytest.raises(ZeroDivisionError):
        trainer.fit()
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != "metrics.jsonl"} == \
        {k: v for k, v in before.items() if k != "metrics.jsonl"}
    assert load_trainer(run / "trainer.pt")["epoch"] == 2 and load(run)


# -- a folder training cannot write into --------------------------------------------------------------

@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if training starts: a folder error must come before the data is even read."""
    def refuse(*args, **kwargs):
        raise AssertionError("training started before the run folder was checked")
    monkeypatch.setattr(importlib.import_module("charlm.training.run"), "Trainer", refuse)


def refuse_new_files(monkeypatch, code):
    """Creating a file fails with `code`, as in a read-only folder or on a full disk (as root, chmod
    cannot make a folder read-only, so the refusal is simulated where files are created)."""
    def refuse(*args, dir=None, **kwargs):
        raise OSError(code, os.strerror(code), dir)
    monkeypatch.setattr(tempfile, "mkstemp", refuse)


def test_an_out_folder_under_a_file_is_one_line_before_training(book, tmp_path, capsys, no_training):
    (tmp_path / "file.txt").write_text("not a folder")
    out = tmp_path / "file.txt" / "run"
    assert main(["train", "--corpus", str(book), "--out", str(out), *TINY]) == 2
    assert one_error_line(capsys).endswith(
        f"--out {out}: cannot save a run there: a part of the path is a file, not a folder")


@pytest.mark.parametrize("code, why", [(errno.EROFS, "the file system is read-only"),
                                       (errno.ENOSPC, "the disk is full"),
                                       (errno.EACCES, "permission denied")])
def test_an_out_folder_that_cannot_be_written_is_one_line_before_training(book, tmp_path, capsys,
                                                                          monkeypatch, code, why,
                                                                          no_training):
    refuse_new_files(monkeypatch, code)
    out = tmp_path / "run"
    assert main(["train", "--corpus", str(book), "--out", str(out), *TINY]) == 2
    assert f"--out {out}: cannot save a run there: {why}" in one_error_line(capsys)


def test_the_folder_check_leaves_no_empty_folder_when_the_data_then_fails(tmp_path, capsys):
    out = tmp_path / "runs" / "first"
    assert main(["train", "--corpus", str(tmp_path / "missing.txt"), "--out", str(out), *TINY]) == 2
    assert "missing.txt: no such file" in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_folder_is_one_line_before_training(book, tmp_path, capsys, no_training):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o555)
    assert main(["train", "--corpus", str(book), "--out", str(folder / "run"), *TINY]) == 2
    assert "cannot save a run there: permission denied" in one_error_line(capsys)


def test_resume_into_a_folder_that_became_read_only_is_one_line_and_changes_nothing(book, tmp_path,
                                                                                    capsys, monkeypatch):
    run = tmp_path / "run"
    train(tiny(book, epochs=1), out=run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    refuse_new_files(monkeypatch, errno.EROFS)
    assert main(["resume", str(run), "--epochs", "2"]) == 2
    assert f"{run}: cannot save a run there: the file system is read-only" in one_error_line(capsys)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before


# -- an exploding loss ---------------------------------------------------------------------------------

def test_an_exploding_loss_from_the_command_line_is_one_line_with_advice(book, tmp_path, capsys):
    # With clipping off, steps of lr 100 drive the loss to ~800 nats per token within the first epoch:
    # still a finite float, but its perplexity overflows to inf, so training has diverged.
    run = tmp_path / "run"
    code = main(["train", "--corpus", str(book), "--out", str(run), *TINY, "--epochs", "5",
                 "--save-every", "1", "--lr", "100", "--clip", "0"])
    line = one_error_line(capsys)
    assert code == DIVERGED_EXIT
    # the loss, or first the gradient, becomes non-finite (which, depends on the products' rounding)
    assert ("the loss became" in line or "the gradient norm became" in line)
    assert "lower --lr or clip gradients (--clip 1)" in line
    if (run / "trainer.pt").exists():  # whatever checkpoint there is holds numbers
        assert all(torch.isfinite(t).all() for t in load_trainer(run / "trainer.pt")["model"].values())
        assert all(torch.isfinite(t).all() for t in load(run).model.state_dict().values())


def test_a_non_finite_gradient_stops_before_the_step_so_the_weights_stay_good(book, tmp_path):
    trainer = Trainer(tiny(book, epochs=3, save_every=1), tmp_path / "run")
    ckpt.save_run_files(tmp_path / "run", trainer.model, trainer.data.vocab, trainer.config)
    step, calls = trainer.step, []

    def explode_at_the_end_of_epoch_two(X, Y, state):
        calls.append(1)
        if len(calls) == 2 * len(trainer.batches):  # its gradient, and only that, becomes infinite
            trainer.model.W_hq.register_hook(lambda g: torch.full_like(g, math.inf))
        return step(X, Y, state)
    trainer.step = explode_at_the_end_of_epoch_two
    with pytest.raises(TrainingDiverged, match="gradient norm became inf in epoch 2; lower --lr"):
        trainer.fit()
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert load_trainer(tmp_path / "run" / "trainer.pt")["epoch"] == 1


def test_weights_broken_at_the_end_of_an_epoch_are_never_saved(book, tmp_path):
    trainer = Trainer(tiny(book, epochs=3, save_every=1), tmp_path / "run")
    ckpt.save_run_files(tmp_path / "run", trainer.model, trainer.data.vocab, trainer.config)
    update, calls = trainer.update, []

    def overflow_on_the_last_update_of_epoch_two(loss):
        update(loss)
        calls.append(1)
        if len(calls) == 2 * len(trainer.batches):  # no later forward pass would notice
            with torch.no_grad():
                trainer.model.W_hq[0, 0] = math.inf
    trainer.update = overflow_on_the_last_update_of_epoch_two
    with pytest.raises(TrainingDiverged, match="weights became NaN or infinite in epoch 2; lower --lr"):
        trainer.fit()
    saved = load_trainer(tmp_path / "run" / "trainer.pt")
    assert saved["epoch"] == 1 and all(torch.isfinite(t).all() for t in saved["model"].values())
    assert all(torch.isfinite(t).all() for t in load(tmp_path / "run").model.state_dict().values())
