"""The book's own code paths (d2l ch. 8-9, PyTorch edition) run on `from charlm import d2l`.

The scratch models are the user's code as the book writes it (§8.5, §9.1, §9.2), taken from
benchmarks/book.py, the repository's one copy of it (the speed baseline); the tests drive them
through the compatibility layer exactly as the chapter's cells do.
"""

import math
import random
import subprocess
import sys

import pytest
import torch
from benchmarks.book import SCRATCH, get_params, init_rnn_state, rnn  # the book's code, one copy
from torch import nn

import charlm
from charlm import d2l

DEVICE = torch.device("cpu")
NUM_HIDDENS = 32  # small: the tests check behaviour, not quality


@pytest.fixture(autouse=True)
def _restore_global_rngs():
    """The book seeds the global generators; leave them as we found them for other test files."""
    py_state, torch_state = random.getstate(), torch.get_rng_state()
    yield
    random.setstate(py_state)
    torch.set_rng_state(torch_state)


@pytest.fixture(autouse=True)
def _animator_png(tmp_path, monkeypatch):
    """train_ch8 draws an Animator: keep its file out of the working directory."""
    monkeypatch.setenv(d2l.ANIMATOR_ENV, str(tmp_path / "animator.png"))
    return tmp_path / "animator.png"


@pytest.fixture(scope="module")
def time_machine():
    """The chapter's data: batch 32 x 35 steps over the first 10,000 characters."""
    return d2l.load_data_time_machine(32, 35)


def _book_updater(net, lr):
    """What train_ch8 builds: torch's SGD for a module, the book's sgd for scratch params."""
    if isinstance(net, nn.Module):
        return torch.optim.SGD(net.parameters(), lr)
    return lambda batch_size: d2l.sgd(net.params, lr, batch_size)


def _train_epochs(net, train_iter, num_epochs, lr=1.0, use_random_iter=False):
    loss, updater = nn.CrossEntropyLoss(), _book_updater(net, lr)
    return [d2l.train_epoch_ch8(net, train_iter, loss, updater, DEVICE, use_random_iter)[0]
            for _ in range(num_epochs)]


# ---- §8.2: text, tokens, vocabulary ------------------------------------------------------------

def test_read_time_machine_gives_the_books_cleaned_lines():
    lines = d2l.read_time_machine()
    assert lines[0] == "the time machine by h g wells"
    assert lines[10] == "twinkled and his usually pale face was flushed and animated the"
    assert all(line == line.strip() and set(line) <= set("abcdefghijklmnopqrstuvwxyz ") for line in lines)


def test_tokenize_words_by_default_and_chars_on_request():
    lines = ["the time machine", "", "by h g wells"]
    assert d2l.tokenize(lines) == [["the", "time", "machine"], [], ["by", "h", "g", "wells"]]
    assert d2l.tokenize(lines[:1], "char")[0][:4] == ["t", "h", "e", " "]
    with pytest.raises(ValueError, match="token"):
        d2l.tokenize(lines, "byte")


def test_vocab_is_charlms_with_the_books_word_ranking():
    assert d2l.Vocab is charlm.Vocab
    vocab = d2l.Vocab(d2l.tokenize(d2l.read_time_machine()))
    # The book's §8.2.3 output: <unk> first, then by frequency.
    assert list(vocab.token_to_idx.items())[:10] == [
        ("<unk>", 0), ("the", 1), ("i", 2), ("and", 3), ("of", 4), ("a", 5), ("to", 6), ("was", 7),
        ("in", 8), ("that", 9)]
    assert vocab[["the", "time", "zzz"]] == [1, vocab["time"], 0]


def test_load_corpus_time_machine_is_the_whole_book_by_character():
    corpus, vocab = d2l.load_corpus_time_machine()
    assert isinstance(corpus, list) and isinstance(corpus[0], int)
    assert (len(corpus), len(vocab)) == (170580, 28)  # the book's numbers (§8.2.4)
    assert "".join(vocab.to_tokens(corpus[:16])) == "the time machine"


