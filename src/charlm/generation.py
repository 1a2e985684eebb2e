"""Generating text: warm the state up on a prefix, then predict one token at a time (d2l §8.5.4).

The book's ``predict_ch8`` feeds the prefix through the model to build up the hidden state ("warm-up"),
then repeatedly takes the most likely next token and feeds it back in. We keep that loop and add the
usual ways to *sample* instead of taking the argmax::

    prefix "the ti" --model, one call over all of it--> state, logits of the last step (N, V)
        repeat num_preds times:
            logits --/ temperature--> --top-k--> --top-p--> softmax --multinomial--> ids (N,)
            ids --model, one step, carried state--> state, logits (N, V)

``N`` is ``num_samples`` (independent samples generated side by side as one batch) and ``V`` the
vocabulary size. Every random draw comes from one ``torch.Generator`` seeded by
:attr:`GenerateConfig.seed`, so a seed replays a sample exactly and the global RNG is never touched.
"""

from __future__ import annotations

import math
import secrets
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .data.text import split_prefix
from .data.vocab import Vocab
from .fields import at_least, boolean, check_types, flag, number, setting
from .models import decoding
from .models.lm import RNNLM, evaluating
from .models.scratch import State

__all__ = ["GenerateConfig", "Step", "generate", "next_token_distribution", "pick", "stream", "stream_scored"]


@dataclass
class GenerateConfig:
    """How to pick each generated token; kept apart from the model's own :class:`ModelConfig`.

    ``temperature`` divides the logits before the softmax: 1 samples the model's distribution as
    it is, below 1 sharpens it, above 1 flattens it, and 0 is the argmax. The book's exercise of
    sampling from ``p**alpha`` (renormalised) is ``temperature = 1 / alpha``, since
    ``p**alpha ∝ exp(alpha * logits)`` (d2l §8.5 exercises).

    ``top_k`` then keeps the ``k`` most likely tokens, and ``top_p`` the smallest set of most
    likely tokens whose probabilities add up to at least ``top_p`` (nucleus sampling, Holtzman et
    al. 2020); the top token always survives both, so greedy output lies inside any filter.

    Example::

        GenerateConfig(num_preds=100, temperature=0.8, top_k=10, seed=0)  # 100 tokens, replayable
        GenerateConfig(num_preds=50, greedy=True)                         # the book's predict_ch8
    """

    num_preds: int = setting(100, "tokens to generate after the prefix (the book's num_preds)")
    temperature: float = setting(1.0, "sampling temperature: 1 = the model's distribution, below 1 sharper, "
                                 "0 = greedy; sampling from p^alpha is 1/alpha")
    greedy: bool = setting(False, "always the most likely token (the book's predict_ch8; the same as "
                           "--temperature 0)")
    top_k: int = setting(0, "sample among the k most likely tokens; 0 = off")
    top_p: float = setting(1.0, "nucleus sampling: the most likely tokens up to this total probability, in "
                           "(0, 1]; 1 = off")
    num_samples: int = setting(1, "independent samples, generated together as one batch")
    # None: fresh OS entropy each call, never the global torch RNG
    seed: int | None = setting(None, "random seed: the same seed replays a sample", shown="fresh each run")
    strict: bool = setting(False, "unknown prefix tokens are an error instead of a note")
    # Beam search is not a way of sampling: it looks for the likeliest text, so it draws nothing.
    beam: int = setting(0, "beam search: keep the K likeliest texts at every step and give the likeliest "
                        "at the end (--num-samples N: the N likeliest); deterministic; 0 = off",
                        metavar="K")
    stop: str | None = setting(None, "end each sample where this text first appears in what it generates "
                               "(the prefix does not count), such as '\\n\\n' for a paragraph; "
                               "\\n and \\t are read as a newline and a tab", shown="never",
                               parse=lambda text: text.replace("\\n", "\n").replace("\\t", "\t"),
                               metavar="TEXT")

    def __post_init__(self) -> None:
        check_types(self)
        at_least("num_preds", self.num_preds, 0)
        if not 0 <= number("temperature", self.temperature) < math.inf:
            raise ValueError(f"--temperature must be >= 0 and finite, got {self.temperature}")
        boolean("greedy", self.greedy)
        at_least("top_k", self.top_k, 0)
        if not 0 < number("top_p", self.top_p) <= 1:
            raise ValueError(f"--top-p must be in (0, 1], got {self.top_p}")
        at_least("num_samples", self.num_samples, 1)
        if self.seed is not None:
            at_least("seed", self.seed, 0)
        boolean("strict", self.strict)
        if self.stop == "":
            raise ValueError("--stop must not be empty: it would end every sample before it begins")
        at_least("beam", self.beam, 0)
        if self.beam:
            self._check_beam()

    def _check_beam(self) -> None:
        sampling = {"temperature": self.temperature != 1.0, "top_k": self.top_k != 0,
                    "top_p": self.top_p != 1.0, "greedy": self.greedy, "seed": self.seed is not None}
        given = [name for name, changed in sampling.items() if changed]
        if given:
            raise ValueError(f"{flag(given[0])} chooses how to sample; --beam searches for the likeliest "
                             f"text instead and draws nothing: give one or the other")
        if self.num_samples > self.beam:
            raise ValueError(f"--num-samples {self.num_samples} is more than --beam {self.beam} keeps: "
                             f"the search ends with {self.beam} texts")

    @property
    def is_greedy(self) -> bool:
        """True when every step takes the argmax: ``greedy=True`` or ``temperature=0``."""
        return self.greedy or self.temperature == 0


