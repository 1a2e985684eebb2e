"""Specifications for charlm.models: the book's layers, their torch.nn twins and the language model."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from torch.func import functional_call
from torch.testing import assert_close

from charlm.models import (
    RNNLM,
    GRUScratch,
    LSTMScratch,
    ModelConfig,
    RNNScratch,
    copy_scratch_to_builtin,
    detach_state,
    scratch_to_builtin_state_dict,
)

VOCAB_SIZE, NUM_HIDDENS, BATCH_SIZE, NUM_STEPS = 5, 4, 2, 3


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.5) -> None:
    """Replace the book's tiny initial weights by larger ones, so every nonlinearity is exercised."""
    g = _generator(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)


def _random_state(model: RNNLM, seed: int = 1) -> torch.Tensor | tuple[torch.Tensor, ...]:
    g = _generator(seed)
    zeros = model.begin_state(BATCH_SIZE)
    if isinstance(zeros, tuple):
        return tuple(torch.randn(z.shape, generator=g, dtype=z.dtype) for z in zeros)
    return torch.randn(zeros.shape, generator=g, dtype=zeros.dtype)


def _inputs(seed: int = 2, num_steps: int = NUM_STEPS) -> torch.Tensor:
    return torch.randint(0, VOCAB_SIZE, (BATCH_SIZE, num_steps), generator=_generator(seed))


def _as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def _twins(**options) -> tuple[RNNLM, RNNLM]:
    """A float64 scratch model with random weights and a builtin model holding the same weights."""
    scratch = RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, impl="scratch", **options)).double()
    builtin = RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, impl="builtin", **options)).double()
    _randomize(scratch)
    copy_scratch_to_builtin(scratch, builtin)
    return scratch, builtin


def _loss(logits: torch.Tensor, state) -> torch.Tensor:
    """A scalar that depends on every logit and every final state entry with distinct weights."""
    g = _generator(3)
    loss = (logits * torch.randn(logits.shape, generator=g, dtype=logits.dtype)).sum()
    for s in _as_tuple(state):
        loss = loss + (s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum()
    return loss


def _expected_builtin_grads(scratch: RNNLM) -> dict[str, torch.Tensor]:
    """The scratch gradients in torch's layout. torch's bias_hh adds to bias_ih inside the same
    sum, so it has the same gradient, except the GRU candidate part, which is the scratch b_hh."""
    grads = {name: p.grad for name, p in scratch.named_parameters()}
    expected = scratch_to_builtin_state_dict(grads, scratch.config)
    for name in [n for n in expected if "bias_hh" in n]:
        bias_hh = expected[name.replace("bias_hh", "bias_ih")].clone()
        if scratch.config.cell == "gru":
            bias_hh[2 * NUM_HIDDENS:] = expected[name][2 * NUM_HIDDENS:]
        expected[name] = bias_hh
    return expected


CELL_CASES = [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")]


@pytest.mark.parametrize("embedding", [None, 3], ids=["one_hot", "embedding"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2], ids=["1layer", "2layers"])
@pytest.mark.parametrize("cell,activation", CELL_CASES, ids=[f"{c}-{a}" for c, a in CELL_CASES])
def test_scratch_equals_builtin_with_copied_weights(cell, activation, num_layers, bidirectional, embedding):
    scratch, builtin = _twins(cell=cell, activation=activation, num_layers=num_layers,
                              bidirectional=bidirectional, embedding=embedding,
                              gru_reset_after=True if cell == "gru" else None)
    inputs, start = _inputs(), _random_state(scratch)
    start_s = tuple(s.clone().requires_grad_() for s in _as_tuple(start))
    start_b = tuple(s.clone().requires_grad_() for s in _as_tuple(start))
    unpack = (lambda s: s) if cell == "lstm" else (lambda s: s[0])

    logits_s, state_s = scratch(inputs, unpack(start_s))
    logits_b, state_b = builtin(inputs, unpack(start_b))
    assert_close(logits_s, logits_b)
    assert_close(state_s, state_b)

    _loss(logits_s, state_s).backward()
    _loss(logits_b, state_b).backward()
    expected = _expected_builtin_grads(scratch)
    actual = {name: p.grad for name, p in builtin.named_parameters()}
    assert expected.keys() == actual.keys()
    for name, grad in actual.items():
        assert_close(grad, expected[name], msg=f"gradient of {name}")
    for s, b in zip(start_s, start_b, strict=True):
        assert_close(s.grad, b.grad, msg="gradient of the initial state")


# (impl, cell, gru_reset_after): torch.nn.GRU has only the reset-after form.
STATE_CASES = [(impl, cell, None) for impl in ("scratch", "builtin") for cell in ("rnn", "gru", "lstm")]
STATE_CASES.append(("scratch", "gru", True))


@pytest.mark.parametrize("impl,cell,reset_after", STATE_CASES)
def test_carrying_the_state_over_two_halves_equals_one_pass(impl, cell, reset_after):
    model = RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, cell=cell, impl=impl, num_layers=2,
                  gru_reset_after=reset_after)).double()
    _randomize(model)
    inputs = _inputs(num_steps=6)
    whole_logits, whole_state = model(inputs)
    first, state = model(inputs[:, :3])
    second, state = model(inputs[:, 3:], state)
    assert_close(torch.cat([first, second], dim=1), whole_logits)
    assert_close(state, whole_state)