def test_load_corpus_time_machine_cuts_after_building_the_vocabulary():
    full, full_vocab = d2l.load_corpus_time_machine()
    corpus, vocab = d2l.load_corpus_time_machine(10000)
    assert len(corpus) == 10000 and corpus == full[:10000]
    assert vocab == full_vocab and vocab.token_freqs == full_vocab.token_freqs  # counted on all 170,580
    assert sum(freq for _, freq in vocab.token_freqs) == 170580


# ---- §8.3.4: mini-batches ----------------------------------------------------------------------

ITERS = [d2l.seq_data_iter_random, d2l.seq_data_iter_sequential]


@pytest.mark.parametrize("data_iter", ITERS)
def test_y_is_x_shifted_by_one(data_iter):
    my_seq = list(range(35))  # token id == position: every X shows where it came from
    random.seed(1)
    for X, Y in data_iter(my_seq, batch_size=2, num_steps=5):
        assert X.shape == Y.shape == (2, 5) and X.dtype == Y.dtype == torch.int64
        assert torch.equal(Y, X + 1)
        assert torch.equal(X[:, 1:] - X[:, :-1], torch.ones(2, 4, dtype=torch.int64))


@pytest.mark.parametrize("data_iter", ITERS)
def test_iterators_replay_under_random_seed(data_iter):
    corpus = list(range(1000))

    def epoch():
        return [(X.tolist(), Y.tolist()) for X, Y in data_iter(corpus, 4, 7)]

    random.seed(0)
    epochs = [epoch() for _ in range(5)]
    random.seed(0)
    assert [epoch() for _ in range(5)] == epochs
    assert any(e != epochs[0] for e in epochs)  # each epoch draws a fresh offset (and order)


def test_random_sampling_counts_follow_the_books_formula():
    # Offset in [0, 4]; num_subseqs = (35 - offset - 1) // 5 = 6 for every offset (34..30 tokens);
    # num_batches = 6 // 2 = 3: each epoch yields 3 batches covering 6 disjoint subsequences.
    for seed in range(20):
        random.seed(seed)
        batches = list(d2l.seq_data_iter_random(list(range(35)), batch_size=2, num_steps=5))
        assert len(batches) == 3
        starts = sorted(int(s) for X, _ in batches for s in X[:, 0])
        offset = starts[0]
        assert 0 <= offset <= 4 and starts == [offset + 5 * k for k in range(6)]


def test_sequential_counts_follow_the_books_formula_and_rows_continue():
    # Offset in [0, 5]; num_tokens = ((35 - offset - 1) // 2) * 2, rows of num_tokens / 2 tokens,
    # num_batches = (num_tokens / 2) // 5. Offsets 0..5 give rows of 17, 16, 16, 15, 15, 14 tokens:
    # 3 batches, except 2 for offset 5 (row 1 starts num_tokens / 2 tokens after row 0).
    seen = set()
    for seed in range(40):
        random.seed(seed)
        batches = list(d2l.seq_data_iter_sequential(list(range(35)), batch_size=2, num_steps=5))
        offset = int(batches[0][0][0, 0])
        row_len = (35 - offset - 1) // 2
        assert len(batches) == (3 if offset <= 4 else 2) == row_len // 5
        assert torch.equal(batches[0][0][:, 0], torch.tensor([offset, offset + row_len]))
        for (X0, _), (X1, _) in zip(batches, batches[1:]):
            assert torch.equal(X1[:, 0], X0[:, -1] + 1)
        seen.add(offset)
    assert seen == set(range(6))


@pytest.mark.parametrize("data_iter", ITERS)
def test_a_corpus_too_short_yields_nothing_as_in_the_book(data_iter):
    assert list(data_iter(list(range(8)), 2, 5)) == []


@pytest.mark.parametrize("use_random_iter", [False, True])
def test_load_data_time_machine_gives_the_chapters_batches(use_random_iter):
    train_iter, vocab = d2l.load_data_time_machine(32, 35, use_random_iter=use_random_iter)
    assert len(vocab) == 28 and len(train_iter.corpus) == 10000
    random.seed(0)
    batches = list(train_iter)
    # (10,000 - offset - 1) // 35 // 32 = 8 for every offset up to 35.
    assert len(batches) == 8
    assert all(X.shape == Y.shape == (32, 35) for X, Y in batches)
    random.seed(0)
    assert all(torch.equal(X, X2) for (X, _), (X2, _) in zip(batches, train_iter))


