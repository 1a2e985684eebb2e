"""Specifications for charlm.generation: warm-up, greedy and sampled decoding, filters, checks."""

from __future__ import annotations

import math
import re
from collections import Counter

import pytest
import torch
from torch.testing import assert_close

from charlm.data.vocab import Vocab
from charlm.generation import GenerateConfig, generate, next_token_distribution, pick, stream
from charlm.models import RNNLM, ModelConfig, native

TEXT = "the time machine by h g wells"
VOCAB = Vocab(list(TEXT))
KINDS = [(cell, impl) for cell in ("rnn", "gru", "lstm") for impl in ("scratch", "builtin")]


def _model(cell: str = "gru", impl: str = "scratch", vocab_size: int = len(VOCAB), seed: int = 0,
           **options) -> RNNLM:
    """A tiny model with weights large enough (std 0.5) that its distributions are far from uniform.

    ``<unk>`` gets output bias -30, so texts have one character per generated token.
    """
    model = RNNLM(ModelConfig(vocab_size, 16, cell=cell, impl=impl, **options))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        (model.b_q if impl == "scratch" else model.output.bias)[0] = -30.0
    return model


def _known(probs: list[float]) -> tuple[RNNLM, Vocab]:
    """A model whose next-token distribution is always `probs` over 'w', 'x', 'y', 'z'.

    ``W_hq = 0`` makes the logits the bias ``b_q`` whatever the state (d2l §8.5.2: Y = H W_hq + b_q);
    ``<unk>`` (index 0) gets logit -30, probability ~1e-13.
    """
    vocab = Vocab(list("wxyz"))  # equal counts keep first-seen order: <unk>, w, x, y, z
    model = RNNLM(ModelConfig(len(vocab), 16, impl="scratch"))
    with torch.no_grad():
        model.W_hq.zero_()
        model.b_q.copy_(torch.tensor([-30.0] + [math.log(p) for p in probs]))
    return model, vocab


def _reference_greedy(model: RNNLM, vocab: Vocab, prefix: str, num_preds: int) -> str:
    """The book's predict_ch8 (d2l §8.5.4), verbatim in spirit: one token at a time, then argmax."""
    model.eval()
    state = model.begin_state(1)
    outputs = [vocab[prefix[0]]]
    with torch.no_grad():
        for y in prefix[1:]:  # warm-up: run the prefix through, discarding predictions
            _, state = model(torch.tensor([[outputs[-1]]]), state)
            outputs.append(vocab[y])
        for _ in range(num_preds):
            logits, state = model(torch.tensor([[outputs[-1]]]), state)
            outputs.append(int(logits.reshape(-1).argmax()))
    return "".join(vocab.to_tokens(outputs))


def _counts(model: RNNLM, vocab: Vocab, config: GenerateConfig) -> Counter:
    texts = generate(model, vocab, "w", config)
    return Counter(ch for text in texts for ch in text[1:])


def _entropy(counts: Counter) -> float:
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values())


# --- determinism and the book's greedy decoding ---------------------------------------------------

def test_same_seed_same_samples_and_different_seeds_differ():
    model = _model()
    config = GenerateConfig(num_preds=20, num_samples=2, seed=3)
    assert generate(model, VOCAB, "the ", config) == generate(model, VOCAB, "the ", config)
    other = generate(model, VOCAB, "the ", GenerateConfig(num_preds=20, num_samples=2, seed=4))
    assert other != generate(model, VOCAB, "the ", config)


def test_greedy_is_deterministic_and_equals_temperature_zero():
    model = _model()
    greedy = generate(model, VOCAB, "time ", GenerateConfig(num_preds=15, greedy=True))
    assert greedy == generate(model, VOCAB, "time ", GenerateConfig(num_preds=15, greedy=True, seed=9))
    assert greedy == generate(model, VOCAB, "time ", GenerateConfig(num_preds=15, temperature=0))


@pytest.mark.parametrize("cell,impl", KINDS)
def test_greedy_matches_the_books_one_token_at_a_time_loop(cell, impl):
    """Warm-up over the whole prefix in one call continues exactly as the token-by-token loop."""
    model = _model(cell, impl)
    expected = _reference_greedy(model, VOCAB, "the time", 12)
    assert generate(model, VOCAB, "the time", GenerateConfig(num_preds=12, greedy=True)) == [expected]


def test_dropout_is_off_while_generating_and_training_mode_is_restored():
    """A model in training mode with dropout would be random under greedy decoding unless eval()."""
    model = _model("lstm", num_layers=2, dropout=0.5)
    model.train()
    model.core.training = True
    config = GenerateConfig(num_preds=15, greedy=True)
    first = generate(model, VOCAB, "the", config)
    assert all(generate(model, VOCAB, "the", config) == first for _ in range(3))
    assert all(m.training for m in model.modules())
    model.eval()
    assert generate(model, VOCAB, "the", config) == first
    assert not any(m.training for m in model.modules())


