"""The explorer's answers: each endpoint a function from a request body (a dict) to a JSON-ready dict.

Nothing here knows HTTP: :mod:`.server` checks who asks and how, then calls these. Every value a
client sends is checked here against its type and its cap, and a bad one is an :class:`ApiError`
with the status to answer and one line saying what to change. The analysis itself is
:mod:`charlm.inspection.reading` and :func:`charlm.generation.stream_scored`.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any

import torch

from ..checkpoint import CheckpointError, Run, load, weights_name
from ..generation import GenerateConfig, stream_scored
from ..inspection.attribution import MAX_WINDOW, METHODS, attribute
from ..inspection.intervention import Clamp, ablation_ranking, check_clamp, generate_clamped, read_clamped
from ..inspection.reading import (
    PRESETS,
    Group,
    Reading,
    Scores,
    Trace,
    compressor_bits,
    mask_of,
    next_tokens,
    rank_units,
    read,
    score,
    top_positions,
    trace,
    where_bits_go,
)
from ..models.config import FROM_SCRATCH


class ApiError(Exception):
    """A request the explorer cannot answer: the HTTP ``status`` and one line for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """Caps on what one request may ask, so that no request holds the model for long."""

    max_text: int = 20_000  # characters of a text to read (10,000 take about a second on 2 cores)
    max_preds: int = 5_000  # tokens one generation may ask for
    max_samples: int = 8  # samples generated side by side
    max_top: int = 50  # alternatives shown at a position
    max_units: int = 100  # units one search ranks
    max_ablation_text: int = 2_000  # characters an ablation ranking reads again once per unit


