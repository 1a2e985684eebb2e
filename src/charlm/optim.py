"""Optimizers, learning-rate schedules and gradient clipping for the training loop."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from .config import TrainConfig


def make_optimizer(config: TrainConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """SGD without momentum is exactly the book's ``param -= lr * param.grad`` (d2l §3.2.5)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def make_schedule(config: TrainConfig, optimizer: torch.optim.Optimizer):
    """`step`: lr x lr_gamma every lr_step epochs; `plateau`: x lr_gamma after lr_step evaluations
    without a better validation loss; `none`: constant."""
    if config.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, max(config.lr_step, 1), config.lr_gamma)
    if config.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=config.lr_gamma,
                                                          patience=config.lr_step)
    return None


def grad_clipping(params: Iterable[nn.Parameter], theta: float) -> float:
    """Rescale all gradients together so that their global L2 norm is at most `theta` (d2l §8.5.5):
    ``g <- min(1, theta / ||g||) g``. Returns the norm before clipping; ``theta == 0`` only measures.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
    if theta > 0 and norm > theta and math.isfinite(norm):
        for g in grads:
            g.mul_(theta / norm)
    return norm