GRADCHECK_LAYERS = {
    "rnn": lambda: RNNScratch(2, 3),
    "rnn-relu": lambda: RNNScratch(2, 3, activation="relu"),
    "gru-book": lambda: GRUScratch(2, 3, reset_after=False),
    "gru-torch": lambda: GRUScratch(2, 3, reset_after=True),
    "lstm": lambda: LSTMScratch(2, 3),
}


@pytest.mark.parametrize("kind", GRADCHECK_LAYERS)
def test_scratch_layer_gradients_match_finite_differences(kind):
    layer = GRADCHECK_LAYERS[kind]().double()
    _randomize(layer)
    names = [name for name, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    g = _generator(4)
    X = torch.randn(3, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)  # (T, B, num_inputs)
    start = [torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
             for _ in range(2 if kind == "lstm" else 1)]

    def run(X, *tensors):
        state = tuple(tensors[:2]) if kind == "lstm" else tensors[0]
        weights = dict(zip(names, tensors[len(start):], strict=True))
        outputs, end = functional_call(layer, weights, (X, state))
        return (outputs, *_as_tuple(end))

    assert torch.autograd.gradcheck(run, (X, *start, *params))


def _known_answer_gru(reset_after: bool) -> GRUScratch:
    """One input, two hidden units; the gates are fixed by their biases alone."""
    gru = GRUScratch(1, 2, reset_after=reset_after)
    with torch.no_grad():
        for p in gru.parameters():
            p.zero_()
        gru.b_r.copy_(torch.tensor([math.log(3), -math.log(3)]))  # R = sigmoid(+-ln 3) = (3/4, 1/4)
        gru.W_hh.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))  # swaps the two units
    return gru


@pytest.mark.parametrize("reset_after", [False, True], ids=["book", "torch"])
def test_gru_one_step_known_answer(reset_after):
    """Z = sigmoid(0) = 1/2, R = (3/4, 1/4), x = 0, H = (1, 0), W_hh swaps the units.

    Book (reset before): (R * H) W_hh = (3/4, 0) W_hh = (0, 3/4), so H_tilde = (0, tanh 3/4).
    torch (reset after): R * (H W_hh) = (3/4, 1/4) * (0, 1) = (0, 1/4), so H_tilde = (0, tanh 1/4).
    Either way H = Z * H + (1 - Z) * H_tilde = (1/2, H_tilde[1] / 2).
    """
    gru = _known_answer_gru(reset_after)
    _, H = gru(torch.zeros(1, 1, 1), torch.tensor([[1.0, 0.0]]))
    second = math.tanh(0.25 if reset_after else 0.75) / 2
    assert_close(H, torch.tensor([[0.5, second]]))