# ---- §8.5, §9.1, §9.2: the user's scratch models -------------------------------------------------

def test_scratch_rnn_shapes_as_in_the_book():
    torch.manual_seed(0)
    X = torch.arange(10).reshape((2, 5))
    net = d2l.RNNModelScratch(28, 512, DEVICE, get_params, init_rnn_state, rnn)
    state = net.begin_state(X.shape[0], DEVICE)
    Y, new_state = net(X.to(DEVICE), state)
    # §8.5.3: (torch.Size([10, 28]), 1, torch.Size([2, 512]))
    assert (Y.shape, len(new_state), new_state[0].shape) == ((10, 28), 1, (2, 512))
    assert len(net.params) == 5 and all(p.requires_grad for p in net.params)


def test_scratch_rnn_learns_and_predicts(time_machine):
    train_iter, vocab = time_machine
    torch.manual_seed(0)
    random.seed(0)
    net = d2l.RNNModelScratch(len(vocab), NUM_HIDDENS, DEVICE, get_params, init_rnn_state, rnn)
    ppls = _train_epochs(net, train_iter, 6)
    assert all(math.isfinite(p) for p in ppls)
    assert ppls[0] > 20 and ppls[-1] < ppls[0] - 3  # from near uniform (28) towards letter statistics
    text = d2l.predict_ch8("time traveller", 10, net, vocab, DEVICE)
    assert len(text) == 24 and text.startswith("time traveller")


def _book_predict(prefix, num_preds, net, vocab, device):
    """§8.5.4 verbatim: warm up one token at a time, then greedy."""
    state = net.begin_state(batch_size=1, device=device)
    outputs = [vocab[prefix[0]]]

    def get_input():
        return torch.tensor([outputs[-1]], device=device).reshape((1, 1))

    for y in prefix[1:]:
        _, state = net(get_input(), state)
        outputs.append(vocab[y])
    for _ in range(num_preds):
        y, state = net(get_input(), state)
        outputs.append(int(y.argmax(dim=1).reshape(1)))
    return "".join([vocab.idx_to_token[i] for i in outputs])


def test_predict_ch8_matches_the_books_token_by_token_loop(time_machine):
    train_iter, vocab = time_machine
    torch.manual_seed(1)
    net = d2l.RNNModelScratch(len(vocab), NUM_HIDDENS, DEVICE, get_params, init_rnn_state, rnn)
    _train_epochs(net, train_iter, 3)
    for prefix in ["time traveller", "t", "the "]:
        ours = d2l.predict_ch8(prefix, 30, net, vocab, DEVICE)
        assert ours == _book_predict(prefix, 30, net, vocab, DEVICE)
    assert d2l.predict_ch8("abc", 0, net, vocab, DEVICE) == "abc"
    with pytest.raises(ValueError, match="prefix"):
        d2l.predict_ch8("", 5, net, vocab, DEVICE)


def test_train_ch8_prints_as_the_book(time_machine, capsys, _animator_png):
    train_iter, vocab = time_machine
    torch.manual_seed(0)
    net = d2l.RNNModelScratch(len(vocab), NUM_HIDDENS, DEVICE, get_params, init_rnn_state, rnn)
    assert d2l.train_ch8(net, train_iter, vocab, 1, 10, DEVICE) is None
    lines = capsys.readouterr().out.splitlines()
    # Epoch 10: one prediction (and the animator's point); then the summary and two predictions.
    assert len(lines) == 4
    assert lines[0].startswith("time traveller") and len(lines[0]) == 14 + 50
    ppl, speed = lines[1].removeprefix("perplexity ").split(" tokens/sec on cpu")[0].split(", ")
    assert lines[1] == f"perplexity {float(ppl):.1f}, {float(speed):.1f} tokens/sec on cpu"
    assert 1 < float(ppl) < 28 and float(speed) > 0
    assert lines[2].startswith("time traveller") and lines[3].startswith("traveller")
    assert _animator_png.read_bytes()[:4] == b"\x89PNG"


