"""What a unit does (inspection/intervention.py): a unit held at a value, the text read again and
written again with it held, and the units whose removal costs a text most."""

import math

import pytest
import torch

import charlm
from charlm import RNNLM, GenerateConfig, ModelConfig, Vocab
from charlm.inspection.intervention import (
    Clamp,
    ablation_ranking,
    check_clamp,
    generate_clamped,
    read_clamped,
)
from charlm.inspection.reading import read, score

TEXT = "The old man sat by the fire and told the children of the war; they listened."


def tiny(cell: str, impl: str, layers: int = 2, embedding: int | None = None) -> RNNLM:
    torch.manual_seed(0)
    return RNNLM(ModelConfig(vocab_size=12, num_hiddens=16, cell=cell, impl=impl, num_layers=layers,
                             embedding=embedding)).eval()


IDS = torch.tensor([1, 5, 3, 7, 2, 2, 9, 11, 4, 6, 1, 5, 3, 8])


@pytest.mark.parametrize("cell, impl, embedding", [("lstm", "builtin", 8), ("gru", "scratch", None),
                                                   ("rnn", "builtin", None), ("lstm", "scratch", None)])
def test_with_nothing_held_a_text_reads_as_score_reads_it(cell, impl, embedding):
    model = tiny(cell, impl, embedding=embedding)
    bits = read_clamped(model, IDS, [[]])[0]
    assert bits.tolist() == pytest.approx(score(model, IDS).bits.tolist(), abs=1e-4)


def test_a_held_unit_is_what_the_output_layer_reads():
    model = tiny("lstm", "builtin", layers=1)
    held = Clamp(0, "h", 5, 3.0)
    with torch.no_grad():
        _, (h, _) = model(IDS[:1][None])  # the state after the first token
        h = h[0, 0].clone()
        h[5] = 3.0
        logits = model.output(h)
    want = -torch.log_softmax(logits, dim=-1)[IDS[1]] / math.log(2)
    got = read_clamped(model, IDS, [[], [held]])
    assert float(got[1, 0]) == pytest.approx(float(want), abs=1e-5)
    assert not torch.allclose(got[0], got[1])  # and it changes what follows


def test_a_memory_cell_held_changes_the_reading_and_other_rows_are_left_alone():
    model = tiny("lstm", "builtin")
    got = read_clamped(model, IDS, [[], [Clamp(0, "c", 2, 5.0)], []])
    assert torch.equal(got[0], got[2]) and not torch.allclose(got[0], got[1])


def test_with_nothing_held_greedy_writing_is_charlm_generate():
    run = charlm.load("english")
    config = GenerateConfig(num_preds=40, greedy=True)
    held, free = generate_clamped(run.model, run.vocab, "It was ", config, [])
    assert held == free == charlm.generate(run.model, run.vocab, "It was ", config)[0]


def test_a_held_unit_changes_what_is_written_and_the_free_text_stays_the_same():
    run = charlm.load("english")
    config = GenerateConfig(num_preds=60, seed=3, temperature=0.8)
    free = generate_clamped(run.model, run.vocab, "It was ", config, [])[1]
    held, free_again = generate_clamped(run.model, run.vocab, "It was ", config, [Clamp(1, "h", 7, 1.0),
                                                                                   Clamp(1, "c", 7, 30.0)])
    assert free_again == free and held != free and held.startswith("It was ")


@pytest.mark.slow
def test_the_ablation_ranking_is_each_units_exact_cost_largest_first():
    run = charlm.load("english")
    ids = read(run, TEXT).ids
    ranked = ablation_ranking(run.model, ids, kinds=("h",), limit=5, batch=128)
    assert [a.cost for a in ranked] == sorted((a.cost for a in ranked), reverse=True)
    top = ranked[0]
    base, without = read_clamped(run.model, ids, [[], [Clamp(top.layer, "h", top.unit)]]).mean(dim=1)
    assert top.cost == pytest.approx(float(without - base), abs=1e-4)
    assert top.cost > 0.05  # removing the most needed unit costs this text something


@pytest.mark.parametrize("clamp, message", [
    (Clamp(0, "h", 16), r"unit must be in \[0, 16\) \(layer 0 h has 16 units\), got 16"),
    (Clamp(2, "h", 0), r"layer must be in \[0, 2\), got 2"),
    (Clamp(0, "c", 0), "kind must be one of h for a GRU"),
    (Clamp(0, "h", 0, math.nan), "finite"),
])
def test_a_clamp_the_model_cannot_take_is_a_clear_error(clamp, message):
    with pytest.raises(ValueError, match=message):
        check_clamp(tiny("gru", "builtin"), clamp)


def test_a_bidirectional_model_cannot_be_clamped():
    model = RNNLM(ModelConfig(vocab_size=12, num_hiddens=8, cell="lstm", impl="builtin", bidirectional=True))
    with pytest.raises(ValueError, match="bidirectional"):
        read_clamped(model, IDS, [[Clamp(0, "h", 1)]])


def test_words_are_joined_by_spaces():
    model = tiny("gru", "builtin")
    vocab = Vocab(["the", "old", "man", "sat", "by", "fire", "and", "told", "of", "war", "they"])
    held, free = generate_clamped(model, vocab, "the old", GenerateConfig(num_preds=3, greedy=True), [],
                                  token="word")
    assert held == free and held.startswith("the old ") and len(held.split(" ")) == 5


@pytest.mark.parametrize("cell, impl", [("lstm", "builtin"), ("gru", "scratch")])
def test_a_models_preamble_is_read_first_by_the_explorer_too(cell, impl):
    """The explorer's layer-by-layer passes begin where generation and evaluation do."""
    model = tiny(cell, impl)
    model.preamble = torch.tensor([7, 7, 3])
    expected = charlm.evaluate_ids(model, IDS).loss / math.log(2)
    assert score(model, IDS).bits.mean().item() == pytest.approx(expected, abs=1e-4)
    clamped = read_clamped(model, IDS, [[]])[0]
    assert clamped.tolist() == pytest.approx(score(model, IDS).bits.tolist(), abs=1e-4)
    primed = score(model, IDS).bits
    model.preamble = None
    assert not torch.equal(score(model, IDS).bits, primed)