def _numpy_book_gru(X: np.ndarray, H: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    """Cho et al. (2014) as printed: reset gate applied to the state before the hidden product."""
    def sigmoid(a):
        return 1 / (1 + np.exp(-a))

    for x in X:
        Z = sigmoid(x @ p["W_xz"] + H @ p["W_hz"] + p["b_z"])
        R = sigmoid(x @ p["W_xr"] + H @ p["W_hr"] + p["b_r"])
        H = Z * H + (1 - Z) * np.tanh(x @ p["W_xh"] + (R * H) @ p["W_hh"] + p["b_h"])
    return H


def test_book_gru_matches_a_numpy_reference_over_several_steps():
    gru = GRUScratch(3, 4).double()
    _randomize(gru)
    g = _generator(5)
    X = torch.randn(5, 2, 3, generator=g, dtype=torch.float64)  # (T, B, num_inputs)
    H = torch.randn(2, 4, generator=g, dtype=torch.float64)  # (B, num_hiddens)
    _, final = gru(X, H)
    params = {name: p.detach().numpy() for name, p in gru.named_parameters()}
    expected = _numpy_book_gru(X.numpy(), H.numpy(), params)
    np.testing.assert_allclose(final.detach().numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("impl", ["scratch", "builtin"])
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_shapes_of_logits_and_state(cell, impl, bidirectional):
    model = RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, cell=cell, impl=impl, num_layers=3,
                              bidirectional=bidirectional))
    logits, state = model(_inputs())
    assert logits.shape == (BATCH_SIZE, NUM_STEPS, VOCAB_SIZE)
    expected = (3 * (2 if bidirectional else 1), BATCH_SIZE, NUM_HIDDENS)
    assert [s.shape for s in _as_tuple(state)] == [expected] * (2 if cell == "lstm" else 1)
    assert [s.shape for s in _as_tuple(model.begin_state(BATCH_SIZE))] == [s.shape for s in _as_tuple(state)]
    assert isinstance(state, tuple) == (cell == "lstm")


def test_a_state_from_one_impl_feeds_the_other():
    # Both cores lay the state out as torch.nn does, (num_layers, B, H) for each of (H, C): with the
    # same weights, a state handed over from one impl continues exactly as the other's own would.
    scratch, builtin = _twins(cell="lstm", num_layers=2)
    first, second = _inputs(seed=2), _inputs(seed=6)
    for source, target in [(builtin, scratch), (scratch, builtin)]:
        _, handed_over = source(first)
        logits, state = target(second, handed_over)
        own_logits, own_state = target(second, target(first)[1])
        assert_close(logits, own_logits)
        assert_close(state, own_state)
        assert not torch.allclose(logits, target(second)[0])  # the state mattered: a zero one differs


@pytest.mark.parametrize("impl", ["scratch", "builtin"])
def test_begin_state_follows_the_parameters_dtype_and_the_requested_device(impl):
    model = RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, cell="lstm", impl=impl)).double()
    H, C = model.begin_state(BATCH_SIZE)
    assert H.dtype == C.dtype == torch.float64 and H.device.type == "cpu"
    assert not torch.any(H) and not torch.any(C) and H.data_ptr() != C.data_ptr()
    assert model.begin_state(BATCH_SIZE, device="meta")[0].device.type == "meta"
    assert model(_inputs())[0].dtype == torch.float64


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("impl", ["scratch", "builtin"])
def test_model_runs_on_cuda(impl):
    model = RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, cell="gru", impl=impl)).cuda()
    logits, state = model(_inputs().cuda())
    assert logits.device.type == state.device.type == model.begin_state(1).device.type == "cuda"


BOOK_NAMES = {
    "rnn": ["W_xh", "W_hh", "b_h"],
    "gru": ["W_xz", "W_hz", "b_z", "W_xr", "W_hr", "b_r", "W_xh", "W_hh", "b_h"],
    "lstm": ["W_xi", "W_hi", "b_i", "W_xf", "W_hf", "b_f", "W_xo", "W_ho", "b_o", "W_xc", "W_hc", "b_c"],
}


@pytest.mark.parametrize("cell", BOOK_NAMES)
def test_scratch_parameters_carry_the_books_names_and_shapes(cell):
    params = dict(RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, cell=cell, num_layers=2)).named_parameters())
    expected = {"W_hq", "b_q"} | {f"core.layers.{k}.{n}" for k in (0, 1) for n in BOOK_NAMES[cell]}
    assert set(params) == expected
    gate = BOOK_NAMES[cell][0][-1]
    assert params[f"core.layers.0.W_x{gate}"].shape == (VOCAB_SIZE, NUM_HIDDENS)  # X @ W_x?
    assert params[f"core.layers.0.W_h{gate}"].shape == (NUM_HIDDENS, NUM_HIDDENS)
    assert params["W_hq"].shape == (NUM_HIDDENS, VOCAB_SIZE)


