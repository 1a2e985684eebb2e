"""The book's own API for chapters 8-9, on charlm: ``from charlm import d2l``.

The code cells of *Dive into Deep Learning* (PyTorch edition, ch. 8 "Recurrent Neural Networks" and
ch. 9 "Modern Recurrent Neural Networks") run unchanged with ``from charlm import d2l`` in place of
``from d2l import torch as d2l``. Every name keeps the book's signature, shapes and return values;
underneath, charlm does the work (corpus, cleaning, vocabulary, batching, clipping)::

    train_iter, vocab = d2l.load_data_time_machine(32, 35)            # 10,000 chars, 28 tokens
    net = d2l.RNNModelScratch(len(vocab), 512, device, get_params, init_rnn_state, rnn)
    d2l.train_ch8(net, train_iter, vocab, 1, 500, device)             # prints like the book

Where it differs, and why:

- Mini-batches come from charlm's vectorised iterators (`charlm.data.batches`), not Python lists. The
  random offset is still drawn with ``random.randint`` and the shuffle is seeded from Python's
  ``random``, so ``random.seed(s)`` replays the batches, as it does in the book.
- ``predict_ch8`` warms up on the whole prefix in one call instead of one token per call (the same
  state, fewer calls) and runs without autograd.
- ``Animator`` cannot draw in a notebook here; it writes the curve to a PNG file instead
  (``$CHARLM_ANIMATOR_PNG``, default ``animator.png`` in the current folder).
- ``train_ch8`` prints, as the book's does: this module is the book's interface, not charlm's library
  code (which logs and leaves printing to the CLI).
"""

from __future__ import annotations

import itertools
import math
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from .checkpoint import atomic_write
from .data import text
from .data.batches import num_batches, random_epoch, sequential_epoch
from .data.corpora import read_source
from .data.dataset import load_corpus
from .data.vocab import Vocab
from .models import State, detach_state
from .training import optim

__all__ = [
    "Accumulator", "Animator", "RNNModel", "RNNModelScratch", "SeqDataLoader", "Timer", "Vocab",
    "grad_clipping", "load_corpus_time_machine", "load_data_time_machine", "predict_ch8",
    "read_time_machine", "seq_data_iter_random", "seq_data_iter_sequential", "sgd", "tokenize",
    "train_ch8", "train_epoch_ch8", "try_all_gpus", "try_gpu",
]

ANIMATOR_ENV = "CHARLM_ANIMATOR_PNG"
Batch = tuple[Tensor, Tensor]


# ---- text and corpus (d2l §8.2) ---------------------------------------------------------------

def read_time_machine() -> list[str]:
    """The lines of *The Time Machine*, letters only, lowercase (d2l §8.2.1).

    >>> read_time_machine()[0]
    'the time machine by h g wells'
    """
    return text.clean_lines(read_source("timemachine"), "d2l")


def tokenize(lines: list[str], token: str = "word") -> list[list[str]]:
    """Split lines into word or character tokens (d2l §8.2.2); the book's default is words.

    An unknown `token` raises ValueError (the book prints an error and returns None).
    """
    return text.tokenize(lines, token)


def load_corpus_time_machine(max_tokens: int = -1) -> tuple[list[int], Vocab]:
    """Character ids of the book and its vocabulary (d2l §8.2.4): ``(corpus list, vocab)``.

    The vocabulary comes from the whole book *before* the cut to `max_tokens` (any value <= 0 keeps
    everything), as in the book; ``charlm.load_corpus`` counts only the tokens kept. For this book
    both give the same 28 entries.
    """
    ids, vocab = load_corpus("timemachine")
    corpus = ids.tolist()
    return (corpus[:max_tokens] if max_tokens > 0 else corpus), vocab


# ---- mini-batches (d2l §8.3.4) ----------------------------------------------------------------

def seq_data_iter_random(corpus: Sequence[int] | Tensor, batch_size: int,
                         num_steps: int) -> Iterator[Batch]:
    """Random sampling: ``(X, Y)`` int64 ``(batch_size, num_steps)``, ``Y`` one token after ``X``.

    Offset ``random.randint(0, num_steps - 1)``, then ``(len - offset - 1) // num_steps``
    subsequences in shuffled order, ``num_subseqs // batch_size`` batches. For the book's example
    (``list(range(35))``, 2, 5): every offset leaves ``34 - offset >= 30`` tokens, so 6 subsequences
    and 3 batches.
    """
    offset = random.randint(0, num_steps - 1)
    ids = torch.as_tensor(corpus, dtype=torch.int64)
    if num_batches(len(ids), batch_size, num_steps, offset) < 1:
        return  # too short: the book's loop yields nothing either
    shuffle = torch.Generator().manual_seed(random.getrandbits(63))  # replayed by random.seed
    yield from random_epoch(ids, batch_size, num_steps, offset, shuffle)


