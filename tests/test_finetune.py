"""Fine-tuning (--init-from RUN): a new run starts from a trained run's weights and vocabulary, with a
fresh optimizer, keeps the run's model, and beats training from scratch on a small text."""

import json
import logging
import shutil

import pytest
import torch

from charlm import RNNLM, ModelConfig, TrainConfig, Vocab, load, resume, train
from charlm.cli import main
from charlm.data.corpora import CORPORA, embedded_file
from charlm.training.finetune import grow

TINY = dict(num_hiddens=48, cell="lstm", impl="builtin", embedding=16, batch_size=8, num_steps=16,
            optimizer="adam", lr=0.01, clean="raw", max_tokens=-1, sample_every=0, eval_every=1, device="cpu")


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """A larger text to pretrain on and a small one from the same book to fine-tune on."""
    import gzip

    book = gzip.decompress(embedded_file(CORPORA["timemachine"]).read_bytes()).decode("utf-8")
    folder = tmp_path_factory.mktemp("texts")
    (folder / "big.txt").write_text(book[5_000:45_000], encoding="utf-8")
    (folder / "small.txt").write_text(book[60_000:64_000], encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def pretrained(texts, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "big"
    train(TrainConfig.of(corpus=str(texts / "big.txt"), epochs=4, dropout_output=0.1, **TINY), out=run)
    return run


@pytest.mark.slow
def test_the_new_run_starts_from_the_runs_best_weights_and_keeps_its_vocabulary(texts, pretrained,
                                                                                 tmp_path):
    start = load(pretrained, which="best")
    # A learning rate too small to move a weight: what training ends with is what it started from.
    config = TrainConfig.of(corpus=str(texts / "small.txt"), init_from=str(pretrained), epochs=1, lr=1e-12,
                            optimizer="sgd", sample_every=0, device="cpu")
    result = train(config, out=tmp_path / "ft")
    for name, tensor in start.model.state_dict().items():
        torch.testing.assert_close(result.model.state_dict()[name], tensor, rtol=0, atol=1e-9)
    assert json.loads((tmp_path / "ft" / "vocab.json").read_text()) == \
        json.loads((pretrained / "vocab.json").read_text())
    saved = load(tmp_path / "ft").config
    # The model and the text settings not given are the run's; the regulariser too
    assert saved.model == start.model.config and (saved.clean, saved.max_tokens) == ("raw", -1)
    assert saved.init_from == str(pretrained) and saved.model.dropout_output == 0.1


@pytest.mark.slow
def test_fine_tuning_beats_training_from_scratch_on_a_small_text(texts, pretrained, tmp_path):
    small = TrainConfig.of(corpus=str(texts / "small.txt"), epochs=3, **TINY)
    scratch = train(small, out=tmp_path / "scratch").val.loss
    tuned = train(small.replace(init_from=str(pretrained)), out=tmp_path / "tuned").val.loss
    assert tuned < scratch - 0.1  # nats per character on the small text's held-out end


def test_the_models_shape_and_token_kind_cannot_change(texts, pretrained):
    base = TrainConfig.of(corpus=str(texts / "small.txt"), init_from=str(pretrained), epochs=1, device="cpu")
    with pytest.raises(ValueError, match=r"--num-hiddens 64: --init-from .* has 48; fine-tuning keeps the "
                                         r"run's model"):
        train(base.replace(num_hiddens=64))
    with pytest.raises(ValueError, match="--token word: --init-from .* reads char tokens"):
        train(base.replace(token="word"))


def test_characters_the_vocabulary_lacks_count_as_unk_and_are_said(texts, pretrained, tmp_path, caplog):
    odd = tmp_path / "odd.txt"
    text = "\u00e9\u00e8\u00ea" * 5 + (texts / "small.txt").read_text(encoding="utf-8")  # in the train part
    odd.write_text(text, encoding="utf-8")
    caplog.set_level(logging.WARNING, logger="charlm")
    train(TrainConfig.of(corpus=str(odd), init_from=str(pretrained), epochs=1, sample_every=0, device="cpu"))
    assert any("of the new text are not in the vocabulary" in r.getMessage() and "count as <unk>" in
               r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_a_fine_tuned_run_resumes_exactly_without_the_run_it_started_from(texts, pretrained, tmp_path):
    start = tmp_path / "start"
    shutil.copytree(pretrained, start)
    config = TrainConfig.of(corpus=str(texts / "small.txt"), init_from=str(start), epochs=4, **{
        k: v for k, v in TINY.items() if k not in ("num_hiddens", "cell", "impl", "embedding")})
    straight = train(config, out=tmp_path / "straight")
    train(config.replace(epochs=2), out=tmp_path / "halves")
    shutil.rmtree(start)  # the vocabulary and weights it needs are in its own folder now
    resumed = resume(tmp_path / "halves", epochs=4)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in straight.history]


def test_init_from_a_folder_that_is_no_run_is_a_one_line_error(texts, tmp_path, capsys):
    argv = ["train", "--corpus", str(texts / "small.txt"), "--init-from", str(tmp_path / "nowhere")]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"charlm: error: {tmp_path / 'nowhere'}: no such run folder\n"


# -- --extend-vocab: new tokens get rows of their own --------------------------------------------------

def test_an_extended_vocabulary_keeps_every_index_and_appends_the_new_tokens():
    old, text = Vocab(list("aab")), Vocab(list("bccd"))
    both = old.extended(text)
    assert both.idx_to_token == ["<unk>", "a", "b", "c", "d"] and both["a"] == old["a"]
    assert Vocab.from_dict(both.to_dict()) == both


@pytest.mark.parametrize("options", [
    dict(impl="scratch"), dict(impl="book", cell="gru"), dict(impl="builtin", cell="lstm"),
    dict(impl="builtin", embedding=6), dict(impl="scratch", embedding=8, tie_weights=True),
])
def test_a_grown_model_computes_what_it_did_for_the_old_tokens(options):
    model = RNNLM(ModelConfig(vocab_size=7, num_hiddens=8, **options)).eval()
    grown = grow(model, 10, seed=0).eval()
    X = torch.randint(0, 7, (3, 5))
    with torch.no_grad():
        torch.testing.assert_close(grown(X)[0][..., :7], model(X)[0])
    assert grown.config.vocab_size == 10 and grown.config.replace(vocab_size=7) == model.config


def test_extend_vocab_gives_the_new_texts_characters_rows_and_no_unk(texts, pretrained, tmp_path, caplog):
    odd = tmp_path / "odd.txt"
    text = "\u00e9\u00e8\u00ea" * 5 + (texts / "small.txt").read_text(encoding="utf-8")
    odd.write_text(text, encoding="utf-8")
    caplog.set_level(logging.INFO, logger="charlm")
    result = train(TrainConfig.of(corpus=str(odd), init_from=str(pretrained), extend_vocab=True, epochs=1,
                                  sample_every=0, device="cpu"), out=tmp_path / "run")
    before = load(pretrained).vocab
    after = result.vocab
    assert after.idx_to_token[:len(before)] == before.idx_to_token
    assert set(after.idx_to_token[len(before):]) == {"\u00e9", "\u00e8", "\u00ea"}
    assert result.model.config.vocab_size == len(after) == len(before) + 3
    said = [r.getMessage() for r in caplog.records]
    assert any("3 tokens of the new text get rows of their own" in m for m in said)
    assert not any("count as <unk>" in m for m in said)
    assert load(tmp_path / "run").vocab == after  # saved, so the run evaluates and resumes alike


def test_extend_vocab_needs_a_run_to_extend():
    with pytest.raises(ValueError, match="--extend-vocab extends the vocabulary of the run given with"):
        TrainConfig.of(extend_vocab=True)