def test_gru_reset_after_adds_the_hidden_candidate_bias():
    book = dict(RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, cell="gru")).named_parameters())
    torch_form = dict(RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, cell="gru",
                                        gru_reset_after=True)).named_parameters())
    assert set(torch_form) - set(book) == {"core.layers.0.b_hh"}


def test_bidirectional_doubles_the_output_layer_input_and_cannot_generate():
    scratch = RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, bidirectional=True))
    builtin = RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, impl="builtin", bidirectional=True))
    assert scratch.W_hq.shape == (2 * NUM_HIDDENS, VOCAB_SIZE)
    assert builtin.output.in_features == 2 * NUM_HIDDENS
    assert "core.layers_reverse.0.W_xh" in dict(scratch.named_parameters())
    assert not scratch.can_generate and not builtin.can_generate
    assert RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS)).can_generate


def test_scratch_init_is_the_books_small_gaussian_and_zero_biases():
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(60, 80, cell="lstm", num_layers=2))
    for name, p in model.named_parameters():
        short = name.rsplit(".", 1)[-1]
        if short.startswith("W_"):
            assert 0.009 < p.std().item() < 0.011, name
            assert abs(p.mean().item()) < 0.001, name
        else:
            assert short.startswith("b_") and not torch.any(p), name


@pytest.mark.parametrize("impl", ["scratch", "builtin"])
def test_dropout_acts_in_training_only(impl):
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, cell="gru", impl=impl, num_layers=2, dropout=0.5))
    plain = RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, cell="gru", impl=impl, num_layers=2))
    _randomize(model)
    plain.load_state_dict(model.state_dict())
    inputs = _inputs()
    model.train()
    assert not torch.equal(model(inputs)[0], model(inputs)[0])
    model.eval()
    assert_close(model(inputs)[0], model(inputs)[0], rtol=0, atol=0)
    assert_close(model(inputs)[0], plain(inputs)[0])


@pytest.mark.parametrize("impl", ["scratch", "builtin"])
def test_dropout_sits_between_layers_only(impl):
    """As torch.nn: layer 0 reads undropped inputs and the top layer's states reach the output as they are."""
    model = RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, cell="gru", impl=impl, num_layers=2, dropout=0.5))
    _randomize(model)
    inputs = _inputs()
    torch.manual_seed(0)
    logits, state = model.train()(inputs)
    _, eval_state = model.eval()(inputs)
    assert_close(state[0], eval_state[0])  # layer 0: untouched by dropout
    assert not torch.allclose(state[1], eval_state[1])  # layer 1: reads dropped inputs
    top = state[1]  # (B, H): the top layer's last hidden state, undropped
    expected = top @ model.W_hq + model.b_q if impl == "scratch" else model.output(top)
    assert_close(logits[:, -1], expected)


BAD_INPUTS = [
    (torch.zeros(6, dtype=torch.long), "shape (batch_size, num_steps)"),
    (torch.zeros(2, 3, 1, dtype=torch.long), "got shape (2, 3, 1)"),
    (torch.zeros(2, 0, dtype=torch.long), "got shape (2, 0)"),
    (torch.zeros(2, 3), "integer token ids, got dtype torch.float32"),
    (torch.zeros(2, 3, dtype=torch.bool), "got dtype torch.bool"),
    (torch.tensor([[0, 1, -1]]), "token ids must be in [0, vocab_size=5), got ids from -1 to 1"),
    (torch.tensor([[0, 1, 5]]), "got ids from 0 to 5"),
    ([[0, 1]], "inputs must be a tensor"),
]


@pytest.mark.parametrize("inputs,message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_inputs_are_refused_with_a_message(inputs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS))(inputs)


def test_a_state_of_the_wrong_shape_is_refused():
    model = RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, cell="lstm"))
    message = "state must be a pair (H, C) of tensors of shape (1, 2, 4)"
    with pytest.raises(ValueError, match=re.escape(message)):
        model(_inputs(), torch.zeros(1, BATCH_SIZE, NUM_HIDDENS))
    with pytest.raises(ValueError, match=re.escape("got [(1, 3, 4), (1, 3, 4)]")):
        model(_inputs(), model.begin_state(3))


