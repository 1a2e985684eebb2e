"""Run folders: the files a training run leaves, written atomically and read without unpickling code.

A run folder holds::

    config.json         the model and training configuration (sorted keys, format version)
    vocab.json          the vocabulary (see vocab.py)
    model.safetensors   the latest weights, for `load`, generation and evaluation
    best.safetensors    the weights with the best validation score so far
    trainer.pt          everything an exact resume needs in one file: weights, optimizer and
                        schedule state, epoch and batch reached, hidden state, RNG states
                        (plain tensors and numbers only: read with ``weights_only=True``)
    metrics.jsonl       one JSON record per epoch / evaluation
    perplexity.png      the perplexity curve (train and validation against epoch)

Every file is written to a temporary name in the folder (``.<name>.<random>.tmp``), flushed, fsync'ed
and renamed over the old one, and the folder is fsync'ed so the rename itself survives a power cut: a
crash or a full disk mid-write leaves the previous version intact, and at worst a hidden ``.tmp`` file
that nothing reads and resuming removes. metrics.jsonl grows by whole lines, one write(2) each.
A file that cannot be written is a RunWriteError naming it and the cause (a full disk, a read-only
folder), never a half-written checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save

from .config import DEFAULT_PREFIXES, TrainConfig
from .data.vocab import Vocab, preamble_ids
from .fields import flat_names
from .models import RNNLM, ModelConfig

RUN_FORMAT = "charlm-run"
# 1: "train" held the model's settings too, flat (and "model" named the cell); 2: "train" holds the
# rest of the training settings, and "model" alone describes the model. Version 1 still loads.
RUN_VERSION = 2
WEIGHTS = {"last": "model.safetensors", "best": "best.safetensors"}
# charlm's own trained models, shipped inside the package as run folders, by the name a RUN may give.
PRETRAINED = {"english": "charlm's general English character model (docs/english.md)"}


class CheckpointError(ValueError):
    """A run folder or one of its files is missing, malformed or from an unknown format version."""


class RunWriteError(CheckpointError):
    """A file of a run folder could not be written (full disk, read-only folder, a file in the way);
    the previous version of the file, if any, is intact."""


# Plain words for the causes a user can fix; any other error keeps the system's own words.
_WHY = {errno.ENOSPC: "the disk is full (no space left on device)",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
        errno.EPERM: "permission denied", errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EEXIST: "a file of that name is in the way, not a folder"}


def write_failure(path: Path, err: OSError) -> RunWriteError:
    """The error for a failed write of `path`: the file and the cause in plain words.

    >>> str(write_failure(Path("run/model.safetensors"), OSError(errno.ENOSPC, "No space left")))
    'run/model.safetensors: could not be written: the disk is full (no space left on device)'
    """
    return RunWriteError(f"{path}: could not be written: {_WHY.get(err.errno, err.strerror or str(err))}")


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` through a temporary file in the same folder, then rename it into place.

    The data is flushed and fsync'ed before the rename, and the folder after it: otherwise a power
    cut could leave the new name pointing at blocks never written, or the old name back."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with open(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; its renames need no folder sync
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno != errno.EINVAL:  # EINVAL: a file system that cannot sync folders
            raise
    finally:
        os.close(fd)


def save_file(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """`atomic_write`, with a failure turned into a RunWriteError that names the file and the cause."""
    try:
        atomic_write(path, write)
    except OSError as err:
        raise write_failure(path, err) from err


def check_writable(run_dir: Path, flag: str | None = "--out") -> None:
    """Create `run_dir` and write, sync and delete a small file in it, so that a folder training could
    not save into is an error before training starts, not at its first checkpoint. Folders it had to
    create are removed again: a run that then fails on its data leaves no empty run folder behind."""
    created = [folder for folder in (run_dir, *run_dir.parents) if not folder.exists()]  # deepest first
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=run_dir, prefix=".charlm-probe.", suffix=".tmp")
        try:
            os.write(fd, b"charlm")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        why = _WHY.get(err.errno, err.strerror or str(err))
        named = f"{flag} {run_dir}" if flag else str(run_dir)
        raise RunWriteError(f"{named}: cannot save a run there: {why}") from err
    finally:
        for folder in created:
            with contextlib.suppress(OSError):  # not empty: someone else is using it now
                folder.rmdir()


def remove_temp_files(run_dir: Path) -> list[Path]:
    """Delete the hidden temporaries a killed process left behind: ``.<name>.<random>.tmp`` from
    `atomic_write` and `check_writable`, ``.perplexity.png.tmp.png`` from the plot."""
    stale = sorted([*run_dir.glob(".*.tmp"), *run_dir.glob(".*.tmp.png")])
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def append_line(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line with a single write(2): a process killed at any moment leaves whole lines."""
    data = json_line(record).encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if os.write(fd, data) != len(data):  # short only when the disk fills up mid-line
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        finally:
            os.close(fd)
    except OSError as err:
        raise write_failure(path, err) from err


