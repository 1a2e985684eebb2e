"""The fast scratch form (impl="scratch") computes the book's loop (impl="book"): values and gradients.

Each case builds a book-loop model with random weights (not the tiny N(0, 0.01²) ones, so the gates
are far from their linear regime), copies the weights into a fast model, runs both in float64 from a
random state and compares outputs, final states and the gradients of every parameter and of the
initial state under a loss that weighs every output and the final state. Each runs twice: on the C++
kernels (charlm/models/csrc/recurrences.cpp) and on the Python loops that stand in where they cannot be built.
"""

from __future__ import annotations

import pytest
import torch

from charlm.models import RNNLM, ModelConfig, copy_scratch_to_builtin, native

VOCAB_SIZE, NUM_HIDDENS, BATCH, STEPS = 11, 7, 3, 6

CASES = [
    {"cell": "rnn"},
    {"cell": "rnn", "activation": "relu"},
    {"cell": "gru"},  # the book's form: reset before the hidden product
    {"cell": "gru", "gru_reset_after": True},  # torch's form
    {"cell": "lstm"},
    {"cell": "rnn", "num_layers": 2, "embedding": 5},
    {"cell": "gru", "num_layers": 2, "bidirectional": True},
    {"cell": "gru", "gru_reset_after": True, "num_layers": 2, "embedding": 4},
    {"cell": "lstm", "num_layers": 2, "bidirectional": True, "embedding": 5},
]


@pytest.fixture(params=["kernels", "python"])
def path(request):
    """Run the test on the C++ kernels, then on the Python loops."""
    if request.param == "kernels" and not native.available():
        pytest.fail("the C++ kernels did not build (see the warning); CI must exercise them")
    with native.use_kernels(request.param == "kernels"):
        yield request.param


def _pair(options: dict) -> tuple[RNNLM, RNNLM]:
    torch.manual_seed(0)
    book = RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, impl="book", **options)).double()
    with torch.no_grad():
        for param in book.parameters():
            param.normal_(0.0, 0.5)
    fast = RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, impl="scratch", **options)).double()
    fast.load_state_dict(book.state_dict())
    return book, fast


def _random_state(model: RNNLM):
    state = model.begin_state(BATCH)
    if isinstance(state, tuple):
        return tuple(torch.randn_like(s).requires_grad_() for s in state)
    return torch.randn_like(state).requires_grad_()


def _run(model: RNNLM, X: torch.Tensor, state, weights: torch.Tensor) -> tuple:
    logits, final = model(X, state)
    parts = final if isinstance(final, tuple) else (final,)
    loss = (logits * weights).sum() + sum((p * (k + 2)).sum() for k, p in enumerate(parts))
    loss.backward()
    starts = state if isinstance(state, tuple) else (state,)
    grads = {name: p.grad for name, p in model.named_parameters()}
    return logits, parts, grads, [s.grad for s in starts]


@pytest.mark.parametrize("options", CASES, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_fast_scratch_matches_the_book_loop_in_values_and_gradients(options, path):
    book, fast = _pair(options)
    X = torch.randint(VOCAB_SIZE, (BATCH, STEPS), generator=torch.Generator().manual_seed(1))
    state = _random_state(book)
    weights = torch.randn(BATCH, STEPS, VOCAB_SIZE, dtype=torch.float64)
    expected = _run(book, X, state, weights)
    state_again = tuple(s.detach().clone().requires_grad_() for s in state) if isinstance(state, tuple) \
        else state.detach().clone().requires_grad_()
    got = _run(fast, X, state_again, weights)
    torch.testing.assert_close(got[0], expected[0])
    for a, b in zip(got[1], expected[1]):
        torch.testing.assert_close(a, b)
    assert got[2].keys() == expected[2].keys()
    for name in expected[2]:
        torch.testing.assert_close(got[2][name], expected[2][name], msg=f"gradient of {name}")
    for a, b in zip(got[3], expected[3]):
        torch.testing.assert_close(a, b, msg="gradient of the initial state")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_an_lstm_batch_cut_into_parts_one_a_thread_computes_what_the_book_loop_does(dtype):
    # With two threads the LSTM kernels step each half of the batch on its own (19 rows: 9 and 10),
    # float32 through MKL's packed products, float64 through ATen's.
    assert native.available(), "the C++ kernels did not build; CI must exercise them"
    book, fast = _pair({"cell": "lstm", "num_layers": 2, "embedding": 5})
    book, fast = book.to(dtype), fast.to(dtype)
    batch, threads = 19, torch.get_num_threads()
    X = torch.randint(VOCAB_SIZE, (batch, STEPS), generator=torch.Generator().manual_seed(3))
    state = tuple(torch.randn_like(s) for s in book.begin_state(batch))
    weights = torch.randn(batch, STEPS, VOCAB_SIZE, dtype=dtype)
    again = lambda: tuple(s.clone().requires_grad_() for s in state)  # noqa: E731
    tolerance = {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {}
    torch.set_num_threads(2)
    try:
        with native.use_kernels(True):
            got = _run(fast, X, again(), weights)
    finally:
        torch.set_num_threads(threads)
    expected = _run(book, X, again(), weights)
    torch.testing.assert_close(got[0], expected[0], **tolerance)
    for name in expected[2]:
        torch.testing.assert_close(got[2][name], expected[2][name], msg=f"gradient of {name}", **tolerance)
    for a, b in zip(got[3], expected[3]):
        torch.testing.assert_close(a, b, msg="gradient of the initial state", **tolerance)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_fast_scratch_without_autograd_matches_token_by_token(cell, path):
    """Generation feeds one token per call without autograd (the LSTM then takes its own loop)."""
    book, fast = _pair({"cell": cell})
    X = torch.randint(VOCAB_SIZE, (BATCH, STEPS), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, expected_state = book(X)
        state, outputs = None, []
        for t in range(STEPS):
            logits, state = fast(X[:, t : t + 1], state)
            outputs.append(logits)
    torch.testing.assert_close(torch.cat(outputs, dim=1), expected)
    torch.testing.assert_close(state, expected_state)


def test_packed_weights_follow_parameter_updates_without_autograd():
    """The gate matrices packed for inference are rebuilt after an in-place update of a weight."""
    book, fast = _pair({"cell": "lstm"})
    X = torch.randint(VOCAB_SIZE, (BATCH, 2))
    with torch.no_grad():
        fast(X)  # fills the cache
        for model in (book, fast):
            model.core.layers[0].W_hf.add_(0.3)
        torch.testing.assert_close(fast(X)[0], book(X)[0])


def test_fast_scratch_trains_in_bf16_close_to_float32(path):
    """Under bf16 autocast the recurrence runs in bf16; the loss stays within bf16 rounding."""
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(VOCAB_SIZE, 32, cell="gru"))
    X = torch.randint(VOCAB_SIZE, (4, 10))
    reference = model(X)[0].float()
    with torch.autocast("cpu", torch.bfloat16):
        logits, _ = model(X)
        logits.float().sum().backward()
        outputs, _ = model.core(X.T, model.begin_state(4))
    assert outputs.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), reference, atol=2e-2, rtol=2e-2)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
               for p in model.parameters())


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_fast_scratch_matches_torch_nn(cell, path):
    """With copied weights the fast scratch model equals the builtin one (torch's GRU form)."""
    options = {"cell": cell, "num_layers": 2}
    if cell == "gru":
        options["gru_reset_after"] = True
    torch.manual_seed(0)
    fast = RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, impl="scratch", **options)).double()
    builtin = RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, impl="builtin", **options)).double()
    copy_scratch_to_builtin(fast, builtin)
    X = torch.randint(VOCAB_SIZE, (BATCH, STEPS))
    torch.testing.assert_close(fast(X)[0], builtin(X)[0])


