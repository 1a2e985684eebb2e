"""charlm.inspection.reading: a text read as the run reads it, every position scored, every unit traced
and ranked."""

from __future__ import annotations

import math

import pytest
import torch
from tests.explorer_runs import TEXT, make_run, plant_vowel_unit

from charlm import GenerateConfig, evaluate, evaluate_ids, generate, load, stream_scored
from charlm.inspection import hidden
from charlm.inspection import reading as ins

KINDS = [("lstm", "builtin"), ("lstm", "scratch"), ("gru", "builtin"), ("gru", "scratch"), ("rnn", "builtin"),
         ("rnn", "scratch")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    return {kind: load(make_run(root / "-".join(kind), cell=kind[0], impl=kind[1], epochs=1))
            for kind in KINDS}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    run_dir = make_run(tmp_path_factory.mktemp("planted") / "run", epochs=1)
    plant_vowel_unit(run_dir, layer=0, unit=3)
    return load(run_dir)


def test_a_text_is_read_with_the_runs_own_cleaning(tmp_path):
    run = load(make_run(tmp_path / "d2l", epochs=1, clean="d2l", text=TEXT.lower(), prefix="the "))
    reading = ins.read(run, "The Time-Machine!")
    assert reading.tokens == list("the time machine")
    assert reading.cleaned and reading.unknown == 0
    raw = ins.read(load(make_run(tmp_path / "raw", epochs=1)), "The \u00e9")
    assert raw.tokens == list("The \u00e9") and not raw.cleaned
    assert raw.unknown == 1  # é never occurs in the training text: read as <unk>, counted


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS, ids="-".join)
def test_the_mean_bits_are_what_evaluate_gives(runs, kind):
    run = runs[kind]
    ids = ins.read(run, TEXT[:700]).ids
    scores = ins.score(run.model, ids, num_steps=100)  # chunks of another size than evaluate's
    assert len(scores.bits) == len(ids) - 1
    assert scores.bits_per_token == pytest.approx(evaluate_ids(run.model, ids).bits_per_token, abs=1e-5)


def test_the_displayed_bits_equal_charlm_evaluate_on_the_same_file(runs, tmp_path):
    run = runs[("lstm", "builtin")]
    text = 'He said: "Never," and looked at the Time Traveller.\n' * 3
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    result, _, _ = evaluate(run.path, corpus=str(tmp_path / "t.txt"))
    assert ins.score(run.model, ins.read(run, text).ids).bits_per_token == pytest.approx(
        result.bits_per_token, abs=1e-4)