def write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    save_file(path, lambda f: f.write(text.encode("utf-8")))


def _tensor_bytes(blob: bytes) -> bytes:
    """The data of a safetensors file: everything after its 8-byte header length and JSON header."""
    return blob[8 + int.from_bytes(blob[:8], "little"):]


def save_weights(path: Path, model: RNNLM) -> None:
    """The model's tensors as safetensors, with the format and a checksum in the metadata.

    safetensors checks its header but not the tensors: a flipped bit in them would load silently.
    The SHA-256 of the tensor bytes goes into the header (which does not move them), and
    :func:`read_weights` checks it."""
    tensors = {name: t.detach().contiguous().cpu() for name, t in model.state_dict().items()}
    metadata = {"format": RUN_FORMAT, "version": str(RUN_VERSION)}
    digest = hashlib.sha256(_tensor_bytes(save(tensors, metadata=metadata))).hexdigest()
    blob = save(tensors, metadata={**metadata, "sha256": digest})
    save_file(path, lambda f: f.write(blob))


def save_run_files(run_dir: Path, model: RNNLM, vocab: Vocab, config: TrainConfig | None) -> None:
    """config.json and vocab.json: what `load` needs besides the weights. The model's settings are
    saved once, under "model"; "train" holds the rest of `config`, if there is one."""
    run_dir.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {"format": RUN_FORMAT, "version": RUN_VERSION, "model": model.config.to_dict()}
    if config is not None:
        data["train"] = {k: v for k, v in config.to_dict().items() if k != "model"}
    write_json(run_dir / "config.json", data)
    write_json(run_dir / "vocab.json", vocab.to_dict())


def save_trainer(path: Path, trainer_state: dict[str, Any]) -> None:
    save_file(path, lambda f: torch.save({"format": RUN_FORMAT, "version": RUN_VERSION,
                                          **trainer_state}, f))