def _top_k(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest logits of each row (exactly ``k``, ties broken by ``topk``), -inf elsewhere."""
    if k == 0 or k >= logits.shape[-1]:
        return logits
    values, indices = torch.topk(logits, k, dim=-1)  # (N, k)
    return torch.full_like(logits, -math.inf).scatter(-1, indices, values)


def _top_p(probs: Tensor, p: float) -> Tensor:
    """Zero all but the nucleus of each row, then renormalise.

    The nucleus is the smallest set of most likely tokens whose total reaches ``p``: a token stays
    when the tokens ranked above it total *less* than ``p``. The top token (nothing above it) always
    stays. ``[0.5, 0.3, 0.1, 0.1]`` with ``p=0.7``: totals above = ``[0, 0.5, 0.8, 0.9]`` -> keep 2.
    """
    if p >= 1:
        return probs
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True)  # (N, V)
    mass_above = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    keep_sorted = mass_above < p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)  # back to vocabulary order
    kept = probs * keep
    return kept / kept.sum(dim=-1, keepdim=True)


def next_token_distribution(logits: Tensor, config: GenerateConfig) -> Tensor:
    """The distribution each next token is drawn from: ``logits (N, V) -> probs (N, V)`` (float32).

    Temperature, then top-k, then top-p, in that order; a greedy config gives the one-hot of the
    argmax. Example: logits ``log([0.5, 0.3, 0.1, 0.1])`` with ``top_p=0.7`` -> ``[0.625, 0.375, 0, 0]``;
    with ``temperature=0.5`` (``alpha=2``) -> ``[0.25, 0.09, 0.01, 0.01] / 0.36``.
    """
    if config.is_greedy:
        return nn.functional.one_hot(logits.argmax(dim=-1), logits.shape[-1]).float()
    logits = logits.float()
    # Subtract the max *before* dividing: a tiny temperature then cannot overflow to inf (-> NaN).
    scaled = (logits - logits.amax(dim=-1, keepdim=True)) / config.temperature
    probs = torch.softmax(_top_k(scaled, config.top_k), dim=-1)
    return _top_p(probs, config.top_p)


def pick(logits: Tensor, config: GenerateConfig, *, generator: torch.Generator | None) -> Tensor:
    """Choose the next token of each row: ``logits (N, V) -> ids (N,)`` int64.

    Greedy configs take the argmax and draw nothing (``generator`` may then be None); otherwise one
    draw per row from :func:`next_token_distribution` with ``generator``, which must live on the
    logits' device. Example: ``pick(torch.tensor([[0., 3., 1.]]), GenerateConfig(greedy=True),
    generator=None) -> tensor([1])``.
    """
    if config.is_greedy:
        return logits.argmax(dim=-1)
    if generator is None:
        raise ValueError("pick needs a torch.Generator to sample (all randomness is explicit); "
                         "pass generator=torch.Generator(device=logits.device).manual_seed(seed)")
    probs = next_token_distribution(logits, config)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (N, 1) -> (N,)


def _resolve_device(model: RNNLM, device: torch.device | str | None) -> torch.device:
    """The parameters' device; an explicit ``device`` must name that same device (we never move the model)."""
    here = next(model.parameters()).device
    if device is None:
        return here
    wanted = torch.device(device)
    if wanted.type != here.type or wanted.index not in (None, here.index):
        raise ValueError(f"device={str(wanted)!r} but the model's parameters are on {str(here)!r}; "
                         f"move the model first (model.to(device))")
    return here


