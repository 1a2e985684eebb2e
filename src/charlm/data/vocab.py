"""The vocabulary: tokens <-> indices, sorted by frequency, with `<unk>` at index 0 (d2l §8.2.3)."""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

VOCAB_FORMAT = "charlm-vocab"
VOCAB_VERSION = 1
UNK = "<unk>"


def _flat(tokens: Iterable[Any]) -> list[str]:
    """Tokens given as a flat list, or as a list of per-line lists (the book passes both)."""
    out: list[str] = []
    for item in tokens:
        if isinstance(item, (list, tuple)):
            out.extend(item)
        else:
            out.append(item)
    return out


class Vocab:
    """Map tokens to indices and back.

    Index 0 is ``<unk>``, then the reserved tokens in the order given, then every token whose
    frequency is at least `min_freq`, most frequent first; ties keep the order in which the tokens
    were first seen (`Counter` keeps insertion order and `sorted` is stable).

    >>> v = Vocab(list("abbccc"))
    >>> v.idx_to_token
    ['<unk>', 'c', 'b', 'a']
    >>> v["c"], v[["a", "z"]], v.to_tokens([3, 1])
    (1, [3, 0], ['a', 'c'])
    """

    def __init__(self, tokens: Iterable[Any] | None = None, min_freq: int = 0,
                 reserved_tokens: Sequence[str] | None = None) -> None:
        self._build(collections.Counter(_flat(tokens or [])), min_freq, reserved_tokens)

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], min_freq: int = 0,
                    reserved_tokens: Sequence[str] | None = None) -> Vocab:
        """The vocabulary of a text whose tokens were counted elsewhere (a file too large for a list
        of its tokens); ``counts`` in order of first appearance, as ``Counter(tokens)`` has them."""
        vocab = cls.__new__(cls)
        vocab._build(counts, min_freq, reserved_tokens)
        return vocab

    def _build(self, counter: Mapping[str, int], min_freq: int,
               reserved_tokens: Sequence[str] | None) -> None:
        self._token_freqs = sorted(counter.items(), key=lambda kv: kv[1], reverse=True)
        self.idx_to_token = [UNK] + [t for t in (reserved_tokens or []) if t != UNK]
        if len(set(self.idx_to_token)) != len(self.idx_to_token):
            raise ValueError(f"reserved_tokens has duplicates: {list(reserved_tokens or [])}")
        self.token_to_idx = {tok: idx for idx, tok in enumerate(self.idx_to_token)}
        for tok, freq in self._token_freqs:
            if freq < min_freq:
                break  # sorted by frequency: no later token passes either
            if tok not in self.token_to_idx:
                self.token_to_idx[tok] = len(self.idx_to_token)
                self.idx_to_token.append(tok)

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def __getitem__(self, tokens: Any) -> Any:
        """Index of a token (``unk`` if unknown); lists and tuples are mapped recursively."""
        if isinstance(tokens, (list, tuple)):
            return [self[tok] for tok in tokens]
        return self.token_to_idx.get(tokens, self.unk)

    def __contains__(self, token: object) -> bool:
        return token in self.token_to_idx

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.idx_to_token == other.idx_to_token

    def __repr__(self) -> str:
        head = ", ".join(repr(t) for t in self.idx_to_token[:8])
        return f"Vocab(size={len(self)}, tokens=[{head}{', ...' if len(self) > 8 else ''}])"

    def to_tokens(self, indices: Any) -> Any:
        """Token of an index, or a list of tokens for a list/tuple/1-D tensor of indices."""
        if hasattr(indices, "tolist"):
            indices = indices.tolist()
        if isinstance(indices, (list, tuple)):
            return [self.idx_to_token[int(i)] for i in indices]
        return self.idx_to_token[int(indices)]

    @property
    def unk(self) -> int:
        """Index of the unknown token: always 0."""
        return 0

    @property
    def token_freqs(self) -> list[tuple[str, int]]:
        """(token, count) of the tokens the vocabulary was built from, most frequent first."""
        return list(self._token_freqs)

    def extended(self, other: Vocab, min_count: int = 1) -> Vocab:
        """This vocabulary with `other`'s tokens that it lacks appended, in `other`'s order: every
        token keeps its index, so a model's rows for them keep their meaning. Only tokens that `other`
        was built from at least `min_count` times are added.

        >>> Vocab(list("aab")).extended(Vocab(list("bcc"))).idx_to_token
        ['<unk>', 'a', 'b', 'c']
        >>> Vocab(list("aab")).extended(Vocab(list("bccd")), min_count=2).idx_to_token
        ['<unk>', 'a', 'b', 'c']
        """
        counts = dict(other._token_freqs)  # a reserved token that was never counted is always added
        new = [t for t in other.idx_to_token
               if t not in self.token_to_idx and counts.get(t, min_count) >= min_count]
        freqs = dict(self._token_freqs)
        return Vocab.from_dict({**self.to_dict(), "idx_to_token": self.idx_to_token + new,
                                "token_freqs": [[t, f] for t, f in self._token_freqs] +
                                [[t, f] for t, f in other._token_freqs if t in new and t not in freqs]})

    def unknown(self, tokens: Iterable[str]) -> list[str]:
        """The distinct tokens of `tokens` that this vocabulary lacks, in first-seen order."""
        return list(dict.fromkeys(t for t in tokens if t not in self.token_to_idx))

    def to_dict(self) -> dict[str, Any]:
        return {"format": VOCAB_FORMAT, "version": VOCAB_VERSION,
                "idx_to_token": self.idx_to_token,
                "token_freqs": [[t, f] for t, f in self._token_freqs]}

    @classmethod
    def from_dict(cls, data: Any) -> Vocab:
        """Rebuild a vocabulary saved by `to_dict`; anything malformed is a ValueError."""
        if not isinstance(data, dict) or data.get("format") != VOCAB_FORMAT:
            raise ValueError(f"not a charlm vocabulary (expected format {VOCAB_FORMAT!r})")
        if data.get("version") != VOCAB_VERSION:
            raise ValueError(f"vocabulary format version {data.get('version')!r} is not supported "
                             f"(this charlm reads version {VOCAB_VERSION})")
        tokens, freqs = data.get("idx_to_token"), data.get("token_freqs", [])
        if (not isinstance(tokens, list) or not tokens or tokens[0] != UNK
                or not all(isinstance(t, str) for t in tokens) or len(set(tokens)) != len(tokens)):
            raise ValueError("vocabulary idx_to_token must be a list of distinct strings "
                             "starting with '<unk>'")
        if not isinstance(freqs, list) or not all(
                isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], int)
                for p in freqs):
            raise ValueError("vocabulary token_freqs must be a list of [token, count] pairs")
        vocab = cls()
        vocab.idx_to_token = list(tokens)
        vocab.token_to_idx = {tok: idx for idx, tok in enumerate(tokens)}
        vocab._token_freqs = [(t, f) for t, f in freqs]
        return vocab

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON (UTF-8, human-readable)."""
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n",
                              encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        """Read a vocabulary written by `save`; a malformed file is a ValueError naming it."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls.from_dict(data)
        # RecursionError: JSON nested deeper than the interpreter's stack (json.loads' own limit)
        except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as err:
            raise ValueError(f"{path}: {err}") from None


