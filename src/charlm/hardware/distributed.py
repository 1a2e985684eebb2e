"""Data-parallel training on PyTorch DDP, started by ``torchrun``.

``torchrun --nproc_per_node N -m charlm train ...`` starts N processes; each builds the same model
from the same seed, reads the same batch stream, and trains on its own contiguous block of rows of
every global batch: rank r takes rows ``[r * B/N, (r + 1) * B/N)``. Keeping the same rows on the same
rank is what lets sequential partitioning carry each row's hidden state from batch to batch. DDP
averages the gradients, so each step equals one process's step on the whole batch of B rows (up to
float rounding). Rank 0 alone logs, samples and writes the run folder. Backend: gloo on CPU, nccl
on CUDA.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from . import launch

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's block of rows of a global batch (B, T) -> (B / world_size, T)."""
        rows = batch.shape[0] // self.world_size
        return batch[self.rank * rows:(self.rank + 1) * rows]


SINGLE = DistInfo(rank=0, world_size=1, local_rank=0)


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes in the environment; one process: SINGLE."""
    if not launch.launched_by_torchrun():
        return SINGLE, device
    info = DistInfo(launch.rank(), launch.world_size(), launch.local_rank())
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info, device


def from_main(make: Callable[[], T], info: DistInfo) -> T:
    """`make()` computed by rank 0 alone and sent to every rank, so that a choice that depends on a
    measurement (the auto recipe's speeds) is the same in every process; one process: `make()`."""
    if info.world_size == 1:
        return make()
    box = [make() if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_batch_size(batch_size: int, info: DistInfo) -> None:
    if batch_size % info.world_size:
        raise ValueError(f"--batch-size {batch_size} must be divisible by the number of processes "
                         f"({info.world_size}): each takes an equal block of rows")


def sum_across(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """Sum numbers over all ranks (for epoch totals); unchanged in a single process."""
    if info.world_size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def teardown(*, wait_for_all: bool = False) -> None:
    """Leave the process group. After a successful run, first wait for every rank (rank 0 may still
    be writing files): a rank that leaves early can abort the others' gloo connections. After an
    error, leave at once; waiting for a rank that failed would hang."""
    if dist.is_initialized():
        if wait_for_all:
            dist.barrier()
        dist.destroy_process_group()


def share_clock(seconds: float, signalled: bool, info: DistInfo, device: torch.device) -> tuple[float, bool]:
    """Rank 0's `seconds`, and whether any rank was `signalled`, on every rank: one collective.

    Each rank's own clock differs a little from the others' (and a lot on a loaded machine), so a
    rank that asked its own clock whether the budget was spent could leave the loop while another
    waited in the next epoch's collective forever. Every time-based decision reads rank 0's clock
    instead; a signal caught by any rank stops them all at the same step."""
    if info.world_size == 1:
        return seconds, signalled
    # Summed: the other ranks send 0 for the clock, and the flags add up to the ranks signalled.
    tensor = torch.tensor([seconds if info.is_main else 0.0, float(signalled)], dtype=torch.float64,
                          device=device)
    dist.all_reduce(tensor)
    return float(tensor[0]), bool(tensor[1] > 0)


def gather_rows(state: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """A hidden state (layers, B / N, H) of every rank joined into (layers, B, H), in rank order."""
    if info.world_size == 1:
        return state
    parts = [torch.empty_like(state) for _ in range(info.world_size)]
    dist.all_gather(parts, state.contiguous())
    return torch.cat(parts, dim=1)


def own_rows(state: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's block of a whole-batch hidden state (layers, B, H) -> (layers, B / N, H)."""
    return info.shard(state.transpose(0, 1)).transpose(0, 1)