def _prefix_ids(vocab: Vocab, prefix: str, token: str, strict: bool, stacklevel: int) -> list[int]:
    """Token ids of the prefix; unknown tokens read as ``<unk>`` with a warning (an error if ``strict``)."""
    tokens = split_prefix(prefix, token)
    if not tokens:
        raise ValueError(f"prefix must not be empty: generation starts from at least one {token} token, "
                         f"got {prefix!r}")
    unknown = vocab.unknown(tokens)
    if unknown:
        names = ", ".join(repr(t) for t in unknown)
        if all(t not in vocab for t in tokens):
            raise ValueError(f"none of the prefix tokens are in the vocabulary ({names}): "
                             f"nothing to condition on")
        if strict:
            raise ValueError(f"prefix tokens not in the vocabulary (strict=True): {names}")
        warnings.warn(f"prefix tokens not in the vocabulary, read as <unk>: {names}", UserWarning,
                      stacklevel=stacklevel + 1)
    return vocab[tokens]


def _new_generator(device: torch.device, seed: int | None) -> torch.Generator:
    # Seeding from OS entropy rather than torch.seed(), which would reseed the *global* RNG.
    return torch.Generator(device=device).manual_seed(secrets.randbits(63) if seed is None else seed)


def _step(model: RNNLM, inputs: Tensor, state: State, checked: bool = True) -> tuple[Tensor, State]:
    """Run ``inputs (N, T)`` from ``state``; the logits of the last step only, ``(N, V)``.
    ``checked=False`` skips the argument checks, for ids the model itself has just chosen."""
    with evaluating(model):
        logits, state = model(inputs, state, check=checked)  # (N, T, V)
    return logits[:, -1], state


def _warm_up(model: RNNLM, ids: list[int], n: int, device: torch.device) -> tuple[Tensor, State]:
    """The logits ``(N, V)`` after the prefix and the state they leave, for ``n`` streams at once.
    The book feeds the prefix one token at a time and discards the predictions (d2l §8.5.4); one
    call over the whole prefix computes the same state, its input products all at once."""
    prefix = torch.tensor(ids, dtype=torch.int64, device=device).expand(n, -1)  # (T,) -> (N, T)
    return _step(model, prefix, model.begin_state(n, device=device))