# A character model that knows fewer than half of a text's characters never saw the script it is
# written in: its score would be that of <unk>, and fine-tuning it would start from nothing it knows.
MOSTLY_UNKNOWN = 0.5


def check_coverage(num_unknown: int, num_tokens: int, token: str, text: str, model: str,
                   remedy: str) -> None:
    """A ValueError when most of a text's characters are unknown to a character model's vocabulary
    (`text` names the text, `model` the run, `remedy` what to do instead); word runs are left alone,
    since rare words are unknown in any text."""
    if token == "char" and num_tokens and num_unknown / num_tokens > MOSTLY_UNKNOWN:
        share = num_unknown / num_tokens
        raise ValueError(f"{text}: {share:.0%} of its characters are not in the vocabulary of {model}: it is "
                         f"written in a script the model never saw; {remedy}")


def preamble_ids(preamble: str, token: str, vocab: Vocab) -> list[int]:
    """The ids of a run's preamble (``--preamble``: what its model reads before every text): its
    characters, or its words for word tokens. Each must be in the vocabulary, or the model would
    begin every text from ``<unk>``."""
    tokens = list(preamble) if token == "char" else preamble.split()
    missing = [t for t in tokens if t not in vocab.token_to_idx]
    if missing:
        raise ValueError(f"--preamble {preamble!r}: {missing[0]!r} is not in the vocabulary")
    return [vocab.token_to_idx[t] for t in tokens]