def test_each_position_has_the_models_softmax_its_rank_and_top_k(runs):
    run = runs[("gru", "scratch")]
    ids = ins.read(run, TEXT[:200]).ids
    scores = ins.score(run.model, ids, top=5)
    with torch.inference_mode():
        logits, _ = run.model(ids[None, :-1])
    probs = torch.softmax(logits[0].float(), dim=-1)  # (T-1, V)
    actual = probs.gather(1, ids[1:, None])[:, 0]
    torch.testing.assert_close(scores.probs, actual, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(scores.bits, -torch.log2(actual), rtol=1e-4, atol=1e-5)
    expected_top = torch.topk(probs, 5)
    torch.testing.assert_close(scores.top_probs, expected_top.values, rtol=1e-4, atol=1e-6)
    assert torch.equal(scores.ranks, (probs > actual[:, None]).sum(1) + 1)
    first_choice = scores.top_ids[:, 0] == ids[1:]
    assert torch.equal(scores.ranks == 1, first_choice)


@pytest.mark.parametrize("kind", [("lstm", "builtin"), ("gru", "scratch")], ids="-".join)
def test_scores_from_a_trace_are_the_scores_of_a_second_pass(runs, kind):
    run = runs[kind]
    ids = ins.read(run, TEXT[:400]).ids
    direct, traced = ins.score(run.model, ids), ins.score(run.model, ids, trace=ins.trace(run.model, ids))
    torch.testing.assert_close(traced.bits, direct.bits, rtol=1e-4, atol=1e-4)
    assert torch.equal(traced.top_ids, direct.top_ids) and torch.equal(traced.ranks, direct.ranks)
    with pytest.raises(ValueError, match="trace the same ids"):
        ins.score(run.model, ids[:-1], trace=ins.trace(run.model, ids))


def test_a_text_of_one_token_has_nothing_to_score(runs):
    with pytest.raises(ValueError, match="at least 2 are needed"):
        ins.score(runs[("rnn", "builtin")].model, torch.tensor([3]))


@pytest.mark.parametrize("kind", KINDS, ids="-".join)
def test_the_trace_ends_in_the_models_own_state_and_gives_its_logits(runs, kind):
    run = runs[kind]
    ids = ins.read(run, TEXT[:300]).ids
    trace = ins.trace(run.model, ids)
    with torch.inference_mode():
        logits, state = run.model(ids[None])
    H, C = state if isinstance(state, tuple) else (state, None)
    for layer in range(run.model.config.num_layers):
        torch.testing.assert_close(trace.values[-1, trace.block(layer, "h").start:][:32], H[layer, 0].float())
        if C is not None:  # tanh(c), the cell state squashed as the output gate sees it
            torch.testing.assert_close(trace.values[-1, trace.block(layer, "c").start:][:32],
                                       torch.tanh(C[layer, 0]).float(), rtol=1e-4, atol=1e-5)
    top = trace.values[:, trace.block(1, "h").start:][:, :32]  # (T, H): every step of the last layer
    W, b = (run.model.W_hq, run.model.b_q) if kind[1] == "scratch" else (run.model.output.weight.T,
                                                                          run.model.output.bias)
    torch.testing.assert_close(top @ W + b, logits[0].float(), rtol=1e-4, atol=1e-4)


def test_a_bidirectional_trace_holds_both_directions(tmp_path):
    run = load(make_run(tmp_path / "bi", epochs=1, bidirectional=True, num_layers=1))
    ids = ins.read(run, TEXT[:100]).ids
    trace = ins.trace(run.model, ids)
    assert [(b.layer, b.kind, b.size) for b in trace.blocks] == [(0, "h", 64), (0, "c", 64)]
    with torch.inference_mode():
        outputs, _ = run.model.core(run.model._encode(ids[None]))  # (T, 1, 2H)
    torch.testing.assert_close(trace.values[:, :64], outputs[:, 0])  # the forward half, then the backward


def test_trace_only_the_kinds_asked_for(runs):
    trace = ins.trace(runs[("lstm", "builtin")].model, torch.tensor([1, 2, 3]), kinds=("h",))
    assert [b.kind for b in trace.blocks] == ["h", "h"]
    with pytest.raises(ValueError, match="kinds must be among h, c"):
        ins.trace(runs[("lstm", "builtin")].model, torch.tensor([1, 2]), kinds=("gates",))


def test_a_unit_planted_to_fire_on_vowels_ranks_first_for_the_vowel_preset(planted):
    reading = ins.read(planted, TEXT[:2000])
    trace = ins.trace(planted.model, reading.ids)
    best = ins.rank_units(trace, ins.mask_of(reading, preset="vowel"))
    assert trace.unit(best[0].index) in [(0, "h", 3), (0, "c", 3)]
    assert {trace.unit(r.index) for r in best[:2]} == {(0, "h", 3), (0, "c", 3)}
    assert best[0].score > 0.99 and best[0].mean_in > 0.7 > 0.01 > abs(best[0].mean_out)


def test_the_score_is_the_correlation_with_the_mask():
    # unit 0 is the mask itself, unit 1 its opposite, unit 2 noise, unit 3 the mask scaled and shifted
    mask = torch.tensor([1, 0, 0, 1, 0, 1, 0, 0], dtype=torch.bool)
    noise = torch.tensor([0.3, -0.1, 0.8, 0.2, -0.5, 0.1, 0.4, -0.2])
    values = torch.stack([mask.float(), 1 - mask.float(), noise, 5 * mask.float() - 2], dim=1)
    trace = ins.Trace(values, [ins.Block(0, "h", 0, 4)], values.mean(0), values.std(0, correction=0))
    ranked = ins.rank_units(trace, mask, limit=4)
    by_unit = {r.index: r for r in ranked}
    assert by_unit[0].score == pytest.approx(1.0) and by_unit[3].score == pytest.approx(1.0)
    assert by_unit[1].score == pytest.approx(-1.0) and ranked[-1].index == 1
    numpy_corr = float(torch.corrcoef(torch.stack([noise, mask.float()]))[0, 1])
    assert by_unit[2].score == pytest.approx(numpy_corr, abs=1e-5)
    assert by_unit[3].mean_in == pytest.approx(3.0) and by_unit[3].mean_out == pytest.approx(-2.0)
    with pytest.raises(ValueError, match="must mark some positions and leave others"):
        ins.rank_units(trace, torch.zeros(8, dtype=torch.bool))


def _marked(run, text: str, **how) -> str:
    reading = ins.read(run, text)
    return "".join(t if m else "_" for t, m in zip(reading.tokens, ins.mask_of(reading, **how)))


def test_the_presets_mark_what_their_names_say(runs):
    run = runs[("rnn", "builtin")]
    assert _marked(run, 'He said "no".', preset="inside quotes") == '_________no__'
    assert _marked(run, "ab\ncd", preset="line start") == "a__c_"
    assert _marked(run, "Tea is", preset="vowel") == "_ea_i_"
    assert _marked(run, "Tea, is", preset="word end") == "__a___s"
    assert _marked(run, "Tea, Is", preset="capital") == "T____I_"
    assert _marked(run, "a (b (c) d) e", preset="inside parentheses") == "___b (c) d___"


def test_a_regex_marks_what_it_matches_and_spans_mark_token_positions(runs):
    run = runs[("rnn", "builtin")]
    assert _marked(run, "the time machine", regex=r"\bt\w+") == "the_time________"
    assert _marked(run, "the time", spans=[(0, 2), (5, 6)]) == "th___i__"
    with pytest.raises(ValueError, match="is not a regular expression"):
        _marked(run, "the", regex="(")
    with pytest.raises(ValueError, match="preset must be one of vowel"):
        _marked(run, "the", preset="nouns")
    with pytest.raises(ValueError, match="not within the text's 3 tokens"):
        _marked(run, "the", spans=[(2, 9)])
    with pytest.raises(ValueError, match="exactly one of preset, regex and spans"):
        _marked(run, "the", preset="vowel", regex="t")


def test_top_positions_are_the_highest_and_apart():
    values = torch.tensor([0.0, 0.9, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.8, 0.0])
    assert ins.top_positions(values, count=3, apart=4) == [2, 10, 6]


def test_each_letter_knows_its_place_in_its_word():
    assert ins.word_positions(list("A cat's\nhat")) == [1, 0, 1, 2, 3, 0, 1, 0, 1, 2, 3]
    kinds = [ins.token_class(t) for t in ["a", "Q", " ", "\n", "7", "!", "the"]]
    assert kinds == ["letter", "capital", "space", "space", "digit", "punctuation", "word"]


def test_the_bits_are_split_by_kind_and_place_and_add_up_to_the_mean(runs):
    run = runs[("lstm", "builtin")]
    text = "The Time Traveller, 42 years old, said: 'extraordinary!'\n" * 2
    reading = ins.read(run, text)
    scores = ins.score(run.model, reading.ids)
    parts = ins.where_bits_go(reading, scores)
    for groups in (parts.by_class, parts.by_place):
        assert all(g.count > 0 for g in groups.values())
    # Every scored position is in exactly one kind, so the kinds' weighted means give the text's mean.
    total = sum(g.count * g.bits for g in parts.by_class.values())
    assert sum(g.count for g in parts.by_class.values()) == len(scores.bits)
    assert total / len(scores.bits) == pytest.approx(scores.bits_per_token, rel=1e-5)
    # The places cover the letters and capitals; "extraordinary" reaches the 6+ group.
    letters = parts.by_class["letter"].count + parts.by_class["capital"].count
    assert sum(g.count for g in parts.by_place.values()) == letters
    assert list(parts.by_place) == ["1", "2", "3", "4", "5", "6+"]
    first = [b for b, p in zip(scores.bits.tolist(), ins.word_positions(reading.tokens)[1:]) if p == 1]
    assert parts.by_place["1"].bits == pytest.approx(sum(first) / len(first))
    # The costliest positions are the dearest, in order.
    dear = [float(scores.bits[i - 1]) for i in parts.costliest]
    assert dear == sorted(dear, reverse=True) and dear[0] == float(scores.bits.max())


def test_the_compressors_baseline_is_their_output_in_bits_per_token():
    import lzma

    text = "the time machine " * 50
    bits = ins.compressor_bits(text, len(text))
    assert set(bits) == {"zlib", "bz2", "lzma"}
    assert bits["lzma"] == 8 * len(lzma.compress(text.encode(), preset=9 | lzma.PRESET_EXTREME)) / len(text)
    assert all(0 < b < 8 for b in bits.values())  # a repetitive text compresses


def test_next_tokens_are_the_softmax_after_the_whole_text(runs):
    run = runs[("lstm", "scratch")]
    ids = ins.read(run, "The Time").ids
    tokens, probs = ins.next_tokens(run.model, ids, top=4)
    with torch.inference_mode():
        logits, _ = run.model(ids[None])
    expected = torch.topk(torch.softmax(logits[0, -1], -1), 4)
    assert torch.equal(tokens, expected.indices)
    torch.testing.assert_close(probs, expected.values)


@pytest.mark.parametrize("settings", [dict(seed=3), dict(seed=1, temperature=0.7, top_k=5, top_p=0.9),
                                      dict(greedy=True), dict(seed=2, num_samples=3)],
                         ids=["sampled", "filtered", "greedy", "three-samples"])
@pytest.mark.parametrize("kind", [("lstm", "scratch"), ("gru", "builtin")], ids="-".join)
def test_scored_generation_gives_the_tokens_generate_gives(runs, kind, settings):
    run = runs[kind]
    config = GenerateConfig(num_preds=60, **settings)
    steps = list(stream_scored(run.model, run.vocab, "The ", config))
    texts = ["The " + "".join(step.tokens[i] for step in steps) for i in range(config.num_samples)]
    assert texts == generate(run.model, run.vocab, "The ", config)


def test_each_scored_step_has_the_models_probability_of_its_token(runs):
    run = runs[("lstm", "builtin")]
    steps = list(stream_scored(run.model, run.vocab, "The ", GenerateConfig(num_preds=30, seed=0), top=3))
    text = "The " + "".join(s.tokens[0] for s in steps)
    ids = torch.tensor(run.vocab[list(text)])
    scores = ins.score(run.model, ids, top=3)
    tail = slice(len("The ") - 1, None)  # the generated tokens' rows
    assert [s.probs[0] for s in steps] == pytest.approx(scores.probs[tail].tolist(), rel=1e-4)
    assert [run.vocab[s.top_tokens[0]] for s in steps] == scores.top_ids[tail].tolist()


def test_scored_generation_ends_each_sample_at_its_stop_text(runs):
    run = runs[("rnn", "builtin")]
    config = GenerateConfig(num_preds=200, seed=0, stop="e", num_samples=2)
    steps = list(stream_scored(run.model, run.vocab, "The ", config))
    for i, text in enumerate(generate(run.model, run.vocab, "The ", config)):
        assert "The " + "".join(s.tokens[i] for s in steps) == text and text.endswith("e")
        assert all(math.isnan(s.probs[i]) for s in steps if not s.tokens[i])
    assert len(steps) < 200  # the loop ends once both have stopped


def test_beam_search_has_no_steps_to_score(runs):
    run = runs[("rnn", "builtin")]
    with pytest.raises(ValueError, match="there is no step to score"):
        stream_scored(run.model, run.vocab, "The ", GenerateConfig(beam=3))


def test_the_layers_overlapped_give_what_they_give_one_after_the_other(runs):
    run = runs[("lstm", "scratch")]
    ids = ins.read(run, TEXT * 2).ids  # several chunks of the pipeline
    X = run.model._encode(ids[None])
    threads = torch.get_num_threads()
    with torch.inference_mode():
        torch.set_num_threads(2)
        overlapped = hidden.layer_outputs(run.model, X)
        assert torch.get_num_threads() == 2  # each layer had one thread; the count is given back
        torch.set_num_threads(1)
        in_turn = hidden.layer_outputs(run.model, X)
        torch.set_num_threads(threads)
        outputs, _ = run.model.core(X)
    assert all(torch.equal(a, b) for a, b in zip(overlapped, in_turn))
    torch.testing.assert_close(overlapped[-1], outputs)


def test_a_failing_layer_of_the_pipeline_raises_in_the_caller(runs, monkeypatch):
    run = runs[("lstm", "builtin")]
    real = hidden._runner

    def broken(model, layer, direction):
        if layer == 1:
            def fail(X, state):
                raise RuntimeError("layer 1 failed")
            return fail
        return real(model, layer, direction)

    monkeypatch.setattr(hidden, "_runner", broken)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError, match="layer 1 failed"), torch.inference_mode():
            hidden.layer_outputs(run.model, run.model._encode(ins.read(run, TEXT * 2).ids[None]))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
