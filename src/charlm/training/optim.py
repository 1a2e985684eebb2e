"""Optimizers, learning-rate schedules and gradient clipping for the training loop."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from ..config import TrainConfig


def make_optimizer(config: TrainConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """SGD without momentum is exactly the book's ``param -= lr * param.grad`` (d2l §3.2.5)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def make_schedule(config: TrainConfig, optimizer: torch.optim.Optimizer):
    """`step`: lr x lr_gamma every lr_step epochs; `plateau`: x lr_gamma after lr_step evaluations
    without a better validation loss; `none`: constant. `cosine` is set per step by the trainer
    (:func:`cosine_lr`), since it follows the run's progress, which may be measured in time."""
    if config.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, max(config.lr_step, 1), config.lr_gamma)
    if config.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=config.lr_gamma,
                                                          patience=config.lr_step)
    return None


def cosine_lr(config: TrainConfig, step: int, progress: float) -> float:
    """The learning rate of optimizer step `step` (from 0) when a fraction `progress` of the run is
    done: a linear warm-up over ``warmup_steps`` (Goyal et al. 2017) times a half cosine from ``lr``
    down to ``min_lr`` (Loshchilov & Hutter 2017).

    With lr 1, min_lr 0.1 and 10 warm-up steps: step 4 at progress 0 -> 0.5; after the warm-up,
    progress 0.5 -> 0.55 (half way down), progress 1 -> 0.1.
    """
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    p = min(max(progress, 0.0), 1.0)
    return warm * (config.min_lr + (config.lr - config.min_lr) * 0.5 * (1 + math.cos(math.pi * p)))


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
