"""Settings as dataclass fields: each option's help, flag and checks in one place.

Every option of charlm is a field of a config dataclass (``ModelConfig``, ``TrainConfig``,
``GenerateConfig``, ``CompressSettings``), declared with :func:`setting`, which keeps the help text
beside the default. The command line builds its flags and help from these fields, and the checks
below name a value by its flag, through the one mapping :func:`flag`::

    num_hiddens: int = setting(512, "hidden units per layer")   ->   --num-hiddens INT  hidden units ...
    at_least("num_hiddens", 0, 1)   ->   ValueError("--num-hiddens must be an integer >= 1, got 0")

A config may hold another (``TrainConfig.model`` is a ``ModelConfig``). On the command line both are
one flat set of flags; :func:`from_flat` and :func:`to_flat` convert between the flat and the nested
form, so a flag never says which config it belongs to.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Union

from .suggest import did_you_mean

_MISSING: Any = dataclasses.MISSING


def setting(default: Any = _MISSING, help: str = "", *, default_factory: Callable[[], Any] = _MISSING,
            cli: bool = True, flags: tuple[str, ...] | None = None, shown: str | None = None,
            parse: Callable[[str], Any] | None = None, metavar: str | None = None) -> Any:
    """A dataclass field with its help text and command-line details.

    `cli` False keeps a field off the command line (set by the program, or API only); for a nested
    config, `flags` names the fields of it that become flags. `shown` is the default as the help
    should print it, `parse` turns the flag's text into a value, `metavar` names the value.
    """
    metadata = {"help": help, "cli": cli, "flags": flags, "shown": shown, "parse": parse, "metavar": metavar}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def flag(name: str) -> str:
    """The command-line flag of a field: ``num_hiddens`` -> ``--num-hiddens``."""
    return "--" + name.replace("_", "-")


def field_name(option: str) -> str:
    """The field of a flag: ``--num-hiddens`` -> ``num_hiddens`` (the inverse of :func:`flag`)."""
    return option.removeprefix("--").replace("-", "_")


# ---- checks that name the flag ------------------------------------------------------------------
# Wrong types raise ValueError too (ruff TRY004 prefers TypeError): the CLI and the run loader then
# catch one exception type for every bad value a user can supply.


def check_types(config: Any) -> None:
    """Every field of `config` holds a value of its declared type (an int is not a bool, a float may
    be an int); the first that does not is an error naming its flag. The configs call this first,
    then check ranges and rules between fields."""
    for name, kind in _hints(type(config)).items():
        value = getattr(config, name)
        if not _holds(kind, value):
            raise ValueError(f"{flag(name)} must be {_describe(kind)}, got {value!r}")


def _holds(kind: Any, value: Any) -> bool:
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (Union, types.UnionType):
        return any(_holds(a, value) for a in args)
    if kind is type(None):
        return value is None
    if kind in (int, float):
        return isinstance(value, (int, float) if kind is float else int) and not isinstance(value, bool)
    if typing.get_origin(kind) is tuple:
        return isinstance(value, tuple) and all(_holds(args[0], v) for v in value)
    return isinstance(value, kind)


def _describe(kind: Any) -> str:
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if typing.get_origin(kind) in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args) + " or unset (None)"
    if typing.get_origin(kind) is tuple:
        return f"a list of {_describe(args[0]).removeprefix('an ').removeprefix('a ')}s"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(kind, f"a {getattr(kind, '__name__', kind)}")


def at_least(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{flag(name)} must be an integer >= {minimum}, got {value!r}")


def choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        raise ValueError(f"{flag(name)} must be one of {', '.join(choices)}, got {value!r}{hint}")


def boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{flag(name)} must be true or false, got {value!r}")  # noqa: TRY004


def number(name: str, value: Any) -> float:
    """A real number (not a bool, not NaN); returned as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{flag(name)} must be a number, got {value!r}")
    return float(value)


def fraction(name: str, value: Any) -> None:
    """A probability of dropping or a rate in [0, 1): 1 is excluded, as it would drop everything
    (and dropout's scale 1 / (1 - p) would be infinite)."""
    if not 0 <= number(name, value) < 1:
        raise ValueError(f"{flag(name)} must be in [0, 1), got {value!r}")


# ---- nested configs and flat flags ---------------------------------------------------------------


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The fields' types (annotations are strings under ``from __future__ import annotations``)."""
    return {name: kind for name, kind in typing.get_type_hints(cls).items()
            if name in {f.name for f in dataclasses.fields(cls)}}


def nested(cls: type) -> dict[str, type]:
    """The fields of `cls` that hold another config dataclass, with its class."""
    return {name: kind for name, kind in _hints(cls).items() if dataclasses.is_dataclass(kind)}


def flat_names(cls: type) -> set[str]:
    """Every name a flat settings mapping may use for `cls`: its own fields and its nested ones'."""
    inner = nested(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.name not in inner}
    for kind in inner.values():
        names |= flat_names(kind)
    return names


def check_known(cls: type, data: Mapping[str, Any], label: str, known: set[str] | None = None) -> None:
    """Refuse keys `cls` does not know: a file from a newer charlm, or a typo."""
    known = {f.name for f in dataclasses.fields(cls)} if known is None else known
    unknown = sorted(set(data) - known)
    if unknown:
        hint = did_you_mean(unknown[0], sorted(known))
        raise ValueError(f"unknown {label} {unknown}{hint}; known keys are {sorted(known)}")


def from_flat(cls: type, flat: Mapping[str, Any], base: Any = None) -> Any:
    """`cls` built from flat settings (the flags' names), starting from `base` or the defaults.

    >>> from_flat(TrainConfig, {"cell": "lstm", "epochs": 5}).model.cell   # doctest: +SKIP
    'lstm'
    """
    check_known(cls, flat, "settings", flat_names(cls))
    inner = nested(cls)
    own = {k: v for k, v in flat.items() if k in {f.name for f in dataclasses.fields(cls)}}
    for name, kind in inner.items():
        part = {k: v for k, v in flat.items() if k in flat_names(kind)}
        if part:
            start = getattr(base, name) if base is not None else _default_instance(cls, name)
            own[name] = from_flat(kind, part, start)
    return dataclasses.replace(base, **own) if base is not None else cls(**own)


def _default_instance(cls: type, name: str) -> Any:
    return default_of(next(f for f in dataclasses.fields(cls) if f.name == name))


def to_flat(config: Any) -> dict[str, Any]:
    """The settings of a config as flat name -> value pairs (the inverse of :func:`from_flat`)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out.update(to_flat(value))
        else:
            out[f.name] = value
    return out


def cli_fields(cls: type, only: tuple[str, ...] | None = None, defaults: Any = None
               ) -> Iterator[tuple[dataclasses.Field, Any, Any]]:
    """The fields of `cls` that are flags, nested configs' included: (field, type, default).

    A nested field's `flags` metadata picks which of its fields become flags, and its default
    instance gives their defaults (the compressor's network is smaller than training's)."""
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if only is not None and f.name not in only:
            continue
        kind = hints[f.name]
        default = getattr(defaults, f.name) if defaults is not None else default_of(f)
        if dataclasses.is_dataclass(kind):
            yield from cli_fields(kind, f.metadata.get("flags"), default)
        elif f.metadata.get("cli", True):
            yield f, kind, default


def default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is _MISSING else f.default
