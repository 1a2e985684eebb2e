"""torchrun for the tests: a launch that can neither hang nor leave a process behind.

Killing torchrun alone is not enough. Its workers are not in its process group: torch's
SubprocessHandler starts each in a session of its own (``start_new_session=True``), and a kernel
build under a worker runs in ninja's own groups again. So a timeout that killed the launcher once
left both workers running as orphans for 11 minutes (issue 29).

What finds every process of a launch instead, whichever session, group or parent it ends up in, is
its environment: each launch sets ``CHARLM_TEST_LAUNCH`` to a fresh id, which the launcher, its
workers and their children all inherit. The launcher itself also starts a session of its own, so
that it and its helpers go with one ``killpg``.

    with Torchrun(["--nproc_per_node", "2", ...], ["train", ...], cwd=tmp_path, timeout=90) as run:
        done = run.wait()          # a CompletedProcess; past 90 s: everything killed, the test failed
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

TAG = "CHARLM_TEST_LAUNCH"
# After the launcher has gone, how long a process of its launch may take to follow it. torchrun
# waits for its workers before it exits, so only a leak should ever need this.
STRAGGLER_SECONDS = 10.0


class Torchrun:
    """One ``python -m torch.distributed.run LAUNCHER_ARGS -m charlm CHARLM_ARGS``, started at once,
    its output kept in files (two launchers at a time cannot block each other on a full pipe)."""

    def __init__(self, launcher_args: list[str], charlm_args: list[str], *, cwd: Path, timeout: float,
                 env: dict[str, str] | None = None) -> None:
        self.tag, self.timeout = uuid.uuid4().hex, timeout
        self.deadline = time.monotonic() + timeout
        self.out, self.err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1", **(env or {}),
               TAG: self.tag}
        argv = [sys.executable, "-m", "torch.distributed.run", *launcher_args, "-m", "charlm", *charlm_args]
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=self.out, stderr=self.err,
                                     start_new_session=True)

    def __enter__(self) -> Torchrun:
        return self

    def __exit__(self, *exc: object) -> None:
        """Whatever happened in the test: nothing of this launch outlives it."""
        try:
            if self.proc.poll() is None:
                self.kill()
            self.check_nothing_left()
        finally:
            self.out.close()
            self.err.close()

    def wait(self) -> subprocess.CompletedProcess:
        """The launcher's exit status and output. Past the timeout, every process of the launch is
        killed and the test fails with the output so far; either way, none may be left after it."""
        try:
            self.proc.wait(timeout=max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.kill()
            stdout, stderr = self.output()
            pytest.fail(f"torchrun ran past its {self.timeout:g} s and was killed with all its processes; "
                        f"its output so far:\n{stdout}\n{stderr}")
        self.check_nothing_left()
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, *self.output())

    def output(self) -> tuple[str, str]:
        return _read(self.out), _read(self.err)

    def workers(self) -> dict[int, int]:
        """The launcher's workers running now, rank -> pid (new pids after torchrun restarts them)."""
        children = [pid for pid in tagged(self.tag) if _parent(pid) == self.proc.pid]
        return {rank: pid for pid in children if (rank := _rank(pid)) is not None}

    def kill(self) -> None:
        """SIGKILL to the launcher's group first, so that nothing starts new workers, then to every
        process that carries this launch's tag, until none is left."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        _until(lambda: not _kill_all(tagged(self.tag)), seconds=STRAGGLER_SECONDS)

    def check_nothing_left(self) -> None:
        """Fail the test if a process of this launch outlives the launcher (after killing it)."""
        if _until(lambda: not tagged(self.tag), seconds=STRAGGLER_SECONDS):
            return
        left = [f"{pid}: {_command(pid)}" for pid in tagged(self.tag)]
        _kill_all(tagged(self.tag))
        pytest.fail("processes of a torchrun launch outlived it by "
                    f"{STRAGGLER_SECONDS:g} s (killed now):\n" + "\n".join(left))


def tagged(tag: str) -> list[int]:
    """The live processes whose environment holds ``CHARLM_TEST_LAUNCH=tag``. A zombie's environment
    reads empty: it has already exited, and only waits for its parent to collect its status."""
    entry = f"{TAG}={tag}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:  # it exited meanwhile, or is not ours to read
            continue
        if entry in environ.split(b"\0"):
            pids.append(int(proc.name))
    return pids


def _parent(pid: int) -> int | None:
    """The parent's pid, from /proc/PID/stat: ``pid (comm) state ppid ...``, where comm may hold spaces
    and parentheses, hence the split at the last ')'."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _rank(pid: int) -> int | None:
    """The RANK torchrun gave a worker, from its environment; None if it has none, or is gone."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [int(entry[5:]) for entry in environ if entry.startswith(b"RANK=")]
    return ranks[0] if ranks else None


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "(gone)"


def _kill_all(pids: list[int]) -> list[int]:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def _until(done, *, seconds: float) -> bool:
    """Poll `done()` every 0.1 s for up to `seconds`; whether it came true."""
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _read(file) -> str:
    """All a file holds, read without moving its offset, which the launcher shares while it writes."""
    return os.pread(file.fileno(), os.fstat(file.fileno()).st_size, 0).decode(errors="replace")
