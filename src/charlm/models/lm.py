"""The recurrent language model: encode tokens, run a recurrent core, project to the vocabulary.

One model interface for every cell and implementation (d2l §8.5 from scratch, §8.6 concise)::

    inputs (B, T) --encode--> X (T, B, V|E) --core--> outputs (T, B, D*H) --output--> logits (B, T, V)
                              one-hot or              scratch layers or               W_hq, b_q or
                              nn.Embedding            torch.nn.RNN/GRU/LSTM           nn.Linear

``B`` batch size, ``T`` num_steps, ``V`` vocab_size, ``E`` embedding width, ``H`` num_hiddens and
``D`` the number of directions. The state is laid out as in ``torch.nn`` for both cores. The
regularisers (dropout in four places, locked masks, DropConnect, tied weights) act on this path as
drawn in :mod:`.regularize`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from . import regularize
from .builtin import builtin_layers, scratch_to_builtin_tensors
from .config import FROM_SCRATCH, ModelConfig
from .scratch import StackedScratch, State


def _build_core(config: ModelConfig, num_inputs: int) -> nn.Module:
    options = {"num_layers": config.num_layers, "bidirectional": config.bidirectional,
               "dropout": config.dropout, "activation": config.activation}
    if config.impl in FROM_SCRATCH:
        return StackedScratch(config.cell, num_inputs, config.num_hiddens, reset_after=config.reset_after,
                              fast=config.impl == "scratch", locked=config.locked_dropout,
                              weight_drop=config.weight_drop, **options)
    # torch.nn's own dropout between layers; the locked form and DropConnect run through
    # regularize.builtin_forward in training instead (RNNLM._run_core).
    return builtin_layers(config.cell, num_inputs, config.num_hiddens, **options)


def _set_forget_bias(core: nn.Module, config: ModelConfig) -> None:
    """Start every LSTM layer's forget gate ``F = sigmoid(X W_xf + H W_hf + b_f)`` at bias
    ``config.forget_bias`` (d2l eq. 9.2.1 for the gate)."""
    H, value = config.num_hiddens, config.forget_bias
    with torch.no_grad():
        if config.impl in FROM_SCRATCH:
            for cell in [*core.layers, *(core.layers_reverse or [])]:
                cell.b_f.fill_(value)
            return
        # torch.nn.LSTM: the gates (i, f, g, o) stacked in blocks of H rows, and two biases that add up
        for name, param in core.named_parameters():
            if name.startswith("bias_ih"):
                param[H:2 * H].fill_(value)
            elif name.startswith("bias_hh"):
                param[H:2 * H].zero_()


class RNNLM(nn.Module):
    """A character- or word-level recurrent language model (d2l §8.5, §8.6, ch. 9).

    ``forward(inputs (B, T) int, state | None) -> (logits (B, T, vocab_size), state)`` where the
    logits are raw (no softmax) and the state is ``(num_layers * D, B, num_hiddens)``, or a pair
    ``(H, C)`` of such tensors for the LSTM, for either ``impl``.

    A bidirectional model reads the whole sequence in both directions, so its prediction at step
    ``t`` has seen token ``t + 1``, the very token it predicts: it is fit for scoring or tagging a
    known sequence but cannot generate text left to right; :attr:`can_generate` is False for it.

    Example::

        model = RNNLM(ModelConfig(vocab_size=28, num_hiddens=256, cell="gru"))
        logits, state = model(torch.zeros(32, 35, dtype=torch.long))  # (32, 35, 28), (1, 32, 256)
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.vocab_size is None:
            raise ValueError("ModelConfig.vocab_size must be set to build a model (training sets it "
                             "from the vocabulary)")
        self.config = config
        vocab_size, embedding, tie_weights = config.vocab_size, config.embedding, config.tie_weights
        self.embedding = None if embedding is None else nn.Embedding(vocab_size, embedding)
        self.core = _build_core(config, vocab_size if embedding is None else embedding)
        num_features = config.num_hiddens * config.num_directions  # both directions feed the output layer
        # Tied weights (Press & Wolf 2017) are one tensor, initialised as the output layer's weights:
        # nn.Embedding's N(0, 1) as output weights makes the first logits large and the model
        # overconfident (a tied GRU on The Time Machine: validation perplexity 61 against 14).
        if config.impl in FROM_SCRATCH:  # the book's output layer, Y = H W_hq + b_q (§8.5.2)
            if not tie_weights:
                self.W_hq = nn.Parameter(torch.randn(num_features, vocab_size) * 0.01)
            else:  # W_hq is the embedding matrix transposed (see the property), with W_hq's init
                with torch.no_grad():
                    self.embedding.weight.normal_(0.0, 0.01)
            self.b_q = nn.Parameter(torch.zeros(vocab_size))
        else:
            self.output = nn.Linear(num_features, vocab_size)
            if tie_weights:  # one Parameter in both modules, saved once as "embedding.weight"
                self.embedding.weight = self.output.weight
                regularize.register_tied_output_hooks(self)
            if config.init == "normal":
                self._init_normal()
        if config.forget_bias:
            _set_forget_bias(self.core, config)

    @property
    def W_hq(self) -> Tensor:
        """The scratch output layer's weights ``(D * H, V)``: a parameter of their own, or with
        ``tie_weights`` the embedding matrix ``(V, E)`` transposed, a view of the one shared tensor."""
        if "W_hq" in self._parameters:
            return self._parameters["W_hq"]
        if self.config.tie_weights and self.config.impl in FROM_SCRATCH:
            return self.embedding.weight.T
        # AttributeError, as for any missing attribute (nn.Module.register_parameter relies on it).
        raise AttributeError(f"an RNNLM with impl={self.config.impl!r} has no W_hq; see its output layer")

    def _init_normal(self) -> None:
        """N(0, 0.01²) weights and zero biases for the recurrent core and the output layer."""
        with torch.no_grad():
            for name, param in [*self.core.named_parameters(), *self.output.named_parameters()]:
                if "bias" in name:
                    param.zero_()
                else:
                    param.normal_(0.0, 0.01)

    @property
    def can_generate(self) -> bool:
        """False for a bidirectional model, which needs the future to predict the present."""
        return not self.config.bidirectional

    # Token ids (1-D) the model reads, from zeros, before every text it is given: see begin_state.
    preamble: Tensor | None = None

    def begin_state(self, batch_size: int, device: torch.device | str | None = None, *,
                    from_zeros: bool = False) -> State:
        """The state every text begins in, ``(num_layers * D, batch_size, num_hiddens)`` (a pair for
        the LSTM), with the parameters' dtype, on ``device`` (default: the parameters' device).

        Zeros, unless the model has a :attr:`preamble`: then the state reading it from zeros leaves,
        with the weights as they are now. A model trained on a stream with its state carried from
        batch to batch met a zero state only at its very first step, and may read badly from it
        (charlm's English model read ``Dear John`` from zeros at 17 bits a character, and at 1.9
        after a blank line, its books' separator). ``from_zeros`` asks for zeros regardless."""
        c = self.config
        param = next(self.parameters())
        zeros = param.new_zeros((c.num_layers * c.num_directions, batch_size, c.num_hiddens), device=device)
        start = (zeros, zeros.clone()) if c.cell == "lstm" else zeros
        if self.preamble is None or from_zeros or not len(self.preamble):
            return start
        one = self.begin_state(1, device, from_zeros=True)
        with evaluating(self):
            _, end = self(self.preamble.view(1, -1).to(zeros.device), one)
        if c.cell == "lstm":
            return tuple(s.expand(-1, batch_size, -1).clone() for s in end)
        return end.expand(-1, batch_size, -1).clone()

    def forward(self, inputs: Tensor, state: State | None = None, *, check: bool = True
                ) -> tuple[Tensor, State]:
        """``check=False`` skips the checks of ``inputs`` and ``state``, for callers that made them:
        generation feeds back ids the model has just chosen, one token at a time, and the checks
        would cost as much as a step of a small model."""
        if check:
            self._check_inputs(inputs)
        batch_size = inputs.shape[0]
        state = self.begin_state(batch_size) if state is None else state
        if check:
            self._check_state(state, batch_size)
        c = self.config
        X = self._encode(inputs)  # (T, B, V or E), or ids (T, B) for the fast scratch core
        outputs, state = self._run_core(X, state)  # (T, B, D * H)
        outputs = regularize.dropout(outputs, c.dropout_output, self.training, c.locked_dropout)
        if c.impl in FROM_SCRATCH:
            W_hq, b_q = self.W_hq, self.b_q
        else:
            W_hq, b_q = self.output.weight.T, self.output.bias
        # Batch-first at the boundary: (T, B, .) -> (B, T, .). Whichever of the hidden states and the
        # logits is narrower is transposed (a copy in the product or in the loss); for a character
        # vocabulary that is the logits.
        if W_hq.shape[1] <= W_hq.shape[0]:
            T, B = outputs.shape[:2]
            logits = torch.addmm(b_q, outputs.reshape(T * B, -1), W_hq).view(T, B, -1)
            return logits.transpose(0, 1), state
        return outputs.transpose(0, 1) @ W_hq + b_q, state

    def _encode(self, inputs: Tensor) -> Tensor:
        c = self.config
        ids = inputs.T.long()  # (B, T) -> (T, B): the cores loop over time on the outer axis
        drop_inputs = self.training and c.dropout_input > 0
        if self.embedding is not None:
            weight = regularize.embedding_dropout(self.embedding.weight, c.dropout_embedding, self.training)
            X = nnf.embedding(ids, weight)  # (T, B, E)
        elif c.impl == "scratch" and not drop_inputs:
            return ids  # one-hot rows in effect: the fast cells gather rows of W_x instead
        else:  # dropout on one-hot rows needs them as numbers: a dropped entry removes the token
            dtype = next(self.parameters()).dtype
            X = nnf.one_hot(ids, c.vocab_size).to(dtype)  # (T, B, V), d2l §8.5.1
        return regularize.dropout(X, c.dropout_input, self.training, c.locked_dropout)

    def _run_core(self, X: Tensor, state: State) -> tuple[Tensor, State]:
        """The recurrent core; a builtin one runs layer by layer in training when it needs a locked
        mask between layers or DropConnect, which torch.nn's fused call cannot apply."""
        c = self.config
        by_layer = c.weight_drop > 0 or (c.locked_dropout and c.dropout > 0)
        if c.impl == "builtin" and self.training and by_layer:
            return regularize.builtin_forward(self.core, X, state, dropout_p=c.dropout,
                                              locked=c.locked_dropout, weight_drop=c.weight_drop)
        return self.core(X, state)

    def _check_inputs(self, inputs: Tensor) -> None:
        if not isinstance(inputs, Tensor):
            message = f"inputs must be a tensor of token ids, got {type(inputs).__name__}"
            raise ValueError(message)  # noqa: TRY004
        if inputs.dim() != 2 or inputs.numel() == 0:
            raise ValueError(f"inputs must have shape (batch_size, num_steps), both >= 1, "
                             f"got shape {tuple(inputs.shape)}")
        if inputs.dtype.is_floating_point or inputs.dtype.is_complex or inputs.dtype == torch.bool:
            raise ValueError(f"inputs must be integer token ids, got dtype {inputs.dtype}")
        low, high = (int(v) for v in torch.aminmax(inputs))
        if low < 0 or high >= self.config.vocab_size:
            raise ValueError(f"token ids must be in [0, vocab_size={self.config.vocab_size}), "
                             f"got ids from {low} to {high}")

    def _check_state(self, state: State, batch_size: int) -> None:
        c = self.config
        expected = (c.num_layers * c.num_directions, batch_size, c.num_hiddens)
        parts = state if isinstance(state, tuple) else (state,)
        ok = len(parts) == (2 if c.cell == "lstm" else 1) and all(
            isinstance(p, Tensor) and tuple(p.shape) == expected for p in parts)
        if not ok:
            kind = "a pair (H, C) of tensors" if c.cell == "lstm" else "one tensor"
            got = [tuple(p.shape) if isinstance(p, Tensor) else type(p).__name__ for p in parts]
            raise ValueError(f"state must be {kind} of shape {expected} for cell={c.cell!r}, got {got}")


