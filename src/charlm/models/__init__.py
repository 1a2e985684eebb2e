"""Recurrent language models: the book's layers from scratch, the torch.nn ones, and the LM around them.

Which program computes a recurrence when (the book's loop, torch.nn, the fused Python path, the C++
kernels, the C++ greedy decoder, the compressor's own) and the test that holds each to the book:
docs/implementations.md. The fast form's choice is made in one place, :func:`.fused.choose_path`.
"""

from .builtin import builtin_layers, scratch_to_builtin_tensors
from .config import ModelConfig
from .lm import (
    RNNLM,
    copy_scratch_to_builtin,
    detach_state,
    evaluating,
    scratch_to_builtin_state_dict,
    state_from_tensors,
    state_tensors,
)
from .scratch import GRUScratch, LSTMScratch, RNNScratch, StackedScratch, State

__all__ = [
    "RNNLM",
    "GRUScratch",
    "LSTMScratch",
    "ModelConfig",
    "RNNScratch",
    "StackedScratch",
    "State",
    "builtin_layers",
    "copy_scratch_to_builtin",
    "detach_state",
    "evaluating",
    "scratch_to_builtin_state_dict",
    "scratch_to_builtin_tensors",
    "state_from_tensors",
    "state_tensors",
]