def _get(body: dict, name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    """`body[name]`, which must be of `kind` (an int is not a bool here); `default` if absent."""
    if name not in body or body[name] is None:
        if default is ...:
            raise ApiError(400, f"the request needs {name!r}")
        return default
    value = body[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise ApiError(400, f"{name!r} must be {names}, got {json.dumps(value)[:40]}")
    return value


def _capped(body: dict, name: str, default: int, low: int, high: int) -> int:
    value = _get(body, name, int, default)
    if not low <= value <= high:
        raise ApiError(400 if value < low else 413, f"{name!r} must be from {low} to {high}, got {value}")
    return value


class Explorer:
    """The runs a server shows, fixed when it starts (``r0``, ``r1``, ... in order), and its answers."""

    def __init__(self, runs: list[Run], limits: Limits = Limits(), *, which: str = "best") -> None:
        self.runs = {f"r{i}": run for i, run in enumerate(runs)}
        self.limits = limits
        self.which = which
        self._stamps = {key: _stamp(run.path, which) for key, run in self.runs.items()}
        self._traces: OrderedDict[tuple, tuple[Reading, Trace]] = OrderedDict()

    # ---- what a request names ----

    def run(self, body: dict, name: str = "run") -> tuple[str, Run]:
        key = _get(body, name, str)
        if key not in self.runs:
            raise ApiError(404, f"no run {key[:20]!r}: this server shows {', '.join(self.runs)}")
        return key, self._current(key)

    def _current(self, key: str) -> Run:
        """The run's model as its folder holds it now: a run still training in another process saves
        new weights as it goes (each file replaced whole, never half-written), and the page follows.
        Called by the endpoints that compute, which take their turn, so a reload never races one."""
        run, stamp = self.runs[key], _stamp(self.runs[key].path, self.which)
        if stamp != self._stamps[key]:
            try:
                self.runs[key] = run = load(run.path, which=self.which)
            except CheckpointError:
                return run  # replaced by something unreadable: keep showing the model it was
            self._stamps[key] = stamp
            self._traces = OrderedDict((k, v) for k, v in self._traces.items() if k[0] != key)
        return run

    def text(self, body: dict, run: Run, name: str = "text", at_least: int = 2) -> Reading:
        text = _get(body, name, str)
        if len(text) > self.limits.max_text:
            raise ApiError(413, f"the text has {len(text):,} characters; the explorer reads at most "
                                f"{self.limits.max_text:,} at a time")
        reading = read(run, text)
        if len(reading.tokens) < at_least:
            raise ApiError(400, f"the text gives {len(reading.tokens)} token(s) as this run reads text; "
                                f"at least {at_least} are needed")
        return reading

    def _trace(self, key: str, run: Run, reading: Reading) -> Trace:
        """The trace of a text, kept for the last few texts: a unit search or a unit's values after
        an analysis of the same text cost no second pass over the model."""
        cache_key = (key, hashlib.sha256(reading.ids.numpy().tobytes()).hexdigest())
        if cache_key not in self._traces:
            self._traces[cache_key] = (reading, trace(run.model, reading.ids))
            while len(self._traces) > 2:
                self._traces.popitem(last=False)
        self._traces.move_to_end(cache_key)
        return self._traces[cache_key][1]

    # ---- the endpoints ----

    def runs_info(self) -> dict:
        return {"runs": [_describe(key, run) for key, run in self.runs.items()],
                "limits": {f.name: getattr(self.limits, f.name) for f in fields(self.limits)},
                "presets": list(PRESETS)}

    def metrics(self, key: str) -> dict:
        if key not in self.runs:
            raise ApiError(404, f"no run {key[:20]!r}: this server shows {', '.join(self.runs)}")
        return {"records": _metrics(self.runs[key])}  # the file alone: no model is read here

    def analyze(self, body: dict) -> dict:
        key, run = self.run(body)
        reading = self.text(body, run)
        top = _capped(body, "top", 5, 1, self.limits.max_top)
        # With the hidden states wanted too (the Neurons view), one pass gives both.
        trace = self._trace(key, run, reading) if _get(body, "states", bool, False) else None
        scores = score(run.model, reading.ids, top=top, trace=trace)
        return {**_reading_json(reading), **_scores_json(scores),
                "bpc": scores.bits_per_token, "num_predicted": len(scores.bits),
                "summary": _summary(reading, scores)}

    def next(self, body: dict) -> dict:
        _, run = self.run(body)
        if not run.model.can_generate:
            raise ApiError(400, "this run is bidirectional: it has seen the next token, so it cannot "
                                "say what comes next")
        reading = self.text(body, run, at_least=1)
        ids, probs = next_tokens(run.model, reading.ids, top=_capped(body, "top", 10, 1,
                                                                             self.limits.max_top))
        return {"tokens": run.vocab.to_tokens(ids.tolist()), "probs": probs.tolist()}

    def units(self, body: dict) -> dict:
        key, run = self.run(body)
        reading = self.text(body, run)
        trace = self._trace(key, run, reading)
        layer, kind = _get(body, "layer", int), _get(body, "kind", str)
        try:
            values = trace.column(layer, kind, _get(body, "unit", int))
        except ValueError as err:
            raise ApiError(400, str(err)) from None
        return {"values": _rounded(values), "top": top_positions(values, count=12)}

    def search(self, body: dict) -> dict:
        key, run = self.run(body)
        reading = self.text(body, run)
        mask = _mask(body, reading)
        limit = _capped(body, "limit", 20, 1, self.limits.max_units)
        trace = self._trace(key, run, reading)
        kinds = _get(body, "kinds", list, ["h", "c"])
        try:
            ranked = rank_units(trace, mask, limit=trace.values.shape[1])
        except ValueError as err:
            raise ApiError(400, str(err)) from None
        found = []
        for r in ranked:
            layer, kind, unit = trace.unit(r.index)
            if kind in kinds:
                found.append({"layer": layer, "kind": kind, "unit": unit, "score": r.score,
                              "mean_in": r.mean_in, "mean_out": r.mean_out})
            if len(found) == limit:
                break
        return {"mask": mask.int().tolist(), "marked": int(mask.sum()), "units": found}

    def attribute(self, body: dict) -> dict:
        """Why the token at ``position`` of the text (-1: its last): each of the ``window`` tokens
        before it, and how much it raised (+) or lowered (-) that token's log-probability, in bits;
        ``tokens``: those tokens and the one explained."""
        _, run = self.run(body)
        if not run.model.can_generate:
            raise ApiError(400, "this run is bidirectional: it reads the text after a token too, so no "
                                "prediction from the tokens before it is there to explain")
        reading = self.text(body, run)
        last = len(reading.tokens) - 1
        # -1: the text's last token (Write asks about a token it has just written)
        position = last if body.get("position") == -1 and last >= 1 else _capped(body, "position", 1, 1, last)
        window = _capped(body, "window", 200, 1, MAX_WINDOW)
        method = _get(body, "method", str, METHODS[0])
        if method not in METHODS:
            raise ApiError(400, f"'method' must be one of {', '.join(METHODS)}, got {method[:20]!r}")
        found = attribute(run.model, reading.ids, position, window=window, method=method)
        return {"position": position, "start": found.start, "method": method,
                "bits": -found.logprob / math.log(2), "scores": _rounded(found.scores / math.log(2)),
                "tokens": reading.tokens[found.start:position + 1]}

    def clamp(self, body: dict) -> dict:
        """The text read with the units of ``clamps`` held, beside the model as it is: the bits of
        every position both ways (the first position has none), and the bits per token."""
        _, run = self.run(body)
        clamps = _clamps(body, run)
        reading = self.text(body, run)
        free, held = read_clamped(run.model, reading.ids, [[], clamps])
        return {"tokens": reading.tokens, "bits": [[None] + _rounded(free), [None] + _rounded(held)],
                "bpc": [float(free.mean()), float(held.mean())]}

    def clamp_generate(self, body: dict) -> dict:
        """What the model writes after ``prefix`` with the units held, and from the same seed without."""
        _, run = self.run(body)
        clamps = _clamps(body, run)
        prefix = _get(body, "prefix", str)
        if not prefix or len(prefix) > self.limits.max_text:
            raise ApiError(400 if not prefix else 413, f"the prefix must have 1 to {self.limits.max_text:,} "
                                                       f"characters, got {len(prefix):,}")
        num_preds = _capped(body, "num_preds", 200, 1, 2_000)  # two texts, a step at a time
        config = _generate_config({**body, "num_samples": 1, "num_preds": num_preds}, self.limits)
        try:
            held, free = generate_clamped(run.model, run.vocab, prefix, config, clamps, token=run.token)
        except ValueError as err:
            raise ApiError(400, str(err)) from None
        return {"held": held, "free": free, "seed": config.seed}

    def ablation(self, body: dict) -> dict:
        """The units whose removal (held at zero) costs the text most, with the bits per token each costs."""
        _, run = self.run(body)
        if run.model.config.bidirectional:
            raise ApiError(400, "this run is bidirectional: its units cannot be held while it reads forward")
        text = _get(body, "text", str)
        if len(text) > self.limits.max_ablation_text:
            raise ApiError(413, f"the text has {len(text):,} characters; a ranking reads it again for every "
                                f"unit, so at most {self.limits.max_ablation_text:,}")
        reading = self.text(body, run)
        limit = _capped(body, "limit", 20, 1, self.limits.max_units)
        layer, kind = _get(body, "layer", int, None), _get(body, "kind", str, None)
        try:
            ranked = ablation_ranking(run.model, reading.ids, limit=limit,
                                      layers=None if layer is None else [layer],
                                      kinds=("h", "c") if kind is None else (kind,))
        except ValueError as err:
            raise ApiError(400, str(err)) from None
        return {"units": [{"layer": a.layer, "kind": a.kind, "unit": a.unit, "cost": a.cost} for a in ranked]}

    def compare(self, body: dict) -> dict:
        keys = _get(body, "runs", list)
        if len(keys) != 2:
            raise ApiError(400, f"'runs' must name two runs to compare, got {len(keys)}")
        runs = [self.run({"run": k})[1] for k in keys]
        readings = [self.text(body, run) for run in runs]
        if readings[0].tokens != readings[1].tokens:
            raise ApiError(400, "the two runs read this text differently (their cleaning or tokens "
                                "differ), so their scores do not line up; compare runs that read text alike")
        scores = [score(run.model, r.ids, top=1) for run, r in zip(runs, readings)]
        diff = scores[0].bits - scores[1].bits
        largest = torch.topk(diff.abs(), min(12, len(diff))).indices + 1  # scored position t is row t - 1
        return {"tokens": readings[0].tokens, "bits": [[None] + _rounded(s.bits) for s in scores],
                "bpc": [s.bits_per_token for s in scores], "largest": largest.tolist()}

    def generate(self, body: dict) -> tuple[dict, Iterator]:
        """The first line of a generation (the seed it uses, notes) and its steps, checked up front."""
        _, run = self.run(body)
        prefix = _get(body, "prefix", str)
        if len(prefix) > self.limits.max_text:
            raise ApiError(413, f"the prefix has {len(prefix):,} characters; at most "
                                f"{self.limits.max_text:,}")
        config = _generate_config(body, self.limits)
        with warnings.catch_warnings(record=True) as caught:  # safe: one computation runs at a time
            warnings.simplefilter("always")
            try:
                steps = stream_scored(run.model, run.vocab, prefix, config, token=run.token)
            except ValueError as err:
                raise ApiError(400, str(err)) from None
        return {"seed": config.seed, "notes": [str(w.message) for w in caught]}, steps


def _generate_config(body: dict, limits: Limits) -> GenerateConfig:
    seed = _get(body, "seed", int, None)
    settings = {
        "num_preds": _capped(body, "num_preds", 200, 1, limits.max_preds),
        "num_samples": _capped(body, "num_samples", 1, 1, limits.max_samples),
        "temperature": float(_get(body, "temperature", (int, float), 1.0)),
        "top_k": _capped(body, "top_k", 0, 0, 1_000_000),
        "top_p": float(_get(body, "top_p", (int, float), 1.0)),
        "greedy": _get(body, "greedy", bool, False),
        # A seed is always used, so that what the page shows can be replayed.
        "seed": secrets.randbits(31) if seed is None else seed,
    }
    try:
        return GenerateConfig(**settings)
    except ValueError as err:
        raise ApiError(400, str(err)) from None


def _clamps(body: dict, run: Run) -> list[Clamp]:
    """``clamps``: a list of {layer, kind, unit, value} (value 0 by default: the unit switched off)."""
    items = _get(body, "clamps", list)
    if not 1 <= len(items) <= 16:
        raise ApiError(400, f"'clamps' must hold 1 to 16 units, got {len(items)}")
    clamps = []
    for item in items:
        if not isinstance(item, dict):
            raise ApiError(400, "each of 'clamps' must be {\"layer\": L, \"kind\": \"h\" or \"c\", "
                                "\"unit\": U, \"value\": V}")
        clamp = Clamp(_get(item, "layer", int), _get(item, "kind", str), _get(item, "unit", int),
                      float(_get(item, "value", (int, float), 0.0)))
        try:
            check_clamp(run.model, clamp)
        except ValueError as err:
            raise ApiError(400, str(err)) from None
        clamps.append(clamp)
    return clamps


def _mask(body: dict, reading: Reading) -> torch.Tensor:
    how = _get(body, "mask", dict)
    if len(how) != 1 or next(iter(how)) not in ("preset", "regex", "spans"):
        raise ApiError(400, "'mask' must be one of {\"preset\": NAME}, {\"regex\": PATTERN} and "
                            "{\"spans\": [[start, end], ...]}")
    name, value = next(iter(how.items()))
    if name == "spans":
        value = _get(how, "spans", list)
        if not all(isinstance(s, list) and len(s) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                              for x in s) for s in value):
            raise ApiError(400, "'spans' must be a list of [start, end] token positions")
        value = [tuple(s) for s in value]
    elif not isinstance(value, str) or (name == "regex" and len(value) > 200):
        raise ApiError(400, f"{name!r} must be a string" + (" of at most 200 characters" if name == "regex"
                                                             else ""))
    try:
        return mask_of(reading, **{name: value})
    except ValueError as err:
        raise ApiError(400, str(err)) from None


def _describe(key: str, run: Run) -> dict:
    c = run.model.config
    kinds = ("h", "c") if c.cell == "lstm" else ("h",)
    return {"id": key, "name": run.path.name, "cell": c.cell, "impl": c.impl,
            "num_layers": c.num_layers, "num_hiddens": c.num_hiddens, "bidirectional": c.bidirectional,
            "can_generate": run.model.can_generate, "token": run.token,
            "clean": run.config.clean if run.config is not None else "d2l",
            "vocab": run.vocab.idx_to_token, "weights": run.weights,
            "from_scratch": c.impl in FROM_SCRATCH,
            "num_params": sum(p.numel() for p in run.model.parameters()),
            "layers": [{"layer": layer, "kind": kind, "size": c.num_hiddens * c.num_directions}
                       for layer in range(c.num_layers) for kind in kinds]}


def _metrics(run: Run) -> list[dict]:
    """The records of the run's metrics.jsonl as it is now (a run still training grows it)."""
    path = run.path / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line being written
        if isinstance(record, dict):
            records.append({k: v for k, v in record.items() if not isinstance(v, float) or math.isfinite(v)})
    return records


def _stamp(run_dir, which: str) -> tuple[str, int, int] | None:
    """Which weights file `load` would read now, and its modification time and size."""
    name = weights_name(run_dir, which)
    try:
        info = (run_dir / name).stat()
    except OSError:
        return None
    return name, info.st_mtime_ns, info.st_size


def _rounded(values: torch.Tensor, places: int = 4) -> list[float]:
    """Values for the page, to `places` decimals: a tenth of the bytes of full floats in the JSON."""
    return (values.double() * 10 ** places).round().div(10 ** places).tolist()


def _reading_json(reading: Reading) -> dict:
    return {"tokens": reading.tokens, "ids": reading.ids.tolist(), "cleaned": reading.cleaned,
            "unknown": reading.unknown, "left_out": reading.left_out}


def _scores_json(scores: Scores) -> dict:
    return {"bits": [None] + _rounded(scores.bits), "probs": [None] + _rounded(scores.probs, 5),
            "ranks": [None] + scores.ranks.tolist(), "top_ids": [None] + scores.top_ids.tolist(),
            "top_probs": [None] + _rounded(scores.top_probs, 5)}


def _groups(groups: dict[str, Group]) -> dict:
    return {key: {"count": g.count, "bpc": g.bits} for key, g in groups.items()}


def _summary(reading: Reading, scores: Scores) -> dict:
    """Where the bits go, and what general-purpose compressors need for the same text."""
    parts = where_bits_go(reading, scores)
    text = reading.separator.join(reading.tokens)
    return {"by_class": _groups(parts.by_class), "by_place": _groups(parts.by_place),
            "costliest": parts.costliest,
            "baselines": compressor_bits(text, len(reading.tokens))}
