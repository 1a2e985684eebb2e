"""Data-parallel training under torchrun: 2 CPU processes on gloo equal one process at the same batch,
two nodes on a c10d rendezvous equal two processes on one, and a restarted job resumes its run exactly.
Every launch goes through tests/torchrun.py, so none can hang the suite or leave a process behind."""

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
from charlm.cli import continue_after_restart
from charlm.hardware.distributed import DistInfo
from charlm.hardware.launch import restart_store_hazard
from charlm.training.run import train
from torchrun import Torchrun, tagged

TEXT = "the time traveller for so it will be convenient to speak of him was expounding\n" * 20
# fp32: the equalities below are to float rounding, which bf16 (auto's choice on some CPUs) would swamp.
# The book's setup: no dropout, whose masks differ between one process and two.
ARGS = ["--recipe", "book", "--max-tokens", "-1", "--num-hiddens", "16", "--batch-size", "4",
        "--num-steps", "8",
        "--epochs", "3", "--sample-every", "0", "--eval-every", "3", "--device", "cpu", "--precision", "fp32"]



def train_losses(run_dir):
    """Training loss of each record in a run folder's metrics.jsonl (epochs, and any mid-epoch ones)."""
    return [json.loads(line)["train_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# One launch here takes 5-15 s on 2 idle cores; the limit leaves room for a machine busy with other tests,
# and a hang still ends in minutes, with every process of the launch killed (tests/torchrun.py).
LAUNCH_SECONDS = 90


def _launcher(nproc: int, *more: str) -> list[str]:
    """torchrun's options for `nproc` workers on this machine."""
    return ["--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
            *more]


def _charlm(*argv, cwd, nproc=None):
    """`charlm ARGV` in one process, or under torchrun with `nproc` workers."""
    if nproc:
        with Torchrun(_launcher(nproc), list(argv), cwd=cwd, timeout=LAUNCH_SECONDS) as run:
            return run.wait()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "charlm", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=LAUNCH_SECONDS)


def assert_same_run(one, two):
    """Two run folders trained alike: the same loss each epoch, the same weights, to float rounding."""
    losses = [train_losses(run) for run in (one, two)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    a, b = load(one).model.state_dict(), load(two).model.state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-6)


def _wait_for(condition, run: Torchrun) -> None:
    """Poll `condition()` while the launch runs; fail with its output if the launch ends or runs out of
    time first."""
    while not condition():
        if run.proc.poll() is not None or time.monotonic() > run.deadline:
            stdout, stderr = run.output()
            pytest.fail(f"the launch ended or ran out of time first; its output:\n{stdout}\n{stderr}")
        time.sleep(0.1)


@pytest.mark.slow
def test_a_launch_past_its_time_fails_the_test_and_leaves_no_process_behind(tmp_path):
    """What every launch here relies on: a hang costs its timeout, never a stuck suite or an orphan."""
    (tmp_path / "book.txt").write_text(TEXT)
    argv = ["train", "--corpus", "book.txt", "--out", "r", *ARGS, "--epochs", "100000"]
    with Torchrun(_launcher(2), argv, cwd=tmp_path, timeout=LAUNCH_SECONDS) as run:
        _wait_for(lambda: len(run.workers()) == 2, run)  # each in a session of its own, not the launcher's
        run.deadline = time.monotonic()  # as if it had hung until now
        with pytest.raises(pytest.fail.Exception, match=f"ran past its {LAUNCH_SECONDS} s and was killed"):
            run.wait()
        assert tagged(run.tag) == []


def test_each_rank_takes_its_own_contiguous_block_of_rows():
    batch = torch.arange(8).reshape(4, 2)
    assert DistInfo(0, 2, 0).shard(batch).tolist() == [[0, 1], [2, 3]]
    assert DistInfo(1, 2, 1).shard(batch).tolist() == [[4, 5], [6, 7]]


@pytest.mark.slow
def test_two_processes_match_one_process_at_the_same_global_batch(tmp_path):
    (tmp_path / "book.txt").write_text(TEXT)
    one = _charlm("train", "--corpus", "book.txt", "--out", "one", *ARGS, cwd=tmp_path)
    two = _charlm("train", "--corpus", "book.txt", "--out", "two", *ARGS, cwd=tmp_path, nproc=2)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("run saved in") == 1  # only rank 0 reports
    assert_same_run(tmp_path / "one", tmp_path / "two")


@pytest.mark.slow
def test_under_torchrun_the_auto_recipe_chooses_once_for_every_process(tmp_path):
    (tmp_path / "book.txt").write_text(TEXT * 20)
    done = _charlm("train", "book.txt", "--out", "r", "--max-minutes", "0.05", "--device", "cpu",
                   cwd=tmp_path, nproc=2)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("auto: ") == 1  # rank 0 measured, chose and said so; rank 1 took its word
    assert load(tmp_path / "r").config.model.cell == "lstm"


@pytest.mark.slow
def test_a_batch_that_does_not_split_evenly_is_a_clear_error(tmp_path):
    (tmp_path / "book.txt").write_text(TEXT)
    done = _charlm("train", "--corpus", "book.txt", "--out", "r", *ARGS, "--batch-size", "3",
                   cwd=tmp_path, nproc=2)
    assert done.returncode != 0
    assert "--batch-size 3 must be divisible by the number of processes (2)" in done.stderr


@pytest.mark.slow
def test_interrupted_two_process_run_resumes_exactly(tmp_path):
    (tmp_path / "book.txt").write_text(TEXT)
    argv = ["train", "--corpus", "book.txt", "--out", "cut", *ARGS, "--epochs", "100000", "--eval-every", "0",
            "--save-every", "0"]
    with Torchrun(_launcher(2), argv, cwd=tmp_path, timeout=LAUNCH_SECONDS) as run:
        _wait_for(lambda: (tmp_path / "cut" / "metrics.jsonl").is_file(), run)
        time.sleep(1.0)
        run.proc.send_signal(signal.SIGINT)  # torchrun passes it on to both workers
        run.wait()
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


# ---- several machines, on torchrun's own rendezvous and restarts (docs/distributed.md) ---------------


@pytest.mark.slow
def test_two_nodes_on_a_c10d_rendezvous_train_as_two_processes_do(tmp_path):
    """Two launchers of one worker each, joined by the c10d rendezvous as two machines would be (here
    both on loopback, sharing the run folder as a shared file system would)."""
    (tmp_path / "book.txt").write_text(TEXT)
    node = ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--rdzv-id", "two-nodes"]
    argv = ["train", "--corpus", "book.txt", "--out", "nodes", *ARGS]
    with Torchrun(node, argv, cwd=tmp_path, timeout=LAUNCH_SECONDS) as first, \
            Torchrun(node, argv, cwd=tmp_path, timeout=LAUNCH_SECONDS) as second:
        nodes = [first.wait(), second.wait()]
    for done in nodes:
        assert done.returncode == 0, done.stderr
    assert "".join(done.stdout for done in nodes).count("run saved in") == 1  # rank 0, on either node
    assert _charlm("train", "--corpus", "book.txt", "--out", "one-node", *ARGS, cwd=tmp_path,
                   nproc=2).returncode == 0
    assert_same_run(tmp_path / "nodes", tmp_path / "one-node")


def test_a_restarted_worker_continues_only_the_run_its_own_command_started(tmp_path, monkeypatch):
    (tmp_path / "book.txt").write_text(TEXT)
    given = {"corpus": str(tmp_path / "book.txt"), "max_tokens": -1, "num_hiddens": 16, "batch_size": 4,
             "num_steps": 8, "epochs": 1, "sample_every": 0, "device": "cpu", "precision": "fp32"}
    train(out=tmp_path / "run", **given)
    assert not continue_after_restart(tmp_path / "run", given)  # a first start: the folder is refused
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # as torchrun's agent sets it in a restart
    assert continue_after_restart(tmp_path / "run", given)
    assert not continue_after_restart(tmp_path / "run", {**given, "num_hiddens": 32})  # another run's folder
    assert not continue_after_restart(tmp_path / "new", given)  # died before its first checkpoint


def test_restarts_over_the_store_torchruns_agent_shares_get_a_note():
    restarts = {"TORCHELASTIC_MAX_RESTARTS": "1"}  # as torchrun's agent sets them for its workers
    assert restart_store_hazard({**restarts, "TORCHELASTIC_USE_AGENT_STORE": "True"})
    assert not restart_store_hazard({**restarts, "TORCHELASTIC_USE_AGENT_STORE": "False"})
    assert not restart_store_hazard({**restarts, "TORCHELASTIC_MAX_RESTARTS": "0",
                                     "TORCHELASTIC_USE_AGENT_STORE": "True"})
    assert not restart_store_hazard({})  # no torchrun


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_the_run_resumes_from_its_last_checkpoint(tmp_path):
    (tmp_path / "book.txt").write_text(TEXT)
    epochs = 20  # about 0.3 s each: the kill comes long before the end, even on a busy machine
    # A checkpoint every 20 of an epoch's 45 steps: the restart may resume mid-epoch or at an epoch's end.
    argv = ["train", "--corpus", "book.txt", *ARGS, "--epochs", str(epochs), "--eval-every", "0",
            "--save-every", "20steps"]
    # Restarts need the c10d rendezvous and a fresh store for each attempt's workers: in the store torchrun's
    # agent shares by default, the restarted workers can read the old attempt's addresses and hang (torch
    # 2.13, pytorch/pytorch#135712; docs/distributed.md).
    launcher = ["--nproc_per_node", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                f"127.0.0.1:{_free_port()}", "--max-restarts", "1"]
    with Torchrun(launcher, [*argv, "--out", "killed"], cwd=tmp_path, timeout=2 * LAUNCH_SECONDS,
                  env={"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}) as run:
        _wait_for(lambda: (tmp_path / "killed" / "trainer.pt").is_file() and len(run.workers()) == 2, run)
        saved = load_trainer(tmp_path / "killed" / "trainer.pt")
        os.kill(run.workers()[1], signal.SIGKILL)  # rank 1, as a machine or a process would die
        done = run.wait()
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("torchrun restarted the workers (restart 1)") == 1, done.stdout  # rank 0's line
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE" not in done.stderr  # no note: each attempt had its own store
    assert saved["epoch"] < epochs // 2, saved["epoch"]  # killed mid-run
    records = [json.loads(line) for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    ends = [r["epoch"] for r in records if "batch" not in r]  # the records of whole epochs
    assert ends == list(range(1, epochs + 1))  # each once: none lost, none twice
    straight = _charlm(*argv, "--out", "straight", cwd=tmp_path, nproc=2)
    assert straight.returncode == 0, straight.stderr
    assert_same_run(tmp_path / "killed", tmp_path / "straight")


# Loaded by every Python process started with this folder on PYTHONPATH: rank 1's clock runs 1,000
# times fast, so by its own clock a budget of 6 s is spent at its first batch.
FAST_CLOCK_ON_RANK_1 = """
import os, time
if os.environ.get("RANK") == "1":
    _real = time.perf_counter
    _start = _real()
    time.perf_counter = lambda: _start + 1000 * (_real() - _start)
"""


@pytest.mark.slow
def test_ranks_whose_clocks_disagree_stop_together_when_rank_0s_budget_is_spent(tmp_path):
    """Each rank used to ask its own clock: the rank past its budget left the loop, the other went
    on into the next epoch and waited in a collective for ever (issue 29). Rank 0's clock decides."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(FAST_CLOCK_ON_RANK_1)
    (tmp_path / "book.txt").write_text(TEXT)
    argv = ["train", "--corpus", "book.txt", "--out", "r", *ARGS, "--epochs", "100000",
            "--max-minutes", "0.1", "--eval-every", "0"]
    env = {"PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    with Torchrun(_launcher(2), argv, cwd=tmp_path, timeout=LAUNCH_SECONDS, env=env) as run:
        done = run.wait()
    assert done.returncode == 0, done.stderr
    last = json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[-1])
    assert "the time budget of 0.1 minutes is spent" in last["stopped"]
    assert last["epoch"] > 1 and last["elapsed"] >= 6  # rank 0's 6 s, not rank 1's first batch


@pytest.mark.parametrize("rank, probes", [(0, 1), (1, 0)])
def test_only_rank_0_probes_the_run_folder(tmp_path, monkeypatch, rank, probes):
    """Each rank probing at once removed the folder it had just made while another rank was still
    probing it: rank 1 failed with "cannot save a run there: No such file or directory" (seen in CI
    under torchrun). Rank 0 alone saves, so it alone probes."""
    from charlm import checkpoint
    from charlm.hardware import launch
    from charlm.training import run as run_module

    (tmp_path / "book.txt").write_text(TEXT)
    seen = []
    monkeypatch.setattr(launch, "rank", lambda env=os.environ: rank)
    monkeypatch.setattr(checkpoint, "check_writable", lambda *a, **k: seen.append(a))
    run_module.train(corpus=str(tmp_path / "book.txt"), epochs=1, num_hiddens=8, batch_size=4, num_steps=8,
                     max_tokens=-1, eval_every=0, sample_every=0, device="cpu", out=tmp_path / "r")
    assert len(seen) == probes
