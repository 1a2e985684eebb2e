"""Evaluation: exact whole-stream scores, independent of chunking, with bits per token."""

import math

import pytest
import torch
import torch.nn.functional as nnf

from charlm import RNNLM, ModelConfig, evaluate_ids


@pytest.fixture
def model():
    torch.manual_seed(0)
    return RNNLM(ModelConfig(12, 16, cell="gru", impl="builtin")).eval()


def test_score_is_the_mean_loss_of_predicting_each_next_token_from_all_before(model):
    ids = torch.randint(0, 12, (50,))
    logits, _ = model(ids[None, :-1])  # one pass over the whole stream
    expected = nnf.cross_entropy(logits[0], ids[1:]).item()
    result = evaluate_ids(model, ids, num_steps=7)
    assert result.loss == pytest.approx(expected, rel=1e-5) and result.num_tokens == 49
    assert result.perplexity == pytest.approx(math.exp(expected), rel=1e-5)
    assert result.bits_per_token == pytest.approx(expected / math.log(2), rel=1e-5)


@pytest.mark.parametrize("num_steps", [1, 5, 64, 1000])
def test_chunk_length_does_not_change_the_score(model, num_steps):
    ids = torch.randint(0, 12, (200,))
    assert evaluate_ids(model, ids, num_steps=num_steps).loss == pytest.approx(
        evaluate_ids(model, ids, num_steps=200).loss, rel=1e-5)


def test_evaluation_leaves_training_mode_as_it_was(model):
    model.train()
    evaluate_ids(model, torch.randint(0, 12, (20,)))
    assert model.training


def test_a_stream_too_short_to_score_is_an_error(model):
    with pytest.raises(ValueError, match="at least 2 are needed"):
        evaluate_ids(model, torch.tensor([3]))
