"""Greedy generation in C++ (charlm/models/csrc/decoding.cpp) picks the same tokens as the Python loop.

Each case builds a fast scratch model (or a torch.nn one) with weights N(0, 0.1²) (large enough that
the logits are far apart, small enough that the recurrence contracts: a chaotic one, as with N(0,
0.3²), amplifies the last bit of rounding into different text after a hundred tokens), generates
greedily on both paths in float64 and compares the texts. 150 tokens cross the boundary between two
C++ calls (64 tokens each).
"""

from __future__ import annotations

import pytest
import torch

from charlm.data.vocab import Vocab
from charlm.generation import GenerateConfig, generate, stream
from charlm.models import RNNLM, ModelConfig, decoding, native

ALPHABET = list(" abcdefghijklmnopqrstuvwxyz")
PREFIX = "time traveller "

CASES = [
    {"cell": "rnn"},
    {"cell": "rnn", "activation": "relu"},
    {"cell": "gru"},  # the book's form
    {"cell": "gru", "gru_reset_after": True},  # torch's form
    {"cell": "lstm"},
    {"cell": "rnn", "num_layers": 2, "embedding": 5},
    {"cell": "gru", "num_layers": 3, "dropout": 0.5},  # dropout is off when generating
    {"cell": "lstm", "num_layers": 2, "embedding": 6},
    # torch.nn's layers, their weights laid out as the scratch cells' (GRU: torch's gate order r, z, n)
    {"cell": "rnn", "impl": "builtin"},
    {"cell": "rnn", "activation": "relu", "impl": "builtin"},
    {"cell": "gru", "impl": "builtin"},
    {"cell": "lstm", "impl": "builtin"},
    {"cell": "gru", "num_layers": 3, "embedding": 5, "impl": "builtin"},
    {"cell": "lstm", "num_layers": 2, "embedding": 16, "impl": "builtin", "tie_weights": True},
]


@pytest.fixture(autouse=True)
def kernels():
    if not native.available():
        pytest.fail("the C++ kernels did not build (see the warning); CI must exercise them")


def _model(dtype: torch.dtype = torch.float64, scale: float = 0.1, **options) -> RNNLM:
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(len(ALPHABET) + 1, 16, **options)).to(dtype)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, scale)
    return model


def _both_paths(model: RNNLM, config: GenerateConfig) -> tuple[list[str], list[str]]:
    vocab = Vocab(ALPHABET)
    in_kernels = generate(model, vocab, PREFIX, config)
    with native.use_kernels(False):  # the whole model on its Python loops
        in_python = generate(model, vocab, PREFIX, config)
    return in_kernels, in_python