def seq_data_iter_sequential(corpus: Sequence[int] | Tensor, batch_size: int,
                             num_steps: int) -> Iterator[Batch]:
    """Sequential partitioning: row ``i`` of each batch continues row ``i`` of the one before.

    Offset ``random.randint(0, num_steps)``; ``((len - offset - 1) // batch_size) * batch_size``
    tokens become `batch_size` rows, cut into `num_steps`-wide batches. For the book's example
    (``list(range(35))``, 2, 5): offsets 0-4 give rows of 17-15 tokens -> 3 batches, offset 5 rows
    of 14 -> 2 batches.
    """
    offset = random.randint(0, num_steps)
    ids = torch.as_tensor(corpus, dtype=torch.int64)
    if num_batches(len(ids), batch_size, num_steps, offset) < 1:
        return
    yield from sequential_epoch(ids, batch_size, num_steps, offset)


class SeqDataLoader:
    """*The Time Machine* in mini-batches; each ``iter`` is one epoch (d2l §8.3.4)."""

    def __init__(self, batch_size: int, num_steps: int, use_random_iter: bool, max_tokens: int) -> None:
        self.data_iter_fn = seq_data_iter_random if use_random_iter else seq_data_iter_sequential
        self.corpus, self.vocab = load_corpus_time_machine(max_tokens)
        self.batch_size, self.num_steps = batch_size, num_steps
        self._ids = torch.tensor(self.corpus, dtype=torch.int64)  # converted once, not every epoch

    def __iter__(self) -> Iterator[Batch]:
        return self.data_iter_fn(self._ids, self.batch_size, self.num_steps)


def load_data_time_machine(batch_size: int, num_steps: int, use_random_iter: bool = False,
                           max_tokens: int = 10000) -> tuple[SeqDataLoader, Vocab]:
    """The data iterator and the vocabulary of *The Time Machine* (d2l §8.3.4)."""
    data_iter = SeqDataLoader(batch_size, num_steps, use_random_iter, max_tokens)
    return data_iter, data_iter.vocab


# ---- models (d2l §8.5, §8.6) ------------------------------------------------------------------

class RNNModelScratch:
    """A recurrent model from the user's own functions (d2l §8.5.3).

    ``get_params(vocab_size, num_hiddens, device) -> list of tensors``,
    ``init_state(batch_size, num_hiddens, device) -> tuple of tensors`` and
    ``forward_fn(X (T, B, V), state, params) -> (Y (T * B, V), state)``.
    ``net(X (B, T) int, state)`` one-hot encodes ``X.T`` and calls `forward_fn`.
    """

    def __init__(self, vocab_size: int, num_hiddens: int, device: torch.device | str,
                 get_params: Callable[..., list[Tensor]], init_state: Callable[..., Any],
                 forward_fn: Callable[..., tuple[Tensor, Any]]) -> None:
        self.vocab_size, self.num_hiddens = vocab_size, num_hiddens
        self.params = get_params(vocab_size, num_hiddens, device)
        self.init_state, self.forward_fn = init_state, forward_fn

    def __call__(self, X: Tensor, state: Any) -> tuple[Tensor, Any]:
        X = nnf.one_hot(X.T, self.vocab_size).float()  # (B, T) -> (T, B, V): time on the outer axis
        return self.forward_fn(X, state, self.params)

    def begin_state(self, batch_size: int, device: torch.device | str) -> Any:
        return self.init_state(batch_size, self.num_hiddens, device)