def test_train_ch8_takes_a_torch_module(time_machine, capsys):
    train_iter, vocab = time_machine
    torch.manual_seed(0)
    net = d2l.RNNModel(nn.LSTM(len(vocab), NUM_HIDDENS), len(vocab))
    d2l.train_ch8(net, train_iter, vocab, 1, 2, DEVICE, use_random_iter=True)
    lines = capsys.readouterr().out.splitlines()  # under 10 epochs: only the summary and predictions
    assert len(lines) == 3 and lines[0].startswith("perplexity ") and lines[0].endswith(" tokens/sec on cpu")
    assert lines[1].startswith("time traveller") and len(lines[2]) == len("traveller") + 50


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_scratch_gated_cells_train_one_epoch(cell, time_machine):
    train_iter, vocab = time_machine
    get, init, forward = SCRATCH[cell]
    torch.manual_seed(0)
    net = d2l.RNNModelScratch(len(vocab), NUM_HIDDENS, DEVICE, get, init, forward)
    state = net.begin_state(4, DEVICE)
    Y, new_state = net(torch.zeros(4, 7, dtype=torch.int64), state)
    assert Y.shape == (7 * 4, len(vocab))
    assert len(new_state) == (2 if cell == "lstm" else 1) and new_state[0].shape == (4, NUM_HIDDENS)
    (ppl,) = _train_epochs(net, train_iter, 1, use_random_iter=True)
    assert 1 < ppl < 40
    assert len(d2l.predict_ch8("time traveller", 10, net, vocab, DEVICE)) == 24


# ---- §8.6, §9: concise models on torch.nn --------------------------------------------------------

def test_rnn_model_equals_the_scratch_rnn_with_the_same_weights():
    """The two model kinds lay their outputs out alike: (num_steps * batch_size, vocab), time-major."""
    torch.manual_seed(0)
    vocab_size, num_hiddens = 28, 16
    scratch = d2l.RNNModelScratch(vocab_size, num_hiddens, DEVICE, get_params, init_rnn_state, rnn)
    for p in scratch.params:  # not the book's tiny init, so the check has something to see
        p.data.normal_(0, 0.3)
    W_xh, W_hh, b_h, W_hq, b_q = scratch.params
    concise = d2l.RNNModel(nn.RNN(vocab_size, num_hiddens), vocab_size)
    with torch.no_grad():
        concise.rnn.weight_ih_l0.copy_(W_xh.T)
        concise.rnn.weight_hh_l0.copy_(W_hh.T)
        concise.rnn.bias_ih_l0.copy_(b_h)
        concise.rnn.bias_hh_l0.zero_()
        concise.linear.weight.copy_(W_hq.T)
        concise.linear.bias.copy_(b_q)
    X = torch.randint(0, vocab_size, (3, 6))
    Y1, (H1,) = scratch(X, scratch.begin_state(3, DEVICE))
    Y2, H2 = concise(X, concise.begin_state(DEVICE, batch_size=3))
    torch.testing.assert_close(Y2, Y1)
    torch.testing.assert_close(H2[0], H1)


@pytest.mark.parametrize("layer", [nn.GRU, nn.LSTM])
def test_rnn_model_trains_and_predicts(layer, time_machine):
    train_iter, vocab = time_machine
    torch.manual_seed(0)
    random.seed(0)
    net = d2l.RNNModel(layer(len(vocab), NUM_HIDDENS), vocab_size=len(vocab)).to(DEVICE)
    state = net.begin_state(DEVICE, batch_size=4)
    if layer is nn.LSTM:
        assert isinstance(state, tuple) and [s.shape for s in state] == [(1, 4, NUM_HIDDENS)] * 2
    else:
        assert isinstance(state, torch.Tensor) and state.shape == (1, 4, NUM_HIDDENS)
    assert net.begin_state(DEVICE)[0].shape[-2:] == (1, NUM_HIDDENS)  # the book's default batch of 1
    ppls = _train_epochs(net, train_iter, 4)
    assert ppls[-1] < ppls[0] - 3
    text = d2l.predict_ch8("time traveller", 10, net, vocab, DEVICE)
    assert len(text) == 24 and text.startswith("time traveller")