BAD_CONFIGS = [
    ({"num_hiddens": 0}, "--num-hiddens must be an integer >= 1, got 0"),
    ({"num_hiddens": 2.5}, "--num-hiddens must be an integer, got 2.5"),
    ({"vocab_size": 0}, "--vocab-size must be an integer >= 1"),
    ({"num_layers": 0}, "--num-layers must be an integer >= 1"),
    ({"embedding": 0}, "--embedding must be an integer >= 1"),
    ({"cell": "foo"}, "--cell must be one of rnn, gru, lstm, got 'foo'"),
    ({"impl": "cudnn"}, "--impl must be one of scratch, book, builtin, got 'cudnn'"),
    ({"activation": "sigmoid"}, "--activation must be one of tanh, relu"),
    ({"cell": "lstm", "activation": "relu"}, "--activation relu applies only to --cell rnn"),
    ({"num_layers": 2, "dropout": 1.0}, "--dropout must be in [0, 1), got 1.0"),
    ({"num_layers": 2, "dropout": -0.1}, "--dropout must be in [0, 1)"),
    ({"dropout": 0.5}, "needs --num-layers 2 or more"),
    ({"bidirectional": "yes"}, "--bidirectional must be true or false"),
    ({"cell": "lstm", "gru_reset_after": True}, "--gru-reset-after applies only to --cell gru"),
    ({"cell": "gru", "impl": "builtin", "gru_reset_after": False}, "not available with --impl builtin"),
]


@pytest.mark.parametrize("options,message", BAD_CONFIGS, ids=[m for _, m in BAD_CONFIGS])
def test_bad_config_values_are_refused_naming_the_field(options, message):
    options = {"vocab_size": VOCAB_SIZE, "num_hiddens": NUM_HIDDENS, **options}
    with pytest.raises(ValueError, match=re.escape(message)):
        ModelConfig(**options)
    with pytest.raises(ValueError, match=re.escape(message)):
        RNNLM(ModelConfig(**options))


def test_gru_reset_after_defaults_to_each_impls_own_form():
    assert ModelConfig(5, 4, cell="gru").reset_after is False
    assert ModelConfig(5, 4, cell="gru", impl="builtin").reset_after is True
    assert ModelConfig(5, 4, cell="lstm").reset_after is False
    # Unresolved in the field, so a config derived with another impl gets that impl's form.
    assert ModelConfig(5, 4, cell="gru").replace(impl="builtin").reset_after is True


def test_config_round_trips_through_json_and_rebuilds_the_model():
    config = ModelConfig(28, 16, cell="gru", num_layers=2, embedding=8, dropout=0.2, bidirectional=True)
    again = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict(), sort_keys=True)))
    assert again == config
    assert RNNLM(again).config == config


def test_from_dict_refuses_unknown_and_missing_keys():
    data = ModelConfig(5, 4).to_dict()
    unknown = "unknown ModelConfig keys ['num_hidden'] (did you mean num_hiddens?)"
    with pytest.raises(ValueError, match=re.escape(unknown)):
        ModelConfig.from_dict({**data, "num_hidden": 3})
    with pytest.raises(ValueError, match=re.escape("missing required keys ['vocab_size']")):
        ModelConfig.from_dict({"num_hiddens": 4})


def test_copy_scratch_to_builtin_refuses_what_torch_cannot_compute():
    book_gru = RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, cell="gru"))
    with pytest.raises(ValueError, match="gru_reset_after=True"):
        copy_scratch_to_builtin(book_gru, RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, cell="gru",
                                                            impl="builtin")))
    with pytest.raises(ValueError, match="configurations differ"):
        copy_scratch_to_builtin(RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS)),
                                RNNLM(ModelConfig(VOCAB_SIZE, 8, impl="builtin")))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_detach_state_keeps_values_and_structure_but_cuts_the_graph(cell):
    model = RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, cell=cell))
    _, state = model(_inputs())
    detached = detach_state(state)
    assert type(detached) is type(state)
    for before, after in zip(_as_tuple(state), _as_tuple(detached), strict=True):
        assert before.grad_fn is not None and after.grad_fn is None and not after.requires_grad
        assert torch.equal(before, after)