def load_trainer(path: Path) -> dict[str, Any]:
    """The resume state; never unpickles code (``weights_only=True``)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no trainer state here, so the run cannot be resumed")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or hostile file
        raise CheckpointError(f"{path}: not a readable charlm trainer state ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})") from None
    _check_format(path, state)
    return state


def read_config(run_dir: Path) -> dict[str, Any]:
    """config.json of a run folder, checked for format and version."""
    path = Path(run_dir) / "config.json"
    if not Path(run_dir).is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder")
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: not a charlm run folder (no config.json)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    # ValueError: also an integer over Python's digit limit; RecursionError: JSON nested too deep
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    _check_format(path, data)
    if not isinstance(data.get("model"), dict) or not isinstance(data.get("train", {}), dict):
        raise CheckpointError(f"{path}: 'model' and 'train' must be JSON objects")
    return data


def run_configs(run_dir: Path) -> tuple[ModelConfig, TrainConfig | None]:
    """The typed configs of a run folder: its model, and its training settings where it has them
    (a model saved by the API alone has none). Every way the file can be wrong is a CheckpointError."""
    data = read_config(run_dir)
    try:
        model = ModelConfig.from_dict(data["model"])
        train = data.get("train")
        if train is None:
            return model, None
        if data["version"] == 1:  # the model's settings were repeated, flat, among the training ones
            train = {k: v for k, v in train.items() if k not in flat_names(ModelConfig) and k != "model"}
        # Runs saved before charlm left Gutenberg boilerplate out read their text whole: so they resume
        # and evaluate on the very splits they trained on.
        train = {"keep_boilerplate": True, **train}
        return model, TrainConfig.from_dict({**train, "model": data["model"]})
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{Path(run_dir) / 'config.json'}: {err}") from None


def _check_format(path: Path, data: Any) -> None:
    if not isinstance(data, dict) or data.get("format") != RUN_FORMAT:
        raise CheckpointError(f"{path}: not a charlm run file (format is not {RUN_FORMAT!r})")
    version = data.get("version")
    if not isinstance(version, int) or version > RUN_VERSION or version < 1:
        raise CheckpointError(f"{path}: format version {version!r} is not supported by this charlm "
                              f"(it reads versions 1 to {RUN_VERSION}); upgrade charlm")


def describe_weights(name: str) -> str:
    """What a weights file of a run holds, for the line that says which were used."""
    return f"{name} ({'the best validation loss' if name == WEIGHTS['best'] else 'the last checkpoint'})"


@dataclass
class Run:
    """A trained model with what it needs to be used: its vocabulary and configuration."""

    model: RNNLM
    vocab: Vocab
    config: TrainConfig | None  # how it was trained (``config.model`` is ``model.config``); None if unknown
    path: Path
    weights: str = WEIGHTS["last"]  # the weights file that was loaded

    @property
    def token(self) -> str:
        return self.config.token if self.config is not None else "char"

    @property
    def prefix(self) -> str:
        """What a sample starts from when no prefix is given: the run's own (training records it),
        else the book's for the run's corpus; "" if the run records neither."""
        if self.config is None:
            return ""
        return self.config.prefix or DEFAULT_PREFIXES.get(self.config.corpus, "")


def weights_name(run_dir: Path, which: str) -> str:
    """The weights file `load` reads for `which`: best.safetensors falls back to the last weights
    in a run that never validated, which keeps only those."""
    name = WEIGHTS[which]
    return WEIGHTS["last"] if which == "best" and not (run_dir / name).is_file() else name


def run_folder(run: str | Path) -> Path:
    """The folder of a run given as a path, or as the name of one of charlm's own models
    (:data:`PRETRAINED`: ``"english"``); a folder of that name where charlm runs wins over the name."""
    path = Path(run)
    if str(run) in PRETRAINED and not path.exists():
        path = Path(__file__).resolve().parent / str(run)
        if not (path / WEIGHTS["last"]).is_file():
            raise CheckpointError(f"{path / WEIGHTS['last']}: charlm's {run} model is missing from this "
                                  f"installation; reinstall charlm")
    return path


def load(run_dir: str | Path, *, which: str = "best", device: str | torch.device = "cpu") -> Run:
    """Rebuild a model and its vocabulary from a run folder alone: config -> model -> weights -> eval().
    ``load("english")`` gives charlm's own English model (:func:`run_folder`).

    `which` picks ``"best"`` (best.safetensors, the weights of the best validation loss, where the
    run kept them, else the last ones: what a user wants from a run that went on to overfit) or
    ``"last"`` (model.safetensors). ``Run.weights`` names the file used. Every way a file can be
    wrong is a CheckpointError naming it.
    """
    run_dir = run_folder(run_dir)
    if which not in WEIGHTS:
        raise ValueError(f"which must be one of {', '.join(WEIGHTS)}, got {which!r}")
    model_config, config = run_configs(run_dir)
    try:
        model = RNNLM(model_config)
        vocab = Vocab.load(run_dir / "vocab.json")
    except (ValueError, TypeError, OSError) as err:
        raise CheckpointError(f"{run_dir}: {err}") from None
    if len(vocab) != model.config.vocab_size:
        raise CheckpointError(f"{run_dir / 'vocab.json'}: {len(vocab)} tokens, but the model was built "
                              f"for vocab_size={model.config.vocab_size}")
    if config is not None and config.preamble:
        try:
            model.preamble = torch.tensor(preamble_ids(config.preamble, config.token, vocab))
        except ValueError as err:
            raise CheckpointError(f"{run_dir / 'config.json'}: {err}") from None
    name = weights_name(run_dir, which)
    model.load_state_dict(read_weights(run_dir / name, model))
    return Run(model.to(device).eval(), vocab, config, run_dir, name)


def read_weights(path: Path, model: RNNLM) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file, checked name by name and shape by shape against `model`."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        blob = path.read_bytes()
        tensors = load_tensors(blob)
        header = json.loads(blob[8:len(blob) - len(_tensor_bytes(blob))])
    except (SafetensorError, OSError, ValueError, RecursionError) as err:
        raise CheckpointError(f"{path}: damaged or not a safetensors file ({err})") from None
    digest = (header.get("__metadata__") or {}).get("sha256") if isinstance(header, dict) else None
    if digest is not None and hashlib.sha256(_tensor_bytes(blob)).hexdigest() != digest:
        raise CheckpointError(f"{path}: damaged: the tensors do not match the SHA-256 saved with them "
                              f"(a flipped bit, or a copy altered or cut short)")
    expected = model.state_dict()
    if set(tensors) != set(expected):
        missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        raise CheckpointError(f"{path}: tensors do not match the configured model "
                              f"(missing {missing[:4]}, unexpected {extra[:4]})")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(f"{path}: {name} has shape {tuple(tensor.shape)}, the configured "
                                  f"model needs {tuple(expected[name].shape)}")
    return tensors


def trained_tokens(run: Run) -> int:
    """Tokens a run's weights were trained on, counted from its metrics: its last step times the
    tokens of a batch (rows x steps); 0 when the run kept no metrics."""
    path, steps = run.path / "metrics.jsonl", 0
    if run.config is None or not path.is_file():
        return 0
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            steps = max(steps, json.loads(line).get("step", 0))
    return steps * run.config.batch_size * run.config.num_steps


def json_line(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n"