def test_bidirectional_lstm_feeds_both_directions_to_the_output_layer():
    torch.manual_seed(0)
    net = d2l.RNNModel(nn.LSTM(28, 16, num_layers=2, bidirectional=True), 28)
    assert net.num_directions == 2 and net.linear.in_features == 2 * 16
    state = net.begin_state(DEVICE, batch_size=3)
    assert [s.shape for s in state] == [(2 * 2, 3, 16)] * 2
    Y, (H, C) = net(torch.randint(0, 28, (3, 5)), state)
    assert Y.shape == (5 * 3, 28) and H.shape == C.shape == (4, 3, 16)


# ---- §8.5.5 and the utilities ----------------------------------------------------------------------

def _global_norm(params):
    return float(torch.sqrt(sum((p.grad ** 2).sum() for p in params)))


def test_grad_clipping_bounds_the_norm_of_both_model_kinds():
    torch.manual_seed(0)
    scratch = d2l.RNNModelScratch(28, 8, DEVICE, get_params, init_rnn_state, rnn)
    concise = d2l.RNNModel(nn.GRU(28, 8), 28)
    for net, params in [(scratch, scratch.params), (concise, list(concise.parameters()))]:
        for p in params:
            p.grad = torch.randn_like(p) * 10
        before = [p.grad.clone() for p in params]
        assert _global_norm(params) > 1
        d2l.grad_clipping(net, 1)
        assert _global_norm(params) == pytest.approx(1, rel=1e-5)
        scale = float(params[0].grad.flatten()[0] / before[0].flatten()[0])
        for p, g in zip(params, before):  # one common factor: the direction is kept
            torch.testing.assert_close(p.grad, g * scale)
        small = [p.grad.clone() for p in params]
        d2l.grad_clipping(net, 5)  # already under theta: untouched
        assert all(torch.equal(p.grad, g) for p, g in zip(params, small))


def test_sgd_divides_by_the_batch_size_and_zeroes_the_grads():
    param = torch.tensor([1.0, 2.0], requires_grad=True)
    param.grad = torch.tensor([4.0, -8.0])
    d2l.sgd([param], lr=0.5, batch_size=4)  # param -= 0.5 * grad / 4
    torch.testing.assert_close(param.detach(), torch.tensor([0.5, 3.0]))
    assert torch.equal(param.grad, torch.zeros(2))


def test_timer_and_accumulator():
    timer = d2l.Timer()
    for _ in range(3):
        timer.start()
        assert timer.stop() >= 0
    timer.times = [1.0, 2.0, 0.5]  # known answers from here on
    assert (timer.sum(), timer.avg(), timer.cumsum()) == (3.5, 3.5 / 3, [1.0, 3.0, 3.5])
    metric = d2l.Accumulator(2)
    metric.add(2.5, 3)
    metric.add(torch.tensor(1.5), 2)
    assert (metric[0], metric[1]) == (4.0, 5.0)
    metric.reset()
    assert metric.data == [0.0, 0.0]


def test_animator_writes_a_png_named_by_the_env_var(_animator_png):
    animator = d2l.Animator(xlabel="epoch", legend=["train", "test"], xlim=[1, 5], yscale="log")
    assert not _animator_png.exists()  # nothing drawn before the first point
    for epoch in range(1, 4):
        animator.add(epoch, [10.0 / epoch, None if epoch == 2 else 12.0 / epoch])
    assert _animator_png.read_bytes()[:4] == b"\x89PNG"
    assert animator.X == [[1, 2, 3], [1, 3]] and animator.Y[1] == [12.0, 4.0]
    assert [p.name for p in _animator_png.parent.iterdir()] == ["animator.png"]  # no temporary left


def test_animator_defaults_to_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(d2l.ANIMATOR_ENV)
    monkeypatch.chdir(tmp_path)
    d2l.Animator().add(1, 2.0)
    assert (tmp_path / "animator.png").read_bytes()[:4] == b"\x89PNG"


def test_devices_fall_back_to_the_cpu():
    assert d2l.try_gpu(10**6) == torch.device("cpu")
    assert d2l.try_gpu() in d2l.try_all_gpus()
    if not torch.cuda.is_available():
        assert d2l.try_all_gpus() == [torch.device("cpu")]


@pytest.mark.slow
def test_importing_d2l_does_not_import_matplotlib():
    code = "import sys; from charlm import d2l; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