def _picks(model: RNNLM, ids: list[int], config: GenerateConfig,
           device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """The loop itself: warm-up over the whole prefix at once, then one token per step; yields the
    ids chosen ``(N,)`` and the logits ``(N, V)`` they were drawn from."""
    generator = None if config.is_greedy else _new_generator(device, config.seed)
    logits, state = _warm_up(model, ids, config.num_samples, device)
    # Then one token at a time: in C++ where the kernels run (a fifth of a step's time is Python's
    # own around torch's calls), the same equations otherwise.
    step = _kernel_step if decoding.usable(model) else _step
    for i in range(config.num_preds):
        chosen = pick(logits, config, generator=generator)  # (N,)
        yield chosen, logits
        if i + 1 < config.num_preds:  # feed the choice back with the carried state
            logits, state = step(model, chosen[:, None], state, checked=False)  # (N,) -> (N, 1)


def _kernel_step(model: RNNLM, inputs: Tensor, state: State, checked: bool = False) -> tuple[Tensor, State]:
    """:func:`_step` for one token per stream ``(N, 1)`` as a warm-up of one step in the C++ loop."""
    with torch.inference_mode():
        _, logits, state = decoding.greedy(model, state, 0, feed_last=False, prefix=inputs)
    return logits, state


def _beam_search(model: RNNLM, vocab: Vocab, ids: list[int], config: GenerateConfig,
                 device: torch.device) -> Iterator[list[str]]:
    """Beam search: after the warm-up on the prefix, every step extends each of the ``K`` texts kept
    by every token and keeps the ``K`` of highest total log-probability (the sum over their tokens);
    the ``num_samples`` best at the end come out step by step, as sampled texts do::

        texts (B,) --model--> log p (B, V) --+ their scores (B, 1)--> (B * V,) --top K--> texts (K,)

    The state of each kept text is its parent's (``index_select`` on the batch axis), so one batched
    step of the model advances them all.
    """
    K = config.beam
    with evaluating(model):
        logits, state = _step(model, torch.tensor([ids], dtype=torch.int64, device=device),
                              model.begin_state(1, device=device))
        scores = torch.zeros(1, device=device)  # (B,): the log-probability of each text kept
        texts: list[list[int]] = [[]]
        for i in range(config.num_preds):
            logp = torch.log_softmax(logits.float(), dim=-1)  # (B, V)
            total = (scores[:, None] + logp).reshape(-1)  # (B * V,)
            scores, best = torch.topk(total, min(K, total.numel()))  # (K,), sorted, ties by index
            parent, chosen = best // logp.shape[1], best % logp.shape[1]
            texts = [texts[b] + [t] for b, t in zip(parent.tolist(), chosen.tolist())]
            if i + 1 < config.num_preds:
                state = _select(state, parent)
                logits, state = _step(model, chosen[:, None], state, checked=False)
    for step in range(config.num_preds):  # the best first: topk keeps the scores sorted
        yield vocab.to_tokens([text[step] for text in texts[:config.num_samples]])


def _select(state: State, rows: Tensor) -> State:
    """The states of the texts kept: ``rows`` of the batch axis (dim 1 of ``(layers, B, H)``)."""
    if isinstance(state, tuple):
        return tuple(s.index_select(1, rows) for s in state)
    return state.index_select(1, rows)


# Tokens per call of the C++ greedy loop: enough to make the call's cost vanish, few enough that a
# stream shows its text as it comes (64 tokens take about a millisecond).
_KERNEL_CHUNK = 64


def _greedy_in_kernels(model: RNNLM, ids: list[int], config: GenerateConfig, device: torch.device,
                       scored: bool) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Greedy picks in C++ (:mod:`charlm.models.decoding`) after the warm-up, a chunk per call: yields
    the ids ``(count, N)`` of each chunk, and with `scored` the logits ``(count, N, V)`` they came
    from. The first chunk is one token, so that it shows at once."""
    logits, state = _warm_up(model, ids, config.num_samples, device)
    remaining, count = config.num_preds, 1
    while remaining > 0:
        count = min(remaining, count)
        remaining -= count
        with torch.inference_mode():
            if scored:
                chosen, step_logits, logits, state = decoding.greedy_scored(
                    model, state, count, feed_last=remaining > 0, logits=logits)
            else:
                step_logits = None
                chosen, logits, state = decoding.greedy(model, state, count, feed_last=remaining > 0,
                                                        logits=logits)
        yield chosen, step_logits
        count = _KERNEL_CHUNK


def _checked_ids(model: RNNLM, vocab: Vocab, prefix: str, config: GenerateConfig, token: str,
                 stacklevel: int) -> list[int]:
    """Check everything up front (so errors come at the call, not at the first ``next``); the prefix ids."""
    if not model.can_generate:
        raise ValueError("this model is bidirectional: its prediction at each step has seen the next "
                         "token, so it cannot generate text left to right (d2l §9.4); train a "
                         "unidirectional model to generate")
    if len(vocab) != model.config.vocab_size:
        raise ValueError(f"the vocabulary has {len(vocab)} tokens but the model's vocab_size is "
                         f"{model.config.vocab_size}: they do not belong together")
    ids = _prefix_ids(vocab, prefix, token, config.strict, stacklevel + 1)
    if config.beam > len(vocab):
        raise ValueError(f"--beam {config.beam} is wider than the vocabulary ({len(vocab)} tokens): each "
                         f"step has at most {len(vocab)} ways to go on from one text")
    return ids


def _start(model: RNNLM, vocab: Vocab, prefix: str, config: GenerateConfig | None, token: str,
           device: torch.device | str | None, top: int, stacklevel: int) -> Iterator[Step]:
    """The one pipeline behind :func:`stream`, :func:`stream_scored` and :func:`generate`: every
    argument checked now, then the steps of a beam search or of sampling (:func:`_steps`), cut at
    ``config.stop``."""
    config = GenerateConfig() if config is None else config
    ids = _checked_ids(model, vocab, prefix, config, token, stacklevel + 1)
    steps = _steps(model, vocab, ids, config, top, _resolve_device(model, device))
    if config.stop is None:
        return steps
    return _until(steps, _Stopper(config.stop, config.num_samples, token))


def _until(steps: Iterator[Step], stopper: _Stopper) -> Iterator[Step]:
    """The steps through `stopper` (a stopped sample's probability is NaN); the loop ends (nothing
    more is computed) once all have stopped."""
    for step in steps:
        tokens = stopper(step.tokens)
        yield Step(tokens, [p if t else math.nan for t, p in zip(tokens, step.probs)], step.top_tokens,
                   step.top_probs)
        if stopper.finished:
            return


class _Stopper:
    """Each sample's tokens up to and including the one that completes `stop`, then "" for it;
    ``finished`` once every sample has stopped. Only the last ``len(stop)`` characters of each
    sample are kept to look for it."""

    def __init__(self, stop: str, n: int, token: str) -> None:
        self.stop, self.sep = stop, " " if token == "word" else ""
        self.tails, self.done = [""] * n, [False] * n

    @property
    def finished(self) -> bool:
        return all(self.done)

    def __call__(self, step: list[str]) -> list[str]:
        out = []
        for i, tok in enumerate(step):
            if self.done[i]:
                out.append("")
                continue
            seen = self.tails[i] + (self.sep if self.tails[i] else "") + tok
            self.done[i] = self.stop in seen
            self.tails[i] = seen[-len(self.stop):]
            out.append(tok)
        return out


@dataclass
class Step:
    """One step of :func:`stream_scored`: a new token per sample ("" once a sample has met its
    ``stop``), the model's probability of it (its own softmax, before temperature or any filter;
    NaN once stopped), and its ``top`` likeliest tokens there with their probabilities."""

    tokens: list[str]
    probs: list[float]
    top_tokens: list[list[str]]
    top_probs: list[list[float]]


def _steps(model: RNNLM, vocab: Vocab, ids: list[int], config: GenerateConfig, top: int,
           device: torch.device) -> Iterator[Step]:
    """Each step's tokens, and with ``top > 0`` what the model thought of them; ``top == 0`` scores
    nothing (plain generation: no softmax, and the C++ greedy loop returns no logits). A beam search
    picks among its texts only at the end, so its steps carry tokens alone."""
    if config.beam:
        return (Step(tokens, [], [], []) for tokens in _beam_search(model, vocab, ids, config, device))
    if config.is_greedy and decoding.usable(model):
        chunks = _greedy_in_kernels(model, ids, config, device, scored=top > 0)
    else:
        chunks = ((chosen[None], logits[None]) for chosen, logits in _picks(model, ids, config, device))
    return _scored(chunks, vocab, top)


def _scored(chunks: Iterator[tuple[Tensor, Tensor | None]], vocab: Vocab, top: int) -> Iterator[Step]:
    """The steps of chunks of ``(S, N)`` ids and their ``(S, N, V)`` logits, S steps at a time."""
    for chosen, logits in chunks:
        if not top:
            yield from (Step(vocab.to_tokens(now), [], [], []) for now in chosen.tolist())
            continue
        probs = torch.softmax(logits.float(), dim=-1)
        chosen_probs = probs.gather(2, chosen[..., None])[..., 0].tolist()
        top_probs, top_ids = torch.topk(probs, min(top, probs.shape[-1]), dim=-1)
        rows = zip(chosen.tolist(), chosen_probs, top_ids.tolist(), top_probs.tolist())
        for now, p, t_ids, t_probs in rows:
            yield Step(vocab.to_tokens(now), p, [vocab.to_tokens(row) for row in t_ids], t_probs)


def stream_scored(model: RNNLM, vocab: Vocab, prefix: str, config: GenerateConfig | None = None, *,
                  top: int = 5, token: str = "char", device: torch.device | str | None = None
                  ) -> Iterator[Step]:
    """:func:`stream` with what the model thought at each step: yields one :class:`Step` per token.

    The tokens are exactly those :func:`stream` and :func:`generate` give for the same arguments
    and seed (the same draws from the same distributions). Beam search keeps several texts and
    picks among them only at the end, so it has no step to report: ``config.beam`` must be 0.

    Example::

        for step in stream_scored(model, vocab, "the ", GenerateConfig(num_preds=3, seed=0)):
            step.tokens, step.probs   # (['t'], [0.41]), (['i'], [0.12]), (['m'], [0.83])
    """
    config = GenerateConfig() if config is None else config
    if config.beam:
        raise ValueError("--beam searches for the likeliest texts and picks among them only at the end: "
                         "there is no step to score; sample or use --greedy")
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    return _start(model, vocab, prefix, config, token, device, top, stacklevel=2)


def stream(model: RNNLM, vocab: Vocab, prefix: str, config: GenerateConfig | None = None, *,
           token: str = "char", device: torch.device | str | None = None) -> Iterator[list[str]]:
    """Generate token by token: yields ``config.num_preds`` lists of ``config.num_samples`` new tokens.

    Sample ``i``'s text is ``prefix`` followed by item ``i`` of every yielded list, so a command line
    can print tokens as they come. ``token`` is ``"char"`` or ``"word"`` (how the prefix is split).
    Bad arguments raise ``ValueError`` here, before the first token.

    Example::

        for (ch,) in stream(model, vocab, "time traveller", GenerateConfig(num_preds=20, seed=0)):
            ...  # ch is one character, e.g. " ", "w", "a", ...
    """
    # The steps with nothing scored, as lists of tokens (the first iterable of a generator
    # expression is made at once, so bad arguments still raise here).
    return (step.tokens for step in _start(model, vocab, prefix, config, token, device, 0, stacklevel=2))


def generate(model: RNNLM, vocab: Vocab, prefix: str, config: GenerateConfig | None = None, *,
             token: str = "char", device: torch.device | str | None = None) -> list[str]:
    """The whole texts, one per sample: ``prefix`` as given plus ``config.num_preds`` generated tokens.

    Character tokens are joined with nothing, word tokens with spaces (one space after the prefix
    unless it already ends in whitespace). The model's own distribution is used as is, so a
    generated ``<unk>`` appears as the text ``"<unk>"``.

    Example::

        generate(model, vocab, "time traveller ", GenerateConfig(num_preds=10, greedy=True))
        # -> ['time traveller the the t'] for a half-trained character model
    """
    config = GenerateConfig() if config is None else config
    with evaluating(model):  # once for the whole text: nothing is yielded to the caller meanwhile
        steps = [step.tokens for step in _start(model, vocab, prefix, config, token, device, 0, stacklevel=2)]
    samples = [[step[i] for step in steps if step[i]] for i in range(config.num_samples)]
    if token == "word":
        sep = "" if not steps or prefix[-1:].isspace() else " "
        return [prefix + sep + " ".join(words) for words in samples]
    return [prefix + "".join(chars) for chars in samples]
