"""Data-parallel training under torchrun: 2 CPU processes on gloo equal one process at the same batch."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from charlm import load
from charlm.checkpoint import load_trainer
from charlm.distributed import DistInfo

TEXT = "the time traveller for so it will be convenient to speak of him was expounding\n" * 20
# fp32: the equalities below are to float rounding, which bf16 (auto's choice on some CPUs) would swamp.
# The book's setup: no dropout, whose masks differ between one process and two.
ARGS = ["--recipe", "book", "--max-tokens", "-1", "--num-hiddens", "16", "--batch-size", "4",
        "--num-steps", "8",
        "--epochs", "3", "--sample-every", "0", "--eval-every", "3", "--device", "cpu", "--precision", "fp32"]



def train_losses(run_dir):
    """Training loss of each epoch, from a run folder's metrics.jsonl."""
    return [json.loads(line)["train_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _charlm(*argv, cwd, nproc=None):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable]
    if nproc:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                     "--master_addr", "127.0.0.1", "--master_port", str(_free_port())]
    return subprocess.run([*launcher, "-m", "charlm", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_each_rank_takes_its_own_contiguous_block_of_rows():
    batch = torch.arange(8).reshape(4, 2)
    assert DistInfo(0, 2, 0).shard(batch).tolist() == [[0, 1], [2, 3]]
    assert DistInfo(1, 2, 1).shard(batch).tolist() == [[4, 5], [6, 7]]


def test_two_processes_match_one_process_at_the_same_global_batch(tmp_path):
    (tmp_path / "book.txt").write_text(TEXT)
    one = _charlm("train", "--corpus", "book.txt", "--out", "one", *ARGS, cwd=tmp_path)
    two = _charlm("train", "--corpus", "book.txt", "--out", "two", *ARGS, cwd=tmp_path, nproc=2)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("run saved in") == 1  # only rank 0 reports
    losses = [train_losses(tmp_path / run) for run in ("one", "two")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    a, b = load(tmp_path / "one").model.state_dict(), load(tmp_path / "two").model.state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6)


def test_under_torchrun_the_auto_recipe_chooses_once_for_every_process(tmp_path):
    (tmp_path / "book.txt").write_text(TEXT * 20)
    done = _charlm("train", "book.txt", "--out", "r", "--max-minutes", "0.05", "--device", "cpu",
                   cwd=tmp_path, nproc=2)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("auto: ") == 1  # rank 0 measured, chose and said so; rank 1 took its word
    assert load(tmp_path / "r").config.model.cell == "lstm"


def test_a_batch_that_does_not_split_evenly_is_a_clear_error(tmp_path):
    (tmp_path / "book.txt").write_text(TEXT)
    done = _charlm("train", "--corpus", "book.txt", "--out", "r", *ARGS, "--batch-size", "3",
                   cwd=tmp_path, nproc=2)
    assert done.returncode != 0
    assert "--batch-size 3 must be divisible by the number of processes (2)" in done.stderr


def test_interrupted_two_process_run_resumes_exactly(tmp_path):
    (tmp_path / "book.txt").write_text(TEXT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
            "127.0.0.1", "--master_port", str(_free_port()), "-m", "charlm", "train", "--corpus",
            "book.txt", "--out", "cut", *ARGS, "--epochs", "100000", "--eval-every", "0",
            "--save-every", "0"]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (tmp_path / "cut" / "metrics.jsonl").is_file():
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)  # torchrun passes it on to both workers as SIGTERM
    proc.communicate(timeout=120)
    saved = load_trainer(tmp_path / "cut" / "trainer.pt")
    assert saved["hidden"][0].shape[1] == 4  # the whole batch's rows, gathered from both ranks
    epochs = str(saved["epoch"] + 2)
    resumed = _charlm("resume", "cut", "--epochs", epochs, cwd=tmp_path, nproc=2)
    assert resumed.returncode == 0, resumed.stderr
    assert _charlm("train", "--corpus", "book.txt", "--out", "straight", *ARGS, "--epochs", epochs,
                   "--eval-every", "0", cwd=tmp_path, nproc=2).returncode == 0
    losses = [train_losses(tmp_path / run) for run in ("cut", "straight")]
    # Same ranks, same reductions: equal but for the order the interrupted epoch's loss was summed.
    assert losses[0] == pytest.approx(losses[1], rel=1e-9)