def detach_state(state: State) -> State:
    """Cut the graph behind a state, keeping its values and structure (truncated BPTT, d2l §8.7).

    A tensor gives a tensor, an LSTM pair ``(H, C)`` gives a pair.
    """
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)
    return state.detach()


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) and no autograd inside, then every module's mode restored: the one
    way scoring and generation switch a model that may be in the middle of training.

    A model already in eval mode (``model.eval()`` sets every submodule) skips the mode switching,
    which would otherwise cost more than a forward step of a small model in generation.
    """
    if not model.training:
        with torch.inference_mode():
            yield
        return
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        for module, mode in modes:
            module.training = mode


def state_tensors(state: State) -> list[Tensor]:
    """A state as a list of detached tensors, to save: ``[H]``, or ``[H, C]`` for the LSTM."""
    return [s.detach() for s in (state if isinstance(state, tuple) else (state,))]


def state_from_tensors(tensors: list[Tensor]) -> State:
    """The inverse of :func:`state_tensors`: one tensor, or the LSTM's pair ``(H, C)``."""
    return tuple(tensors) if len(tensors) == 2 else tensors[0]


def scratch_to_builtin_state_dict(tensors: Mapping[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """Map a scratch :class:`RNNLM` state dict (or any dict keyed alike, such as gradients) onto the
    names of a builtin one: ``core.layers.*`` -> ``core.weight_*`` (see
    :func:`~charlm.models.builtin.scratch_to_builtin_tensors`), ``W_hq (D*H, V)`` ->
    ``output.weight (V, D*H)``, ``b_q`` -> ``output.bias``; the embedding is shared as is."""
    core = {name[len("core."):]: t for name, t in tensors.items() if name.startswith("core.")}
    mapped = scratch_to_builtin_tensors(core, config.cell, config.num_layers, config.bidirectional)
    out = {f"core.{name}": t for name, t in mapped.items()}
    out["output.bias"] = tensors["b_q"]
    if "W_hq" in tensors:  # absent with tie_weights: the output layer is the embedding
        out["output.weight"] = tensors["W_hq"].T
    if "embedding.weight" in tensors:
        out["embedding.weight"] = tensors["embedding.weight"]
    return out


def copy_scratch_to_builtin(scratch: RNNLM, builtin: RNNLM) -> None:
    """Load a scratch model's weights into a builtin model of the same configuration, in place.

    Afterwards both compute the same function (up to rounding); the scratch GRU must use
    ``gru_reset_after=True``, the only form ``torch.nn.GRU`` has.
    """
    if scratch.config.impl not in FROM_SCRATCH or builtin.config.impl != "builtin":
        raise ValueError("copy_scratch_to_builtin needs a scratch model and a builtin model, got "
                         f"impl={scratch.config.impl!r} and impl={builtin.config.impl!r}")
    if scratch.config.cell == "gru" and not scratch.config.reset_after:
        raise ValueError("the book's GRU (gru_reset_after=False) has no torch.nn.GRU equivalent; "
                         "build the scratch model with gru_reset_after=True")
    expected = {**scratch.config.to_dict(), "impl": "builtin"}
    if builtin.config.to_dict() != expected:
        raise ValueError(f"the models' configurations differ: {scratch.config} vs {builtin.config}")
    with torch.no_grad():
        builtin.load_state_dict(scratch_to_builtin_state_dict(scratch.state_dict(), scratch.config))
