"""Recurrent language models: the book's layers from scratch, the torch.nn ones, and the LM around them."""

from .builtin import builtin_layers, scratch_to_builtin_tensors
from .lm import RNNLM, ModelConfig, copy_scratch_to_builtin, detach_state, scratch_to_builtin_state_dict
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
    "scratch_to_builtin_state_dict",
    "scratch_to_builtin_tensors",
]