def test_mixed_submodule_modes_are_restored_exactly():
    model = _model()
    model.train()
    model.core.eval()
    generate(model, VOCAB, "the", GenerateConfig(num_preds=2, seed=0))
    assert model.training and not model.core.training


@pytest.mark.parametrize("seed", [0, None])
def test_global_torch_rng_is_untouched(seed):
    model = _model()
    torch.manual_seed(0)
    a = torch.rand(1)
    torch.manual_seed(0)
    generate(model, VOCAB, "the", GenerateConfig(num_preds=5, num_samples=2, seed=seed))
    assert torch.equal(a, torch.rand(1))


def test_forward_runs_without_autograd_in_eval_mode_and_nothing_leaks_between_steps():
    model = _model()
    model.train()
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append((torch.is_grad_enabled(), m.training)))
    with native.use_kernels(False):  # the steps in Python, through forward (the C++ steps never record)
        for _ in stream(model, VOCAB, "the", GenerateConfig(num_preds=3, seed=0)):
            assert torch.is_grad_enabled() and model.training  # the caller's modes, between yields
    assert seen == [(False, False)] * 3  # warm-up + 2 steps: the last choice is not fed back


# --- the filters, on a model whose distribution is known -------------------------------------------

def test_top_k_one_equals_greedy():
    model = _model()
    greedy = generate(model, VOCAB, "the", GenerateConfig(num_preds=15, greedy=True))
    assert generate(model, VOCAB, "the", GenerateConfig(num_preds=15, top_k=1, seed=5)) == greedy


def test_top_k_never_leaves_the_k_most_likely():
    model, vocab = _known([0.4, 0.3, 0.2, 0.1])
    counts = _counts(model, vocab, GenerateConfig(num_preds=5, num_samples=200, top_k=3, seed=0))
    assert set(counts) == {"w", "x", "y"}  # z (0.1) is 4th; all three kept ones do occur


def test_top_p_never_leaves_the_nucleus():
    """probs 0.5, 0.3, 0.1, 0.1 with top_p=0.7: 0.5 < 0.7 and 0.5 + 0.3 >= 0.7 -> nucleus {w, x}."""
    model, vocab = _known([0.5, 0.3, 0.1, 0.1])
    counts = _counts(model, vocab, GenerateConfig(num_preds=5, num_samples=200, top_p=0.7, seed=0))
    assert set(counts) == {"w", "x"}


def test_top_p_keeps_at_least_the_top_token():
    model, vocab = _known([0.5, 0.3, 0.1, 0.1])
    counts = _counts(model, vocab, GenerateConfig(num_preds=5, num_samples=20, top_p=0.01, seed=0))
    assert set(counts) == {"w"}


