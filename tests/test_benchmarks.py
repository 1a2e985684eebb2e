"""The speed suite's pieces work on a tiny setup (speed itself is never asserted)."""

from __future__ import annotations

import json

import pytest
import torch
from benchmarks import book, speed

TINY = speed.Setup("tiny", "gru", 8, vocab_size=28, batch_size=2, num_steps=3)


def test_every_variant_trains_and_is_timed():
    data = speed.random_batch(TINY)
    steps = {name: speed.VARIANTS[name](TINY, data) for name in speed.variants(TINY)}
    timings = speed.measure(steps, TINY.tokens, repeats=2, iterations=1, warmup=1)
    assert set(timings) == set(speed.variants(TINY))
    assert all(len(t.tokens_per_sec) == 2 and t.median > 0 for t in timings.values())


def test_the_book_variants_are_skipped_where_the_book_cannot_run():
    deep = speed.Setup("deep", "lstm", 8, num_layers=2, embedding=4)
    assert not any(name.startswith("book's") for name in speed.variants(deep))


def test_flops_count_the_three_products_of_each_dense_layer():
    # RNN, H=4, V=5, 6 tokens: recurrent 2*6*4*4 = 192, output 2*6*4*5 = 240; x3 = 1296
    assert speed.Setup("s", "rnn", 4, vocab_size=5, batch_size=2, num_steps=3).flops() == 1296


def test_the_book_baseline_learns_a_repeated_batch():
    torch.manual_seed(0)
    net = book.RNNModelScratch("lstm", 28, 16)
    X, Y = speed.random_batch(TINY)
    losses = [book.train_step(net, X, Y, None)[0] for _ in range(30)]
    assert losses[-1] < losses[0]


def test_the_reproduction_table_takes_the_latest_current_run_of_each_recipe_and_seed(tmp_path):
    from benchmarks.reproduce import latest_full_runs

    def row(seed, ppl, **extra):
        return json.dumps({"recipe": "rnn-gluon", "seed": seed, "epochs": 500, "train_ppl": ppl, **extra})

    results = tmp_path / "results.jsonl"
    results.write_text("\n".join([
        row(0, 1.5), row(0, 1.2),  # a later run of the same seed replaces the earlier
        row(1, 9.0, overrides={"random_offset": True}),  # made with settings the recipe lost
        json.dumps({"recipe": "rnn-gluon", "seed": 2, "epochs": 50, "train_ppl": 3.0}),  # short run
    ]) + "\n")
    assert [(r["seed"], r["train_ppl"]) for r in latest_full_runs(results)] == [(0, 1.2)]


def test_the_quality_report_reads_the_loss_known_at_each_wall_time(tmp_path):
    from benchmarks import quality

    records = [{"epoch": 1, "elapsed": 40.0, "val_loss": 2.0}, {"epoch": 2, "elapsed": 80.0},
               {"epoch": 3, "elapsed": 120.0, "val_loss": 1.6}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    points = quality.curve(tmp_path)
    assert points == [(40.0, 2.0), (120.0, 1.6)]  # epoch 2 was not validated
    assert quality.loss_at(points, 30) is None and quality.loss_at(points, 75) == 2.0
    assert quality.loss_at(points, 600) == 1.6
    assert "| 120 | 1.6000 |" in quality.report(tmp_path) and "Best validation loss: 1.6000" in \
        quality.report(tmp_path)


def test_the_speed_doc_keeps_one_section_per_machine_kind_and_the_notes():
    from benchmarks.__main__ import NOTES, document

    doc = document("", "cpu: Zen 3 (avx2)", "## cpu: Zen 3 (avx2)\n\nfirst")
    doc = document(doc + "my analysis\n", "cpu: Xeon (amx_bf16)", "## cpu: Xeon (amx_bf16)\n\nxeon")
    doc = document(doc, "cpu: Zen 3 (avx2)", "## cpu: Zen 3 (avx2)\n\nagain")  # Zen 3 runs again
    assert "again" in doc and "first" not in doc and "xeon" in doc
    assert doc.index("Zen 3") < doc.index("Xeon") < doc.index(NOTES) < doc.index("my analysis")
    assert doc.count("## cpu: Zen 3") == 1


def test_the_load_benchmark_reports_each_run_as_a_ratio_to_the_run_alone():
    from benchmarks.load import table

    rows = table([{"alone": 100.0, "busy loop": 50.0}, {"alone": 200.0, "busy loop": 80.0}])
    assert rows[2] == "| alone | 150 | 1.00x (1.00-1.00) |"
    assert rows[3] == "| busy loop | 65 | 0.45x (0.40-0.50) |"


def test_the_start_grid_compares_the_last_run_of_each_start_and_says_the_change():
    from benchmarks.auto_start import table

    rows = [{"text": "shakespeare-1m", "minutes": 2.0, "start": "scratch", "bits": 2.6},
            {"text": "shakespeare-1m", "minutes": 2.0, "start": "scratch", "bits": 2.5},  # measured again
            {"text": "shakespeare-1m", "minutes": 2.0, "start": "english", "bits": 2.25},
            {"text": "shakespeare-1m", "minutes": 0, "start": "english", "bits": 2.58}]
    line = table(rows).splitlines()[2]
    assert line == "| shakespeare-1m | 2 | 2.500 | 2.250 | -10.0 % | 2.580 | — |"


def test_bf16_variants_are_measured_only_where_bf16_runs(monkeypatch):
    from charlm.hardware import machine

    real = machine.probe()
    monkeypatch.setattr(machine, "probe", lambda: machine.replace(real, onednn_bf16=False))
    assert not any(name.endswith("bf16") for name in speed.variants(TINY))
    monkeypatch.setattr(machine, "probe", lambda: machine.replace(real, onednn_bf16=True,
                                                                   cpu_features=frozenset({"amx_bf16"})))
    assert "charlm builtin bf16" in speed.variants(TINY)


def test_the_compression_peers_are_run_checked_and_a_missing_one_is_said_to_be_missing(tmp_path):
    from benchmarks import compression

    data = b"the time machine, the time traveller " * 40
    copier = compression.Peer("a copy", "cp", "coreutils", "a.copy", ("in", "a.copy"), ("a.copy", "out/in"))
    assert compression.run_peer(copier, data)[0] == len(data)  # the archive is measured as written
    broken = compression.Peer("a broken one", "cp", "coreutils", "a.copy", ("in", "a.copy"),
                              ("/dev/null", "out/in"))
    with pytest.raises(AssertionError, match="did not restore"):  # every round trip is compared
        compression.run_peer(broken, data)
    absent = compression.Peer("absent", "no-such-compressor", "absent-pkg", "a", ("in",), ("a",))
    assert compression.run_peer(absent, data) is None
    (tmp_path / "t.txt").write_bytes(data)
    lines = compression.measure([tmp_path / "t.txt"], [], peers=(copier, absent))
    assert "| a copy | 8.000 |" in lines[2]
    assert "absent | not installed (`apt-get install absent-pkg`)" in lines[3]
