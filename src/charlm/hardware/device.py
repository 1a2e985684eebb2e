"""Choosing the device once, at the edge: ``auto`` is CUDA, then Apple's MPS, then the CPU
(:func:`charlm.hardware.machine.choose_device` decides; this turns its choice into a torch device),
and the context that a chosen precision runs the model's forward under."""

from __future__ import annotations

import torch

from . import machine
from .machine import DEVICES

__all__ = ["DEVICES", "autocast", "resolve_device"]


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for a `--device` value; asking for an absent accelerator is an error."""
    return torch.device(machine.choose_device(name, machine.probe()).value)


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The forward pass's context for a precision that :func:`charlm.hardware.machine.choose_precision`
    chose: bf16 autocast for ``"bf16"`` (the weights and the optimizer stay float32), nothing for fp32."""
    return torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16")
