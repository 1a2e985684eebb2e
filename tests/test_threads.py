"""The thread governor gives way to other processes and takes the CPUs back when they are free."""

import pytest
import torch

from charlm.hardware import machine
from charlm.hardware.threads import _TICK, ThreadGovernor, busy_cpu_seconds

TWO_CORES = machine.Machine(cores=2)

STAT = """cpu  400 0 200 1000 50 0 0 0 0 0
cpu0 100 0 100 500 50 0 0 0 0 0
cpu1 300 0 100 500 0 0 0 0 0 0
intr 12345
"""


def test_busy_time_counts_every_state_but_idle_and_iowait_on_the_cpus_asked():
    ticks = busy_cpu_seconds({1}, STAT) * _TICK
    assert round(ticks) == 400  # cpu1: user 300 + system 100
    both = busy_cpu_seconds({0, 1}, STAT) * _TICK
    assert round(both) == 600  # cpu0's 500 idle and 50 iowait are not busy


class FakeClock:
    """Wall time, the CPUs' busy time and this process's own CPU time, advanced by hand."""

    def __init__(self) -> None:
        self.now, self.busy, self.own = 0.0, 0.0, 0.0

    def advance(self, seconds: float, ours: float, others: float) -> None:
        """`seconds` pass; this process keeps `ours` CPUs busy and other processes `others`."""
        self.now += seconds
        self.own += ours * seconds
        self.busy += (ours + others) * seconds


def governor(clock: FakeClock) -> ThreadGovernor:
    return ThreadGovernor(TWO_CORES, interval=1.0, busy=lambda: clock.busy, own=lambda: clock.own,
                          clock=lambda: clock.now)


def test_a_busy_neighbour_takes_a_thread_and_gives_it_back_when_it_stops():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    clock = FakeClock()
    try:
        with governor(clock) as g:
            assert g.threads == 2 and torch.get_num_threads() == 2
            clock.advance(1.5, ours=2.0, others=0.0)
            g.tick()
            assert g.threads == 2  # alone: both CPUs
            clock.advance(1.5, ours=1.0, others=1.0)  # a busy loop takes one CPU
            g.tick()
            assert g.threads == 1 and torch.get_num_threads() == 1
            clock.advance(0.5, ours=1.0, others=0.0)
            g.tick()
            assert g.threads == 1  # re-measured only once a second
            clock.advance(1.0, ours=1.0, others=0.0)  # the neighbour is gone
            g.tick()
            assert g.threads == 2
        assert torch.get_num_threads() == 2  # restored on leaving
    finally:
        torch.set_num_threads(before)


def test_the_governor_never_uses_more_threads_than_the_process_was_given():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as OMP_NUM_THREADS=1 or torchrun's one thread per process
    clock = FakeClock()
    try:
        with governor(clock) as g:
            clock.advance(2.0, ours=1.0, others=0.0)
            g.tick()
            assert g.threads == 1
    finally:
        torch.set_num_threads(before)


def test_without_a_proc_stat_the_threads_stay_one_per_cpu():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    clock = FakeClock()
    try:
        g = ThreadGovernor(TWO_CORES, busy=lambda: None, own=lambda: clock.own, clock=lambda: clock.now)
        clock.advance(2.0, ours=1.0, others=2.0)
        g.tick()
        assert g.threads == 2
    finally:
        torch.set_num_threads(before)


def test_charlm_threads_fixes_the_count_whatever_the_load(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("CHARLM_THREADS", "1")
    clock = FakeClock()
    try:
        with governor(clock) as g:
            clock.advance(2.0, ours=1.0, others=0.0)
            g.tick()
            assert g.threads == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("CHARLM_THREADS", "many")
        with pytest.raises(ValueError, match="CHARLM_THREADS must be auto or a count >= 1, got 'many'"):
            governor(clock)
    finally:
        torch.set_num_threads(before)