@pytest.mark.parametrize("options", CASES, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_greedy_text_from_the_kernel_loop_matches_the_python_loop(options):
    model = _model(**options)
    assert decoding.usable(model)
    in_kernels, in_python = _both_paths(model, GenerateConfig(num_preds=150, greedy=True, num_samples=3))
    assert in_kernels == in_python


@pytest.mark.parametrize("options", CASES, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_the_kernel_loop_computes_the_models_logits_and_state(options):
    """From a random state, 20 picks: the logits and state the loop returns are those of the
    model's own forward over the picked ids, and every pick is the argmax of the logits before it."""
    model = _model(scale=0.3, **options).eval()  # no dropout in the reference either
    state = tuple(torch.randn_like(s) for s in model.begin_state(2)) if options["cell"] == "lstm" \
        else torch.randn_like(model.begin_state(2))
    with torch.inference_mode():
        logits = torch.randn(2, len(ALPHABET) + 1, dtype=torch.float64)
        ids, last_logits, last_state = decoding.greedy(model, state, 20, feed_last=True, logits=logits)
        all_logits, state_ref = model(ids.T, state)  # (2, 20, V)
    torch.testing.assert_close(last_logits, all_logits[:, -1])
    for got, want in zip(last_state if isinstance(state, tuple) else [last_state],
                         state_ref if isinstance(state, tuple) else [state_ref], strict=True):
        torch.testing.assert_close(got, want)
    picks_before = torch.cat([logits[None], all_logits.transpose(0, 1)[:-1]]).argmax(-1)  # (20, 2)
    torch.testing.assert_close(ids, picks_before)
    with torch.inference_mode():  # the scored loop: the same picks, and the logits each was made from
        scored_ids, step_logits, _, _ = decoding.greedy_scored(model, state, 20, feed_last=True,
                                                               logits=logits)
    assert torch.equal(scored_ids, ids)
    torch.testing.assert_close(step_logits, torch.cat([logits[None], all_logits.transpose(0, 1)[:-1]]))


def test_float32_and_bfloat16_models_generate_on_the_kernels_too():
    model = _model(torch.float32, cell="gru")
    in_kernels, in_python = _both_paths(model, GenerateConfig(num_preds=40, greedy=True))
    assert in_kernels == in_python
    model = _model(torch.bfloat16, cell="lstm")
    assert decoding.usable(model)
    (text,) = generate(model, Vocab(ALPHABET), PREFIX, GenerateConfig(num_preds=40, greedy=True))
    assert len(text) >= len(PREFIX) + 40


def test_chunks_continue_where_the_last_one_stopped():
    """Two calls of 5 picks give the ids and state of one call of 10 (the state after pick 10
    only with feed_last, which feeds the last pick back)."""
    model = _model(cell="lstm", num_layers=2)
    with torch.inference_mode():
        prefix = torch.tensor([[3, 1, 4, 1, 5]])
        logits, state = model(prefix)
        logits = logits[:, -1]
        ids_a, logits_a, state_a = decoding.greedy(model, state, 5, feed_last=True, logits=logits)
        ids_b, logits_b, state_b = decoding.greedy(model, state_a, 5, feed_last=True, logits=logits_a)
        ids, logits_all, state_all = decoding.greedy(model, state, 10, feed_last=True, logits=logits)
        _, _, state_short = decoding.greedy(model, state, 10, feed_last=False, logits=logits)
        # warming up on the prefix in the loop itself gives the same
        ids_p, _, state_p = decoding.greedy(model, model.begin_state(1), 10, feed_last=True, prefix=prefix)
        # the reference: feed all ten picks to the model's own forward
        _, state_ref = model(ids.T, state)
    torch.testing.assert_close(torch.cat([ids_a, ids_b]), ids)
    torch.testing.assert_close(ids_p, ids)
    torch.testing.assert_close(state_p, state_all)
    torch.testing.assert_close(logits_b, logits_all)
    for got, want in zip((*state_b, *state_all), (*state_all, *state_ref), strict=True):
        torch.testing.assert_close(got, want)
    with pytest.raises(AssertionError):  # without feed_last the last pick was not fed
        torch.testing.assert_close(state_short[0], state_ref[0])


def test_generate_and_stream_use_the_kernel_loop_one_chunk_per_64_tokens(monkeypatch):
    calls = []
    real = decoding.greedy

    def spy(model, state, count, *, feed_last, **start):
        calls.append((count, feed_last, *start))
        return real(model, state, count, feed_last=feed_last, **start)

    monkeypatch.setattr(decoding, "greedy", spy)
    model = _model(cell="gru")
    generate(model, Vocab(ALPHABET), PREFIX, GenerateConfig(num_preds=150, greedy=True))
    # the warm-up is one forward call over the prefix; then one token alone, to show at once
    assert calls == [(1, True, "logits"), (64, True, "logits"), (64, True, "logits"), (21, False, "logits")]
    calls.clear()
    tokens = stream(model, Vocab(ALPHABET), PREFIX, GenerateConfig(num_preds=3, greedy=True))
    assert len(list(tokens)) == 3 and calls == [(1, True, "logits"), (2, False, "logits")]
    calls.clear()
    generate(model, Vocab(ALPHABET), PREFIX, GenerateConfig(num_preds=5, temperature=1.0, seed=0))
    # sampling: the warm-up is one forward call, each draw is Python's, each step after it one C++ call
    assert calls == [(0, False, "prefix")] * 4


def test_a_builtin_model_changed_in_place_decodes_with_its_new_weights():
    """The builtin weights' layout is kept between calls; a change to any parameter (an optimizer
    step, load_state_dict) must be seen by the next call."""
    model = _model(cell="lstm", impl="builtin")
    config = GenerateConfig(num_preds=60, greedy=True)
    before, _ = _both_paths(model, config)
    assert before[0][len(PREFIX):] != "q" * 60
    with torch.no_grad():
        model.core.weight_hh_l0.mul_(-1.0)
        model.output.bias[Vocab(ALPHABET)["q"]] += 100.0  # the model now says q, whatever came before
    in_kernels, in_python = _both_paths(model, config)
    assert in_kernels == in_python == [PREFIX + "q" * 60]


@pytest.mark.parametrize("options", [{"impl": "book"}, {"bidirectional": True},
                                     {"impl": "builtin", "bidirectional": True}])
def test_models_the_kernel_loop_cannot_run_are_left_to_the_python_loop(options):
    assert not decoding.usable(_model(**options))
    with native.use_kernels(False):
        assert not decoding.usable(_model())


def test_the_kernel_loop_rejects_tensors_that_do_not_fit_together():
    model = _model(cell="gru")
    ops = native.ops()
    logits, H = torch.zeros(1, 28, dtype=torch.float64), torch.zeros(1, 1, 16, dtype=torch.float64)
    name, embedding, layers, _, _ = decoding._tensors(model)
    none, no_ids = torch.empty(0), torch.empty(0, dtype=torch.long)

    def decode(logits=logits, H=H, C=none, layers=layers, W_hq=model.W_hq, prefix=no_ids, step_logits=none):
        return ops.decode_greedy(prefix, logits, H, C, name, embedding, layers, W_hq, model.b_q, 1, True,
                                 step_logits)

    with pytest.raises(RuntimeError, match="expected 4 per layer"):
        decode(layers=layers[:3])
    with pytest.raises(RuntimeError, match="logits"):
        decode(logits=logits[:, :5])
    with pytest.raises(RuntimeError, match="C is needed"):
        decode(C=H.clone())
    with pytest.raises(RuntimeError, match="dtype"):
        decode(W_hq=model.W_hq.float())
    with pytest.raises(RuntimeError, match="either a prefix or the logits"):
        decode(prefix=torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(RuntimeError, match="outside"):
        decode(prefix=torch.full((2, 1), 28), logits=none)
    with pytest.raises(RuntimeError, match="step_logits"):
        decode(step_logits=torch.zeros(2, 1, 28, dtype=torch.float64))  # one step asked, room for two
    decode()  # and with everything right, it runs
    decode(prefix=torch.zeros(2, 1, dtype=torch.long), logits=none)
