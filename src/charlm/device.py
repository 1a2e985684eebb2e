"""Choosing the device once, at the edge: ``auto`` is CUDA, then Apple's MPS, then the CPU."""

from __future__ import annotations

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for a `--device` value; asking for an absent accelerator is an error."""
    base = name.split(":")[0]
    if base not in DEVICES:
        raise ValueError(f"--device must be one of {', '.join(DEVICES)} (or cuda:N), got {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    if base == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine")
    return torch.device(name)
