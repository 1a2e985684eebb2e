"""Choosing the device once, at the edge: ``auto`` is CUDA, then Apple's MPS, then the CPU
(:func:`charlm.hardware.machine.choose_device` decides; this turns its choice into a torch device)."""

from __future__ import annotations

import torch

from . import machine
from .machine import DEVICES

__all__ = ["DEVICES", "resolve_device"]


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for a `--device` value; asking for an absent accelerator is an error."""
    return torch.device(machine.choose_device(name, machine.probe()).value)
