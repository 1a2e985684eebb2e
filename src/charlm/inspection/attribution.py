"""Why this token: how much each earlier token of a text raised or lowered a model's log-probability
of one token, which the explorer draws under a clicked character.

    ids, position --attribute(model, ids, position, window)--> Attribution: one score per token of
                                                               the window before `position`

Two measures, both in nats of the token's log-probability:

- ``"gradient"``: gradient x input (Shrikumar et al. 2017; Simonyan et al. 2014 for the gradient), the
  gradient of log p with respect to each input row (the token's embedding, or its one-hot row) times
  that row, summed: a first-order estimate of what taking the token's input away would change. One
  forward and one backward pass over the window.
- ``"occlusion"`` (Zeiler & Fergus 2014): log p with the whole text, minus log p with that one token
  deleted from the text, for every token of the window: exact for one deletion, and ``window``
  forward passes of the window, run as one batch.

The tokens before the window are read first, with no gradient, so the log-probability is the one
``read``/``score`` give the same position (everything before it, from a zero state); the window only
bounds which tokens are scored. tests/test_attribution.py checks that deleting the tokens each
measure ranks highest changes log p more than deleting as many tokens at random.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import Tensor

from ..models import RNNLM
from ..models.config import FROM_SCRATCH

__all__ = ["MAX_WINDOW", "METHODS", "Attribution", "attribute", "log_prob"]

METHODS = ("gradient", "occlusion")
# Occlusion runs `window` copies of the window: 1,000 x 1,000 tokens is seconds for a 2 x 256 LSTM on
# two cores, and a page of text is a few thousand characters.
MAX_WINDOW = 1000


@dataclass
class Attribution:
    """Why ``ids[position]`` was as likely as it was: ``scores[i]`` is the share of token ``start + i``
    in its log-probability ``logprob`` (nats; positive: that token made it likelier)."""

    position: int
    start: int
    logprob: float
    scores: Tensor  # (position - start,) float32
    method: str

    def top(self, count: int) -> list[int]:
        """The positions of the `count` tokens with the largest scores, largest first."""
        order = torch.argsort(self.scores, descending=True)[:count]
        return [self.start + int(i) for i in order]


def attribute(model: RNNLM, ids: Tensor, position: int, *, window: int = 200,
              method: str = "gradient") -> Attribution:
    """The share of each of the `window` tokens before ``ids[position]`` (1-D `ids`) in the model's
    log-probability of that token, by `method` (:data:`METHODS`, see the module docstring)."""
    _check(model, ids, position, window, method)
    start = max(0, position - window)
    device = next(model.parameters()).device
    ids = ids.to(device)
    with _eval_mode(model):
        state = _state_after(model, ids[:start])
        if method == "gradient":
            logprob, scores = _gradient_x_input(model, ids[start:position], int(ids[position]), state)
        else:
            logprob, scores = _occlusion(model, ids[start:position], int(ids[position]), state)
    return Attribution(position, start, logprob, scores.float().cpu(), method)


def log_prob(model: RNNLM, ids: Tensor, target: int) -> Tensor:
    """log p(target | ids) for every row of `ids` (B, T), each read from a zero state: (B,)."""
    with _eval_mode(model), torch.no_grad():
        logits, _ = model(ids.to(next(model.parameters()).device))
    return torch.log_softmax(logits[:, -1].float(), dim=-1)[:, target]


@contextmanager
def _eval_mode(model: RNNLM) -> Iterator[None]:
    """No dropout, every module's mode restored after; unlike ``evaluating``, autograd stays
    available (inference mode's tensors cannot be differentiated)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


def _check(model: RNNLM, ids: Tensor, position: int, window: int, method: str) -> None:
    if model.config.bidirectional:
        raise ValueError("a bidirectional model reads the text after a token too: there is no "
                         "prediction from the tokens before it to explain")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not 1 <= position < len(ids):
        raise ValueError(f"position must be in [1, {len(ids)}) (the first token is predicted from "
                         f"nothing), got {position}")
    if not 1 <= window <= MAX_WINDOW:
        raise ValueError(f"window must be in [1, {MAX_WINDOW}], got {window}")


def _state_after(model: RNNLM, ids: Tensor):
    """The state after reading `ids` from a zero state (a zero state for none)."""
    if len(ids) == 0:
        return model.begin_state(1)
    with torch.no_grad():
        return model(ids[None])[1]


def _inputs(model: RNNLM, ids: Tensor) -> Tensor:
    """The rows the core reads for `ids` (B, T): embeddings, or one-hot rows, (T, B, E or V)."""
    if model.embedding is not None:
        return nnf.embedding(ids.T, model.embedding.weight)
    return nnf.one_hot(ids.T, model.config.vocab_size).to(next(model.parameters()).dtype)


def _logp(model: RNNLM, outputs: Tensor, target: int) -> Tensor:
    """log p(target) from the top layer's last outputs (B, D*H): (B,)."""
    if model.config.impl in FROM_SCRATCH:
        W, b = model.W_hq, model.b_q
    else:
        W, b = model.output.weight.T, model.output.bias
    return torch.log_softmax((outputs @ W + b).float(), dim=-1)[:, target]


def _top_h(model: RNNLM, state) -> Tensor:
    """The top layer's h in `state`: what the output layer reads after the last token, (B, H)."""
    h = state[0] if isinstance(state, tuple) else state
    return h[-1]


def _gradient_x_input(model: RNNLM, window: Tensor, target: int, state) -> tuple[float, Tensor]:
    with torch.no_grad():
        X = _inputs(model, window[None])
    X.requires_grad_(True)  # (T, 1, E or V)
    # cuDNN differentiates its RNNs only in training mode; the other kernels do in eval mode too
    with torch.enable_grad(), torch.backends.cudnn.flags(enabled=False):
        outputs, _ = model._run_core(X, state)
        logp = _logp(model, outputs[-1], target)[0]
        (grad,) = torch.autograd.grad(logp, X)
    return float(logp.detach()), (grad * X).sum(dim=-1)[:, 0].detach()


def _occlusion(model: RNNLM, window: Tensor, target: int, state) -> tuple[float, Tensor]:
    """Every deletion at once: row i of the batch is the window without token i, read from `state`."""
    T = len(window)
    with torch.no_grad():
        outputs, _ = model._run_core(_inputs(model, window[None]), state)
        whole = _logp(model, outputs[-1], target)[0]
        if T == 1:  # deleting the only token leaves the state before it
            without = _logp(model, _top_h(model, state), target)
            return float(whole), whole - without
        keep = ~torch.eye(T, dtype=torch.bool, device=window.device)  # (T, T): row i drops token i
        deleted = window.expand(T, T)[keep].view(T, T - 1)
        batch = tuple(s.expand(-1, T, -1).contiguous() for s in state) if isinstance(state, tuple) \
            else state.expand(-1, T, -1).contiguous()
        outputs, _ = model._run_core(_inputs(model, deleted), batch)
        without = _logp(model, outputs[-1], target)
    return float(whole), whole - without
