"""charlm export: a run as a page that writes with it in a browser, offline, and as an ONNX graph;
both compute what the run computes in charlm."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tests.explorer_runs import make_run

import charlm
from charlm import RNNLM, GenerateConfig, ModelConfig, Vocab
from charlm.checkpoint import Run
from charlm.cli import main
from charlm.export import export


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return {"lstm": make_run(root / "lstm", epochs=2, embedding=16),
            # the book's GRU: the reset gate before the hidden product
            "gru": make_run(root / "gru", cell="gru", impl="scratch", num_layers=1, epochs=2),
            "rnn": make_run(root / "rnn", cell="rnn", impl="scratch", activation="relu", epochs=2)}


def greedy_on_page(browser, page_file: Path, prefix: str, count: int) -> tuple[str, float]:
    """The page's greedy text and its speed (characters/s), opened from disk with no network."""
    context = browser.new_context(offline=True)
    errors, outside = [], []
    try:
        page = context.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: None if r.url == page_file.as_uri() else outside.append(r.url))
        page.goto(page_file.as_uri())
        page.wait_for_selector("body[data-ready='true']")
        page.fill("#write-prefix", prefix)
        page.fill("#write-num-preds", str(count))
        page.set_checked("#write-greedy", True)
        page.click("#write-go")
        page.wait_for_selector("#write-out[data-done='true']")
        text = page.eval_on_selector("#write-out", "e => e.textContent")
        rate = float(page.get_attribute("#write-speed", "data-rate"))
        assert errors == [] and outside == []  # its policy allowed its one script; it fetched nothing
        return text, rate
    finally:
        context.close()


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("name", ["lstm", "gru", "rnn"])
def test_the_pages_greedy_text_is_charlm_generate_greedy(runs, browser, tmp_path, name):
    page_file = export(runs[name], tmp_path / "page.html")
    text, rate = greedy_on_page(browser, page_file, "The ", 300)
    run = charlm.load(runs[name])
    greedy = GenerateConfig(num_preds=300, greedy=True)
    assert text == charlm.generate(run.model, run.vocab, "The ", greedy)[0]
    assert rate > 0


@pytest.mark.browser
@pytest.mark.slow
def test_the_page_begins_after_the_runs_preamble_as_charlm_does(runs, browser, tmp_path):
    run = charlm.load(runs["lstm"])
    run.model.preamble = torch.tensor(run.vocab[list("e t")])
    text, _ = greedy_on_page(browser, export(run, tmp_path / "page.html"), "The ", 200)
    greedy = GenerateConfig(num_preds=200, greedy=True)
    assert text == charlm.generate(run.model, run.vocab, "The ", greedy)[0]
    run.model.preamble = None
    assert text != charlm.generate(run.model, run.vocab, "The ", greedy)[0]  # it did change something


def _lstm_2x256(vocab_size: int = 90) -> Run:
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(vocab_size=vocab_size, num_hiddens=256, cell="lstm", impl="builtin",
                              num_layers=2, embedding=64)).eval()
    vocab = Vocab([chr(32 + i) for i in range(vocab_size - 1)])
    return Run(model, vocab, None, Path("lstm-2x256"))


def test_a_2x256_lstm_page_is_at_most_6_mb(tmp_path):
    page_file = export(_lstm_2x256(), tmp_path / "page.html")
    assert page_file.stat().st_size <= 6_000_000


@pytest.mark.parametrize("cell, impl, extra", [("lstm", "builtin", {"embedding": 8, "num_layers": 2}),
                                               ("gru", "scratch", {"gru_reset_after": True}),
                                               ("rnn", "scratch", {"activation": "relu", "num_layers": 2})])
def test_the_onnx_graph_gives_torchs_logits_and_state(tmp_path, cell, impl, extra):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = RNNLM(ModelConfig(vocab_size=20, num_hiddens=16, cell=cell, impl=impl, **extra)).eval()
    path = export(Run(model, Vocab(list("abcdefghijklmnopqrs")), None, Path("r")), tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path))
    ids = torch.randint(20, (3, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, state = model(ids)
    zeros = torch.zeros(model.config.num_layers, 3, 16).numpy()
    feed = {"ids": ids.numpy(), "h0": zeros, **({"c0": zeros} if cell == "lstm" else {})}
    logits, *ends = session.run(None, feed)
    assert abs(logits - want.numpy()).max() < 1e-4
    wanted_ends = state if cell == "lstm" else (state,)
    assert all(abs(e - w.numpy()).max() < 1e-4 for e, w in zip(ends, wanted_ends))


def test_what_cannot_be_exported_is_a_clear_error(tmp_path, runs, capsys):
    bidirectional = Run(RNNLM(ModelConfig(vocab_size=5, num_hiddens=4, cell="lstm", impl="builtin",
                                          bidirectional=True)), Vocab(list("abcd")), None, Path("bi"))
    with pytest.raises(ValueError, match="a bidirectional run reads the text after each token"):
        export(bidirectional, tmp_path / "page.html")
    with pytest.raises(ValueError, match="the book's GRU"):
        export(runs["gru"], tmp_path / "m.onnx")  # reset before the product: no ONNX operator
    assert main(["export", str(runs["lstm"]), str(tmp_path / "m.txt")]) == 2
    assert "charlm exports to .html" in capsys.readouterr().err


def test_charlm_export_writes_the_file_and_will_not_overwrite_one(tmp_path, runs, capsys):
    out = tmp_path / "page.html"
    assert main(["export", str(runs["rnn"]), str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out and "<script>" in out.read_text(encoding="utf-8")
    assert main(["export", str(runs["rnn"]), str(out)]) == 2
    assert "already exists (use --force to overwrite)" in capsys.readouterr().err
    assert main(["export", str(runs["rnn"]), str(out), "--force"]) == 0


def test_without_the_onnx_package_onnx_export_says_what_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # an import of it raises ImportError
    with pytest.raises(ValueError, match=r"writing ONNX needs the onnx package: pip install onnx"):
        export(_lstm_2x256(), tmp_path / "m.onnx")