def test_distribution_known_answers():
    """Derivations: top-p 0.7 keeps [0.5, 0.3] -> /0.8 = [0.625, 0.375]; T=0.5 is alpha=2, so
    p**2 = [0.25, 0.09, 0.01, 0.01] / 0.36; top-k 2 after T=1 keeps [0.5, 0.3] -> same as top-p."""
    logits = torch.tensor([[0.5, 0.3, 0.1, 0.1]]).log()
    assert_close(next_token_distribution(logits, GenerateConfig(top_p=0.7)),
                 torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    assert_close(next_token_distribution(logits, GenerateConfig(temperature=0.5)),
                 torch.tensor([[0.25, 0.09, 0.01, 0.01]]) / 0.36)
    assert_close(next_token_distribution(logits, GenerateConfig(top_k=2)),
                 torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    assert_close(next_token_distribution(logits, GenerateConfig(greedy=True)),
                 torch.tensor([[1.0, 0.0, 0.0, 0.0]]))


def test_pick_rows_are_independent_and_need_a_generator_to_sample():
    logits = torch.tensor([[0.0, 5.0, 1.0], [9.0, 0.0, 1.0]])
    assert pick(logits, GenerateConfig(greedy=True), generator=None).tolist() == [1, 0]
    with pytest.raises(ValueError, match="Generator"):
        pick(logits, GenerateConfig(), generator=None)


def test_temperature_near_zero_is_argmax_and_high_temperature_spreads():
    model, vocab = _known([0.4, 0.3, 0.2, 0.1])
    cold = _counts(model, vocab, GenerateConfig(num_preds=5, num_samples=100, temperature=1e-3, seed=0))
    assert set(cold) == {"w"}
    low = _counts(model, vocab, GenerateConfig(num_preds=5, num_samples=200, temperature=0.5, seed=1))
    high = _counts(model, vocab, GenerateConfig(num_preds=5, num_samples=200, temperature=2.0, seed=1))
    # expected entropies: 1.07 nats at T=0.5 (p**2 normalised), 1.35 at T=2 (sqrt p normalised)
    assert _entropy(high) > _entropy(low) + 0.1


# --- shapes of the output --------------------------------------------------------------------------

def test_num_samples_texts_each_with_prefix_and_num_preds_tokens():
    texts = generate(_model(), VOCAB, "the ", GenerateConfig(num_preds=7, num_samples=4, seed=0))
    assert len(texts) == 4
    assert all(t.startswith("the ") and len(t) == 4 + 7 for t in texts)


def test_num_preds_zero_returns_the_prefix():
    assert generate(_model(), VOCAB, "the", GenerateConfig(num_preds=0, num_samples=2)) == ["the", "the"]


def test_stream_yields_steps_that_concatenate_to_generate():
    model, config = _model(), GenerateConfig(num_preds=6, num_samples=3, seed=2)
    steps = list(stream(model, VOCAB, "tim", config))
    assert len(steps) == 6 and all(len(step) == 3 for step in steps)
    joined = ["tim" + "".join(step[i] for step in steps) for i in range(3)]
    assert joined == generate(model, VOCAB, "tim", config)


def test_word_level_joins_words_with_spaces():
    words = ["the", "time", "traveller", "for", "so", "it", "will", "be", "convenient", "to", "speak"]
    vocab = Vocab(words)
    model = _model(vocab_size=len(vocab))
    (text,) = generate(model, vocab, "the time", GenerateConfig(num_preds=4, seed=0), token="word")
    out = text.split(" ")
    assert out[:2] == ["the", "time"] and len(out) == 6
    assert all(w in vocab for w in out)


def test_unicode_prefix_is_kept_as_given():
    """The returned text keeps the prefix itself, not its <unk>-mapped reading."""
    with pytest.warns(UserWarning):
        (text,) = generate(_model(), VOCAB, "thé", GenerateConfig(num_preds=3, seed=0))
    assert text.startswith("thé") and len(text) == 6


# --- checks -----------------------------------------------------------------------------------------

def test_unknown_prefix_tokens_warn_naming_them():
    with pytest.warns(UserWarning, match=r"<unk>: 'Q', '!'"):
        generate(_model(), VOCAB, "thQe!Q", GenerateConfig(num_preds=2, seed=0))


def test_unknown_prefix_tokens_are_an_error_when_strict():
    with pytest.raises(ValueError, match="'Q'"):
        generate(_model(), VOCAB, "thQ", GenerateConfig(num_preds=2, strict=True))


def test_stream_checks_at_the_call_not_at_the_first_token():
    with pytest.raises(ValueError, match="prefix"):
        stream(_model(), VOCAB, "")


@pytest.mark.parametrize("prefix,token", [("", "char"), ("   ", "word")])
def test_empty_prefix_is_an_error(prefix, token):
    with pytest.raises(ValueError, match="prefix must not be empty"):
        generate(_model(), VOCAB, prefix, token=token)


def test_all_unknown_prefix_is_an_error():
    with pytest.raises(ValueError, match="nothing to condition on"):
        generate(_model(), VOCAB, "QQ!")


def test_bidirectional_model_cannot_generate():
    with pytest.raises(ValueError, match="bidirectional"):
        generate(_model(bidirectional=True), VOCAB, "the")


def test_vocabulary_must_match_the_model():
    with pytest.raises(ValueError, match="vocab_size"):
        generate(_model(vocab_size=len(VOCAB) + 1), VOCAB, "the")


def test_device_must_be_the_models():
    with pytest.raises(ValueError, match="device"):
        generate(_model(), VOCAB, "the", device="cuda")


@pytest.mark.parametrize("field,value", [
    ("num_preds", -1), ("num_preds", 2.5), ("temperature", -1), ("temperature", math.inf),
    ("temperature", math.nan), ("greedy", "yes"), ("top_k", -1), ("top_p", 0), ("top_p", 1.5),
    ("num_samples", 0), ("seed", -1), ("seed", "x"), ("strict", 1),
])
def test_bad_config_values_name_the_flag(field, value):
    with pytest.raises(ValueError, match=re.escape("--" + field.replace("_", "-") + " must")):
        GenerateConfig(**{field: value})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sampling_replays_with_a_seed():
    model = _model().cuda()
    config = GenerateConfig(num_preds=10, num_samples=2, seed=0)
    assert generate(model, VOCAB, "the", config) == generate(model, VOCAB, "the", config)
    assert generate(model, VOCAB, "the", GenerateConfig(num_preds=10, greedy=True)) == \
        generate(model.cpu(), VOCAB, "the", GenerateConfig(num_preds=10, greedy=True))


# -- stopping at a text -------------------------------------------------------------------------------

@pytest.mark.parametrize("greedy", [True, False])
def test_each_sample_ends_where_the_stop_text_first_appears(greedy):
    model, config = _model(), GenerateConfig(num_preds=200, num_samples=4, seed=3, greedy=greedy)
    full = generate(model, VOCAB, "the", config)
    stopped = generate(model, VOCAB, "the", GenerateConfig(**{**config.__dict__, "stop": "e"}))
    for whole, cut in zip(full, stopped):
        generated = whole[len("the"):]
        # the same draws up to the stop (one generator, one draw per row and step), then nothing
        expected = generated[:generated.index("e") + 1] if "e" in generated else generated
        assert cut == "the" + expected


def test_the_loop_ends_once_every_sample_has_stopped():
    model, vocab = _known([0.97, 0.01, 0.01, 0.01])  # almost always "w"
    steps = list(stream(model, vocab, "x", GenerateConfig(num_preds=1000, greedy=True, stop="ww")))
    assert len(steps) == 2 and [s[0] for s in steps] == ["w", "w"]


def test_a_stop_text_made_of_several_tokens_spans_them_and_the_prefix_does_not_count():
    model, vocab = _known([0.97, 0.01, 0.01, 0.01])
    texts = generate(model, vocab, "ww", GenerateConfig(num_preds=50, greedy=True, stop="www"))
    assert texts == ["ww" + "www"]


def test_an_empty_stop_text_is_refused():
    with pytest.raises(ValueError, match="--stop must not be empty"):
        GenerateConfig(stop="")


# -- beam search -------------------------------------------------------------------------------------

def _log_prob(model, vocab, prefix, continuation):
    """log p(continuation | prefix) under the model: the sum over its tokens."""
    ids = torch.tensor([vocab[list(prefix + continuation)]])
    with torch.no_grad():
        logp = torch.log_softmax(model.eval()(ids[:, :-1])[0].float(), dim=-1)[0]  # (T - 1, V)
    steps = range(len(prefix) - 1, ids.shape[1] - 1)
    return sum(float(logp[t, ids[0, t + 1]]) for t in steps)


def test_a_beam_as_wide_as_every_path_finds_the_likeliest_text():
    import itertools

    vocab = Vocab(list("abcd"))
    # seed 3: a model whose likeliest next token does not begin the likeliest two (greedy says "ca")
    model = _model(vocab_size=len(vocab), seed=3)  # <unk> has logit -30: never on the best path
    # 2 steps over 5 tokens: a beam of 5 keeps every path until the last step, so it is exact
    paths = itertools.product(vocab.idx_to_token[1:], repeat=2)
    best = max(paths, key=lambda t: _log_prob(model, vocab, "ab", "".join(t)))
    (text,) = generate(model, vocab, "ab", GenerateConfig(num_preds=2, beam=5))
    assert text == "ab" + "".join(best)
    assert generate(model, vocab, "ab", GenerateConfig(num_preds=2, greedy=True)) != [text]


def test_a_beam_of_one_is_greedy_and_the_samples_come_best_first():
    model = _model(seed=2)
    greedy = generate(model, VOCAB, "the", GenerateConfig(num_preds=30, greedy=True))
    assert generate(model, VOCAB, "the", GenerateConfig(num_preds=30, beam=1)) == greedy
    texts = generate(model, VOCAB, "the", GenerateConfig(num_preds=12, beam=6, num_samples=6))
    scores = [_log_prob(model, VOCAB, "the", t[len("the"):]) for t in texts]
    assert len(set(texts)) == 6 and scores == sorted(scores, reverse=True)
    assert scores[0] >= _log_prob(model, VOCAB, "the", generate(
        model, VOCAB, "the", GenerateConfig(num_preds=12, greedy=True))[0][len("the"):]) - 1e-4


@pytest.mark.parametrize("options,message", [
    ({"beam": 3, "temperature": 0.5}, "--temperature chooses how to sample; --beam searches"),
    ({"beam": 3, "seed": 1}, "--seed chooses how to sample"),
    ({"beam": 2, "num_samples": 3}, "--num-samples 3 is more than --beam 2 keeps"),
    ({"beam": -1}, "--beam must be an integer >= 0"),
])
def test_beam_settings_that_cannot_go_together_are_refused(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        GenerateConfig(**options)


def test_a_beam_wider_than_the_vocabulary_is_refused():
    message = f"--beam 99 is wider than the vocabulary ({len(VOCAB)} tokens)"
    with pytest.raises(ValueError, match=re.escape(message)):
        generate(_model(), VOCAB, "the", GenerateConfig(beam=99))
