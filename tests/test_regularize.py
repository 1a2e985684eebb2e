"""Specifications for the regularisers (charlm.models.regularize): each acts in training only, and
does what its paper says.

Tiny models on the CPU: vocabulary 7, 6 hidden units, batches of 4 x 5. Every dropout rate is 0.5,
so a mask that should differ from another does with certainty up to ~2^-20.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch.testing import assert_close

from charlm import TrainConfig, Vocab, load
from charlm.checkpoint import save_run_files, save_weights
from charlm.models import RNNLM, ModelConfig, copy_scratch_to_builtin, regularize

V, H, B, T, P = 7, 6, 4, 5, 0.5
DROPOUTS = {"dropout_input": P, "dropout": P, "dropout_output": P, "dropout_embedding": P, "weight_drop": P}
IMPLS = ["scratch", "book", "builtin"]


def _model(impl: str = "scratch", cell: str = "gru", seed: int = 0, **options) -> RNNLM:
    """A two-layer model with an embedding as wide as the hidden state (so weights can be tied) and
    weights larger than the book's N(0, 0.01²), so that every unit is far from zero."""
    torch.manual_seed(seed)
    options = {"num_layers": 2, "embedding": H, **options}
    model = RNNLM(ModelConfig(V, H, cell=cell, impl=impl, **options)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model


def _inputs(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def _capture_input(module: torch.nn.Module) -> list[torch.Tensor]:
    """What `module` is called with, (T, B, features), one entry per call."""
    seen: list[torch.Tensor] = []
    module.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    return seen


# --- each regulariser: on in training, off in evaluation --------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("option", sorted(DROPOUTS))
def test_each_dropout_acts_in_training_and_vanishes_in_evaluation(option, impl):
    model, plain = _model(impl, **{option: P}), _model(impl)
    X = _inputs()
    model.train()
    assert not torch.equal(model(X)[0], model(X)[0])  # a fresh draw every call
    model.eval(), plain.eval()
    assert torch.equal(model(X)[0], model(X)[0])
    assert torch.equal(model(X)[0], plain(X)[0])  # the same function as a model without it


@pytest.mark.parametrize("impl", IMPLS)
def test_all_regularisers_at_once_vanish_in_evaluation(impl):
    model = _model(impl, locked_dropout=True, **DROPOUTS).eval()
    plain = _model(impl).eval()
    X = _inputs()
    logits, state = model(X)
    expected, expected_state = plain(X)
    assert torch.equal(logits, expected) and torch.equal(state, expected_state)


def test_output_dropout_leaves_the_recurrence_alone():
    """It acts after the core: the final state is the evaluation one, the logits are not."""
    model = _model(dropout_output=P)
    X = _inputs()
    logits, state = model.train()(X)
    eval_logits, eval_state = model.eval()(X)
    assert torch.equal(state, eval_state) and not torch.allclose(logits, eval_logits)


# --- locked (variational) dropout ---------------------------------------------------------------------

def test_locked_dropout_draws_one_mask_per_sequence_for_every_time_step():
    """An all-ones (T, B, F) input comes back with the same zeros at every step, different in each
    batch row; the survivors are scaled by 1 / (1 - p) = 2. Plain dropout differs step by step."""
    torch.manual_seed(0)
    ones = torch.ones(T, 8, 16)
    out = regularize.dropout(ones, P, training=True, locked=True)
    assert set(out.unique().tolist()) == {0.0, 2.0}
    assert all(torch.equal(out[t], out[0]) for t in range(T))
    assert len({tuple(row.tolist()) for row in out[0]}) > 1
    plain = regularize.dropout(ones, P, training=True, locked=False)
    assert not all(torch.equal(plain[t], plain[0]) for t in range(T))
    assert regularize.dropout(ones, P, training=False, locked=True) is ones


@pytest.mark.parametrize("impl", IMPLS)
def test_locked_input_dropout_masks_the_same_features_at_every_step(impl):
    """A batch of one repeated token: each row's embedded inputs are equal along time after a
    locked mask, and rows differ in which features were dropped."""
    model = _model(impl, dropout_input=P, locked_dropout=True).train()
    seen = _capture_input(model.core)
    model(torch.full((B, T), 3))
    X = seen[0]  # (T, B, E)
    assert all(torch.equal(X[t], X[0]) for t in range(T))
    assert len({tuple((row == 0).tolist()) for row in X[0]}) > 1


@pytest.mark.parametrize("impl", ["scratch", "book"])
def test_locked_dropout_between_layers_masks_the_same_units_at_every_step(impl):
    model = _model(impl, dropout=P, locked_dropout=True).train()
    seen = _capture_input(model.core.layers[1])
    model(_inputs())
    dropped = seen[0] == 0  # (T, B, H): layer 0's tanh outputs are never exactly 0 otherwise
    assert dropped.any() and all(torch.equal(dropped[t], dropped[0]) for t in range(T))
    assert len({tuple(row.tolist()) for row in dropped[0]}) > 1


def test_builtin_locked_dropout_between_layers_matches_the_scratch_layers():
    """torch.nn's fused call draws a new mask each step, so the builtin core runs layer by layer:
    with the same weights and seed it computes exactly what the scratch layers compute."""
    options = {"cell": "lstm", "num_layers": 2, "dropout": P, "locked_dropout": True, "bidirectional": True}
    scratch, builtin = _model("scratch", **options), _model("builtin", **options)
    copy_scratch_to_builtin(scratch, builtin)
    X = _inputs()
    torch.manual_seed(5)
    expected = scratch.train()(X)
    torch.manual_seed(5)
    logits, (H_n, C_n) = builtin.train()(X)
    assert_close(logits, expected[0])
    assert_close(H_n, expected[1][0]) and assert_close(C_n, expected[1][1])


@pytest.mark.parametrize("cell,options", [("lstm", {"bidirectional": True}), ("rnn", {"activation": "relu"})])
def test_the_builtin_layer_by_layer_forward_is_the_fused_call_without_dropout(cell, options):
    model = _model("builtin", cell=cell, **options)
    X, state = torch.randn(T, B, H, dtype=torch.double), model.begin_state(B)
    outputs, final = regularize.builtin_forward(model.core, X, state, dropout_p=0, locked=True, weight_drop=0)
    expected, expected_final = model.core(X, state)
    assert_close(outputs, expected)
    assert_close(final, expected_final)


# --- embedding dropout ---------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["scratch", "book"])
def test_embedding_dropout_drops_whole_rows_for_every_occurrence_of_a_token(impl):
    """Each position holds its token's embedding row, either zeroed or scaled by 1 / (1 - p) = 2, and
    the choice is made once per token type: the same token is dropped at every step and in every row."""
    model = _model(impl, dropout_embedding=P).train()
    seen = _capture_input(model.core)
    ids = _inputs()
    model(ids)
    X, weight = seen[0], model.embedding.weight.detach()  # (T, B, E), (V, E)
    dropped = {}
    for t in range(T):
        for b in range(B):
            token = int(ids[b, t])
            is_zero = bool(torch.all(X[t, b] == 0))
            assert is_zero or torch.equal(X[t, b], weight[token] * 2)
            assert dropped.setdefault(token, is_zero) == is_zero  # consistent across time and rows
    assert set(dropped.values()) == {True, False}


# --- DropConnect ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["scratch", "book"])
def test_weight_drop_masks_the_hidden_weights_afresh_each_call_and_trains_the_parameters(impl):
    """Inside the call the cell sees W * mask / (1 - p) for each hidden-to-hidden weight (the GRU's
    W_hz, W_hr, W_hh), a new mask every call; its input weights and the parameters are untouched, and
    the gradient reaches the parameters, zero exactly where this call's mask dropped an entry."""
    model = _model(impl, weight_drop=P).train()
    cell = model.core.layers[0]
    names = regularize.hidden_weight_names(cell)
    assert names == ["W_hz", "W_hr", "W_hh"]
    before = {name: p.detach().clone() for name, p in cell.named_parameters()}
    seen: list[dict[str, torch.Tensor]] = []
    cell.register_forward_hook(lambda m, *_: seen.append({n: getattr(m, n).detach().clone() for n in before}))
    model(_inputs())
    logits, _ = model(_inputs())
    logits.sum().backward()
    first, second = seen[0], seen[-1]
    for name in names:
        W = before[name]
        assert torch.equal(getattr(cell, name).detach(), W)  # the parameter itself is untouched
        kept = second[name] != 0
        assert torch.equal(second[name][kept], W[kept] * 2) and 0 < kept.sum() < W.numel()
        assert not torch.equal(first[name], second[name])  # a fresh mask each call
        assert torch.equal(getattr(cell, name).grad == 0, ~kept)
    assert torch.equal(second["W_xz"], before["W_xz"])  # input weights are never dropped


def test_weight_drop_on_builtin_layers_leaves_zero_gradient_where_the_mask_dropped():
    """torch.nn's weight_hh_l* get masked copies through functional_call: about half of each one's
    gradient entries are exactly zero, none of the input weights' are, and the parameters stay."""
    model = _model("builtin", cell="lstm", weight_drop=P).train()
    before = {name: p.detach().clone() for name, p in model.core.named_parameters()}
    model(_inputs())[0].sum().backward()
    for name, p in model.core.named_parameters():
        assert torch.equal(p.detach(), before[name])
        zeros = (p.grad == 0).double().mean().item()
        if name.startswith("weight_hh"):
            assert 0.3 < zeros < 0.7, name
        elif name.startswith("weight_ih"):
            assert zeros == 0, name


# --- the book's loop and the fast form draw the same masks ---------------------------------------------

@pytest.mark.parametrize("cell,options", [
    ("gru", {"locked_dropout": True}),
    ("lstm", {"embedding": None, "dropout_embedding": 0.0}),  # dropout on one-hot inputs
    ("rnn", {"bidirectional": True, "embedding": 2 * H, "tie_weights": True}),
])
def test_the_fast_form_and_the_books_loop_agree_under_every_regulariser(cell, options):
    """Same seed, same masks: values and gradients of every parameter match in training."""
    options = {**DROPOUTS, **options}
    book, fast = _model("book", cell=cell, **options), _model("scratch", cell=cell, **options)
    fast.load_state_dict(book.state_dict())
    X, results = _inputs(), []
    for model in (book, fast):
        torch.manual_seed(7)
        logits, _ = model.train()(X)
        (logits * torch.linspace(-1, 1, logits.numel(), dtype=logits.dtype).view_as(logits)).sum().backward()
        results.append((logits, {name: p.grad for name, p in model.named_parameters()}))
    assert_close(results[0][0], results[1][0])
    assert_close(results[0][1], results[1][1])


# --- tied weights --------------------------------------------------------------------------------------

def _shares_embedding(model: RNNLM) -> bool:
    weight = model.embedding.weight
    if model.config.impl == "builtin":
        return model.output.weight is weight
    return model.W_hq.data_ptr() == weight.data_ptr() and model.W_hq.shape == weight.T.shape


@pytest.mark.parametrize("impl", IMPLS)
def test_tied_weights_are_one_tensor_with_one_state_dict_entry(impl):
    model = _model(impl, tie_weights=True)
    assert _shares_embedding(model)
    sd = model.state_dict()
    assert "W_hq" not in sd and "output.weight" not in sd and "embedding.weight" in sd
    assert len(list(model.parameters())) == len(sd)  # no tensor counted twice
    model.load_state_dict(sd)  # the resume path (trainer.pt) loads its own state dict back
    assert _shares_embedding(model)


@pytest.mark.parametrize("impl", IMPLS)
def test_the_output_layers_gradient_reaches_the_tied_embedding(impl):
    """Only token 0 is fed in, yet every row of the embedding gets a gradient: from the output layer."""
    model = _model(impl, tie_weights=True).train()
    model(torch.zeros(B, T, dtype=torch.long))[0].logsumexp(-1).sum().backward()
    assert torch.all(model.embedding.weight.grad.abs().sum(1) > 0)


@pytest.mark.parametrize("impl", IMPLS)
def test_a_tied_model_survives_a_checkpoint_round_trip(impl, tmp_path):
    model = _model(impl, cell="lstm", tie_weights=True).float().eval()
    save_run_files(tmp_path, model, Vocab(list("abcdef")), None)
    save_weights(tmp_path / "model.safetensors", model)
    loaded = load(tmp_path).model
    assert loaded.config == model.config and _shares_embedding(loaded)
    X = _inputs()
    assert torch.equal(loaded(X)[0], model(X)[0])
    with torch.no_grad():
        loaded.embedding.weight[0, 0] = 42.0  # one tensor: the output layer sees the change
    assert (loaded.W_hq[0, 0] if impl != "builtin" else loaded.output.weight[0, 0]) == 42.0


def test_a_tied_scratch_model_copies_into_a_tied_builtin_one():
    scratch = _model("scratch", cell="lstm", tie_weights=True)
    builtin = _model("builtin", cell="lstm", tie_weights=True, seed=1)
    copy_scratch_to_builtin(scratch, builtin)
    X = _inputs()
    assert _shares_embedding(builtin)
    assert_close(builtin.eval()(X)[0], scratch.eval()(X)[0])


# --- configuration -------------------------------------------------------------------------------------

BAD = [
    ({"dropout_output": 1.5}, "--dropout-output must be in [0, 1), got 1.5"),
    ({"dropout_input": -0.1}, "--dropout-input must be in [0, 1), got -0.1"),
    ({"weight_drop": 1.0}, "--weight-drop must be in [0, 1), got 1.0"),
    ({"weight_drop": "0.5"}, "--weight-drop must be a number, got '0.5'"),
    ({"dropout_embedding": 0.2, "embedding": None}, "--dropout-embedding drops rows of the embedding matrix"),
    ({"locked_dropout": 1}, "--locked-dropout must be true or false, got 1"),
    ({"tie_weights": True, "embedding": None}, "needs --embedding equal to --num-hiddens (6), got None"),
    ({"tie_weights": True, "bidirectional": True}, "--num-hiddens x 2 directions (12), got 6"),
]


@pytest.mark.parametrize("options,message", BAD, ids=[m for _, m in BAD])
def test_bad_regulariser_settings_are_refused_naming_the_field(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        ModelConfig(V, H, **{"num_layers": 2, "embedding": H, **options})


@pytest.mark.parametrize("options,message", [
    ({"dropout_output": 1.5}, "--dropout-output must be in [0, 1), got 1.5"),
    ({"weight_drop": -0.5}, "--weight-drop must be in [0, 1), got -0.5"),
    ({"dropout_embedding": 0.1}, "--dropout-embedding drops rows of the embedding matrix and needs "
                                 "--embedding"),
    ({"tie_weights": True, "embedding": 64}, "--embedding equal to --num-hiddens (512), got 64"),
])
def test_bad_training_flags_are_refused_naming_the_flag(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrainConfig.of(**options)


def test_config_files_without_the_new_keys_still_load_with_everything_off():
    old = {"vocab_size": V, "num_hiddens": H, "cell": "gru", "impl": "scratch", "num_layers": 1,
           "embedding": None, "activation": "tanh", "dropout": 0.0, "bidirectional": False,
           "gru_reset_after": False, "init": "default"}
    config = ModelConfig.from_dict(old)
    assert config.replace(gru_reset_after=None) == ModelConfig(V, H, cell="gru") and not config.reset_after
    rates = (config.dropout_input, config.dropout_output, config.dropout_embedding, config.weight_drop)
    assert rates == (0, 0, 0, 0)
    assert not config.locked_dropout and not config.tie_weights


def test_the_regularisers_round_trip_through_the_saved_config():
    config = ModelConfig(V, H, num_layers=2, embedding=H, locked_dropout=True, tie_weights=True, **DROPOUTS)
    again = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict(), sort_keys=True)))
    assert again == config and RNNLM(again).config == config