def test_builtin_normal_init_matches_the_scratch_statistics():
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(30, 200, impl="builtin", init="normal"))
    weights = [p for n, p in model.named_parameters() if "weight" in n]
    biases = [p for n, p in model.named_parameters() if "bias" in n]
    assert all(abs(float(w.std()) - 0.01) < 0.001 for w in weights)
    assert all(torch.count_nonzero(b) == 0 for b in biases)
    default = RNNLM(ModelConfig(30, 200, impl="builtin"))
    assert float(default.core.weight_hh_l0.std()) > 0.03  # torch's U(-1/sqrt(H), 1/sqrt(H))
    with pytest.raises(ValueError, match="init must be one of default, normal"):
        RNNLM(ModelConfig(30, 8, impl="builtin", init="xavier"))


@pytest.mark.parametrize("impl", ["scratch", "book", "builtin"])
def test_forget_bias_starts_every_lstm_forget_gate_at_that_bias(impl):
    config = ModelConfig(VOCAB_SIZE, NUM_HIDDENS, cell="lstm", impl=impl, num_layers=2, bidirectional=True)
    H = NUM_HIDDENS
    for value in (0.0, 1.0):
        core = RNNLM(config.replace(forget_bias=value)).core
        if impl == "builtin":  # torch.nn.LSTM adds two biases; its gates are (i, f, g, o) in blocks of H
            totals = [getattr(core, f"bias_ih_{s}") + getattr(core, f"bias_hh_{s}")
                      for s in ("l0", "l0_reverse", "l1", "l1_reverse")]
            forget, others = [t[H:2 * H] for t in totals], [t[:H] for t in totals]
        else:
            cells = [*core.layers, *core.layers_reverse]
            forget, others = [c.b_f for c in cells], [c.b_i for c in cells]
        if value:
            assert all(torch.equal(b, torch.full((H,), value)) for b in forget)
            assert not any(torch.equal(b, torch.full((H,), value)) for b in others)  # only the forget gate
        elif impl != "builtin":
            assert all(torch.count_nonzero(b) == 0 for b in forget)  # the book's zero biases


def test_forget_bias_is_an_lstm_option():
    with pytest.raises(ValueError, match="--forget-bias applies only to --cell lstm, got --cell gru"):
        ModelConfig(VOCAB_SIZE, NUM_HIDDENS, cell="gru", forget_bias=1.0)


# A preamble: what a model reads, from zeros, before every text.

@pytest.mark.parametrize("impl", ["scratch", "builtin"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_model_with_a_preamble_begins_every_text_where_reading_it_leaves(cell, impl):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=9, num_hiddens=8, cell=cell, impl=impl, num_layers=2, embedding=4)
    model = RNNLM(config).eval()
    preamble, text = torch.tensor([3, 3]), torch.tensor([[1, 5, 2, 7], [4, 4, 8, 0]])
    plain, _ = model(text)
    read_first, _ = model(torch.cat([preamble.expand(2, -1), text], dim=1))
    model.preamble = preamble
    primed, _ = model(text)  # no state given: the begin state
    assert torch.allclose(primed, read_first[:, 2:], atol=1e-5)
    assert not torch.equal(primed, plain)
    begun = model.begin_state(2)
    assert all(s.abs().max() > 1e-4 for s in (begun if cell == "lstm" else (begun,)))
    zeros = model.begin_state(2, from_zeros=True)
    assert all(not z.any() for z in (zeros if cell == "lstm" else (zeros,)))


def test_without_a_preamble_the_begin_state_is_zeros_as_in_the_book():
    model = RNNLM(ModelConfig(vocab_size=9, num_hiddens=8, cell="lstm", num_layers=2))
    assert model.preamble is None and all(not s.any() for s in model.begin_state(3))


def test_the_begin_state_follows_the_weights_and_can_be_trained_from():
    """Computed from the weights as they are, so training from it never reads a stale state, and
    it is an ordinary tensor that backpropagation can save."""
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(vocab_size=9, num_hiddens=8, cell="gru", embedding=4))
    model.preamble = torch.tensor([2])
    before = model.begin_state(1).clone()
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(2)
    assert not torch.equal(before, model.begin_state(1))
    logits, _ = model(torch.tensor([[1, 2, 3]]))
    logits.sum().backward()  # an inference tensor in the graph would raise here