def test_impl_book_is_the_step_by_step_loop():
    model = RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, cell="gru", impl="book"))
    assert not any(getattr(m, "fast", False) for m in model.modules())
    assert all(m.fast for m in RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, cell="gru")).core.layers)


def test_the_scratch_models_run_on_the_kernels_forward_and_backward(monkeypatch):
    """Where the kernels are built, training a scratch RNN, GRU (both forms) and LSTM calls them."""
    assert native.available()
    real, calls = native.ops(), set()

    class Recording:
        def __getattr__(self, name):
            calls.add(name)
            return getattr(real, name)

    monkeypatch.setattr(native, "ops", Recording)
    for options in ({"cell": "rnn"}, {"cell": "gru"}, {"cell": "gru", "gru_reset_after": True},
                    {"cell": "lstm"}):
        model = RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, **options))
        model(torch.randint(VOCAB_SIZE, (BATCH, STEPS)))[0].sum().backward()
    expected = {f"{cell}_{part}" for cell in ("rnn", "gru", "gru_reset_after", "lstm")
                for part in ("forward", "backward")}
    assert calls == expected


def test_the_kernels_reject_mismatched_shapes():
    assert native.available()
    P, H0 = torch.zeros(5, 3, 12), torch.zeros(3, 5)  # 12 is not 3 gates x 5 hidden units
    with pytest.raises(RuntimeError, match="does not match H0"):
        native.ops().gru_forward(P, torch.empty(0, dtype=torch.long), torch.zeros(12), H0,
                                 torch.zeros(5, 10), torch.zeros(5, 5))


def test_a_failed_kernel_build_falls_back_to_the_python_loops_with_one_warning(monkeypatch):
    from torch.utils import cpp_extension

    def no_compiler(*args, **kwargs):
        raise OSError("no C++ compiler here")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setattr(native, "_loaded", lambda: False)  # as in a process that has not built them
    native._load.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="no C.. compiler here"):
            assert not native.available()
        model = RNNLM(ModelConfig(VOCAB_SIZE, NUM_HIDDENS, cell="gru"))
        model(torch.randint(VOCAB_SIZE, (BATCH, STEPS)))[0].sum().backward()  # trains on the loops
        native._load.cache_clear()
        monkeypatch.setenv("CHARLM_KERNELS", "1")
        with pytest.raises(RuntimeError, match="could not be built"):
            native.available()
        native._load.cache_clear()
        monkeypatch.setenv("CHARLM_KERNELS", "0")
        assert not native.available()  # switched off: no build tried, no warning
    finally:
        native._load.cache_clear()
        monkeypatch.undo()
    assert native.available()


def test_the_kernels_reject_token_ids_outside_the_table_instead_of_reading_past_it():
    assert native.available()
    W_x, H0 = torch.zeros(4, 5), torch.zeros(2, 5)  # a vocabulary of 4, one gate of 5 units
    ids = torch.tensor([[0, 4]])  # 4 is one past the last row
    with pytest.raises(RuntimeError, match=r"token id 4 outside \[0, 4\)"):
        native.ops().rnn_forward(W_x, ids, torch.zeros(5), H0, torch.zeros(5, 5), False)