class RNNModel(nn.Module):
    """A language model around a user's time-major ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM`` (d2l §8.6.1).

    ``forward(inputs (B, T) int, state) -> (outputs (T * B, vocab_size), state)``; a bidirectional
    layer feeds both directions, ``2 * num_hiddens`` features, to the output layer.
    """

    def __init__(self, rnn_layer: nn.RNNBase, vocab_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rnn = rnn_layer
        self.vocab_size = vocab_size
        self.num_hiddens = self.rnn.hidden_size
        self.num_directions = 2 if self.rnn.bidirectional else 1
        self.linear = nn.Linear(self.num_hiddens * self.num_directions, self.vocab_size)

    def forward(self, inputs: Tensor, state: State) -> tuple[Tensor, State]:
        X = nnf.one_hot(inputs.T.long(), self.vocab_size).float()  # (B, T) -> (T, B, V)
        Y, state = self.rnn(X, state)  # (T, B, D * H)
        return self.linear(Y.reshape(-1, Y.shape[-1])), state  # (T * B, V)

    def begin_state(self, device: torch.device | str, batch_size: int = 1) -> State:
        """Zeros ``(D * num_layers, batch_size, num_hiddens)``; a pair ``(H, C)`` for ``nn.LSTM``.
        Note the book's argument order: device first."""
        shape = (self.num_directions * self.rnn.num_layers, batch_size, self.num_hiddens)
        if isinstance(self.rnn, nn.LSTM):
            return torch.zeros(shape, device=device), torch.zeros(shape, device=device)
        return torch.zeros(shape, device=device)


# ---- training and prediction (d2l §8.5.4-8.5.6) -----------------------------------------------

def predict_ch8(prefix: str, num_preds: int, net: Any, vocab: Vocab, device: torch.device | str) -> str:
    """The prefix followed by `num_preds` greedy (argmax) characters (d2l §8.5.4).

    The whole prefix is fed in one call, which leaves the same state as the book's one-by-one warm-up.
    """
    if not prefix:
        raise ValueError("prefix must not be empty: prediction starts from at least one token")
    outputs = [vocab[ch] for ch in prefix]
    with torch.no_grad():
        state = net.begin_state(batch_size=1, device=device)
        y, state = net(torch.tensor([outputs], device=device), state)  # (1, T) -> y (T, V)
        for i in range(num_preds):
            outputs.append(int(y[-1].argmax()))
            if i + 1 < num_preds:
                y, state = net(torch.tensor([[outputs[-1]]], device=device), state)
    return "".join(vocab.idx_to_token[i] for i in outputs)


def _params_of(net: Any) -> list[Tensor]:
    if isinstance(net, nn.Module):
        return [p for p in net.parameters() if p.requires_grad]
    return net.params


def grad_clipping(net: Any, theta: float) -> None:
    """Rescale the gradients of `net` (an ``nn.Module`` or an object with ``.params``) so that their
    global L2 norm is at most `theta` (d2l §8.5.5)."""
    optim.grad_clipping(_params_of(net), theta)


def sgd(params: list[Tensor], lr: float, batch_size: int) -> None:
    """Minibatch SGD (d2l §3.2.5): ``param -= lr * param.grad / batch_size``, then zero the grads."""
    with torch.no_grad():
        for param in params:
            param -= lr * param.grad / batch_size
            param.grad.zero_()


def train_epoch_ch8(net: Any, train_iter: Any, loss: nn.Module, updater: Any, device: torch.device | str,
                    use_random_iter: bool) -> tuple[float, float]:
    """One epoch (d2l §8.5.5); returns ``(perplexity, tokens per second)``.

    The state starts from zeros on the first batch, and on every batch with random sampling (its
    batches do not continue each other); otherwise it is carried over, detached from the graph.
    """
    state, timer, metric = None, Timer(), Accumulator(2)  # sum of losses, number of tokens
    for X, Y in train_iter:
        if state is None or use_random_iter:
            state = net.begin_state(batch_size=X.shape[0], device=device)
        else:
            state = detach_state(state)
        y = Y.T.reshape(-1)  # (B, T) -> (T * B,): the time-major order of the outputs
        X, y = X.to(device), y.to(device)
        y_hat, state = net(X, state)
        loss_value = loss(y_hat, y.long()).mean()
        if isinstance(updater, torch.optim.Optimizer):
            updater.zero_grad()
            loss_value.backward()
            grad_clipping(net, 1)
            updater.step()
        else:
            loss_value.backward()
            grad_clipping(net, 1)
            updater(batch_size=1)  # the loss is already a mean over the batch
        metric.add(float(loss_value.detach()) * y.numel(), y.numel())
    return math.exp(metric[0] / metric[1]), metric[1] / timer.stop()


def train_ch8(net: Any, train_iter: Any, vocab: Vocab, lr: float, num_epochs: int,
              device: torch.device | str, use_random_iter: bool = False) -> None:
    """Train with SGD and clipping at 1, printing as the book does (d2l §8.5.5): a prediction every
    10 epochs, then ``perplexity X, Y tokens/sec on DEVICE`` and two predictions."""
    loss = nn.CrossEntropyLoss()
    animator = Animator(xlabel="epoch", ylabel="perplexity", legend=["train"], xlim=[10, num_epochs])
    if isinstance(net, nn.Module):
        updater = torch.optim.SGD(net.parameters(), lr)
    else:
        def updater(batch_size: int) -> None:
            sgd(net.params, lr, batch_size)

    def predict(prefix: str) -> str:
        return predict_ch8(prefix, 50, net, vocab, device)

    for epoch in range(num_epochs):
        ppl, speed = train_epoch_ch8(net, train_iter, loss, updater, device, use_random_iter)
        if (epoch + 1) % 10 == 0:
            print(predict("time traveller"))
            animator.add(epoch + 1, [ppl])
    print(f"perplexity {ppl:.1f}, {speed:.1f} tokens/sec on {device!s}")
    print(predict("time traveller"))
    print(predict("traveller"))


# ---- utilities (d2l §2-§6) --------------------------------------------------------------------

def try_gpu(i: int = 0) -> torch.device:
    """``cuda:i`` if it exists, else the CPU."""
    if torch.cuda.device_count() >= i + 1:
        return torch.device(f"cuda:{i}")
    return torch.device("cpu")


def try_all_gpus() -> list[torch.device]:
    """Every CUDA device, or ``[cpu]`` if there is none."""
    return [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())] or [torch.device("cpu")]


