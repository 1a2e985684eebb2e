"""What torchrun tells each worker in its environment: its rank among how many, whether it is a
restart, and how torchrun may restart it. Free of torch, so that the command line can ask which
process speaks (:func:`is_main`) before torch is imported, and read in this one place."""

from __future__ import annotations

import os
from collections.abc import Mapping


def rank(env: Mapping[str, str] = os.environ) -> int:
    """This worker's rank (``RANK``); 0 outside torchrun."""
    return int(env.get("RANK", "0"))


def is_main(env: Mapping[str, str] = os.environ) -> bool:
    """Whether this process speaks for all: rank 0, or the only process."""
    return rank(env) == 0


def world_size(env: Mapping[str, str] = os.environ) -> int:
    return int(env.get("WORLD_SIZE", "1"))


def local_rank(env: Mapping[str, str] = os.environ) -> int:
    """The worker's rank on its own machine (``LOCAL_RANK``), which picks its GPU."""
    return int(env.get("LOCAL_RANK", "0"))


def launched_by_torchrun(env: Mapping[str, str] = os.environ) -> bool:
    return world_size(env) > 1


def restarts(env: Mapping[str, str] = os.environ) -> int:
    """How many times torchrun has restarted the workers (``TORCHELASTIC_RESTART_COUNT``)."""
    return int(env.get("TORCHELASTIC_RESTART_COUNT", "0"))


def restart_store_hazard(env: Mapping[str, str] = os.environ) -> bool:
    """Whether torchrun may restart these workers (``--max-restarts``) while its agent shares its store
    with them (the c10d rendezvous' default, the static one's only way). Seen with torch 2.13: the
    store keeps its port across attempts, and restarted workers read the failed attempt's addresses
    in it, then fail to connect or wait on them until gloo's 30-minute timeout (the race of
    pytorch/pytorch#135712). TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 gives each attempt a fresh store."""
    may_restart = int(env.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0
    return may_restart and env.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