class Timer:
    """Record running times; starts at creation."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.start()

    def start(self) -> None:
        self.tik = time.perf_counter()

    def stop(self) -> float:
        """Seconds since the last `start`, recorded and returned."""
        self.times.append(time.perf_counter() - self.tik)
        return self.times[-1]

    def avg(self) -> float:
        return sum(self.times) / len(self.times)

    def sum(self) -> float:
        return sum(self.times)

    def cumsum(self) -> list[float]:
        return list(itertools.accumulate(self.times))


class Accumulator:
    """Sums over `n` variables: ``add(a, b)`` adds ``a`` to the first and ``b`` to the second."""

    def __init__(self, n: int) -> None:
        self.data = [0.0] * n

    def add(self, *args: Any) -> None:
        self.data = [a + float(b) for a, b in zip(self.data, args)]

    def reset(self) -> None:
        self.data = [0.0] * len(self.data)

    def __getitem__(self, idx: int) -> float:
        return self.data[idx]


class Animator:
    """The book's live plot (d2l §3.4), drawn to a PNG file instead of a notebook.

    Every `add` redraws the curves and rewrites the file atomically: ``$CHARLM_ANIMATOR_PNG`` if set
    when the animator is made, else ``animator.png`` in the current folder. Matplotlib is imported
    here, with the Agg canvas and without pyplot, so neither importing this module nor drawing
    touches the global backend.
    """

    def __init__(self, xlabel: str | None = None, ylabel: str | None = None,
                 legend: Sequence[str] | None = None, xlim: Sequence[float] | None = None,
                 ylim: Sequence[float] | None = None, xscale: str = "linear", yscale: str = "linear",
                 fmts: Sequence[str] = ("-", "m--", "g-.", "r:"), nrows: int = 1, ncols: int = 1,
                 figsize: tuple[float, float] = (3.5, 2.5)) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.path = Path(os.environ.get(ANIMATOR_ENV) or "animator.png")
        self.fig = Figure(figsize=figsize)
        FigureCanvasAgg(self.fig)
        self.axes = self.fig.subplots(nrows, ncols)
        if nrows * ncols == 1:
            self.axes = [self.axes]
        self._axes_config = (xlabel, ylabel, legend or [], xlim, ylim, xscale, yscale)
        self.X: list[list[Any]] | None = None
        self.Y: list[list[Any]] | None = None
        self.fmts = fmts

    def add(self, x: Any, y: Any) -> None:
        """Append a point to each curve: `y` is one value or one per curve; `x` likewise."""
        if not hasattr(y, "__len__"):
            y = [y]
        n = len(y)
        if not hasattr(x, "__len__"):
            x = [x] * n
        if not self.X:
            self.X = [[] for _ in range(n)]
        if not self.Y:
            self.Y = [[] for _ in range(n)]
        for i, (a, b) in enumerate(zip(x, y)):
            if a is not None and b is not None:
                self.X[i].append(a)
                self.Y[i].append(b)
        self._draw()

    def _draw(self) -> None:
        ax = self.axes[0]
        ax.cla()
        for x, y, fmt in zip(self.X, self.Y, self.fmts):
            ax.plot(x, y, fmt)
        xlabel, ylabel, legend, xlim, ylim, xscale, yscale = self._axes_config
        ax.set_xlabel(xlabel or "")
        ax.set_ylabel(ylabel or "")
        ax.set_xscale(xscale)
        ax.set_yscale(yscale)
        for set_lim, lim in ((ax.set_xlim, xlim), (ax.set_ylim, ylim)):
            if lim is not None and lim[0] != lim[1]:  # train_ch8(..., 10, ...) asks for [10, 10]
                set_lim(lim)
        if legend:
            ax.legend(legend)
        ax.grid()
        self.fig.tight_layout()
        atomic_write(self.path, lambda f: self.fig.savefig(f, format="png"))
