"""When training validates, samples and saves: every N epochs, every N steps, every so many minutes.

The book reports once per epoch, which suits a 10,000-character text whose epoch takes a tenth of a
second; on a 100 MB text one epoch outlasts the whole budget, so nothing would be validated or saved
before the end. A cadence is therefore written as one or more triggers, any of which makes the event
due (``--save-every`` and its siblings take this text)::

    "50"          every 50 epochs, at the epoch's end (0: never, apart from the run's end)
    "2000steps"   every 2,000 optimizer steps, mid-epoch too
    "5m"          whenever 5 minutes of training have passed since the event last happened
                  (also "30s", "1.5h")
    "50,5m"       whichever comes first: the default for checkpoints, so that a small text saves
                  every 50 epochs as the book's runs did, and a huge one at least every 5 minutes

A plain number stays an int in config.json, so runs saved before cadences existed read as before.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .fields import flag

# Seconds per unit of a duration; "min" is accepted because "5min" is how many people write it.
UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_TRIGGER = re.compile(r"(?P<count>\d+(?:\.\d+)?)\s*(?P<unit>steps?|s|min|m|h)?")
FORMS = ("a number of epochs (50), of steps (2000steps), a duration (30s, 5m, 1.5h), or several joined "
         "by commas")


@dataclass(frozen=True)
class Cadence:
    """The triggers of one event; a zero field is a trigger that never fires."""

    epochs: int = 0
    steps: int = 0
    seconds: float = 0.0

    @property
    def never(self) -> bool:
        """Whether no trigger is set (``0``: the event happens only at the run's end, if at all)."""
        return self == Cadence()

    @property
    def mid_epoch(self) -> bool:
        """Whether the event can fall inside an epoch (a step or time trigger)."""
        return bool(self.steps or self.seconds)

    def due(self, *, epoch: int | None, step: int, seconds: float, since: float) -> bool:
        """Whether the event is due now.

        `epoch`: the number of epochs completed, when called at an epoch's end, else None;
        `step`: optimizer steps completed; `seconds`: the run's training time; `since`: the run's
        time when the event last happened. Step triggers fire on multiples of N, so a resumed run
        fires them where the uninterrupted one did.

        >>> Cadence(epochs=2).due(epoch=4, step=10, seconds=0, since=0)
        True
        >>> Cadence(seconds=300).due(epoch=None, step=10, seconds=299, since=0)
        False
        """
        return bool((epoch is not None and self.epochs and epoch % self.epochs == 0)
                    or (self.steps and step and step % self.steps == 0)
                    or (self.seconds and seconds - since >= self.seconds))

    def __str__(self) -> str:
        parts = [str(self.epochs)] if self.epochs else []
        if self.steps:
            parts.append(f"{self.steps}steps")
        if self.seconds:
            parts.append(duration(self.seconds))
        return ",".join(parts) or "0"


def duration(seconds: float) -> str:
    """The shortest exact spelling: 300 -> '5m', 90 -> '1.5m', 45 -> '45s'."""
    for unit in ("h", "m"):
        count = seconds / UNITS[unit]
        if count >= 1 and count == round(count, 1):
            return f"{count:g}{unit}"
    return f"{seconds:g}s"


def parse(name: str, value: int | str) -> Cadence:
    """A cadence from a config value: an int (epochs) or the text of the module docstring.

    >>> parse("save_every", "50,5m")
    Cadence(epochs=50, steps=0, seconds=300.0)

    Bad text is a ValueError naming the flag (`name` is the field: ``save_every``)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{flag(name)} must be {FORMS}, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{flag(name)} must be >= 0 (0 = only at the end), got {value}")
        return Cadence(epochs=value)
    epochs, steps, seconds = 0, 0, 0.0
    for part in value.replace(" ", "").lower().split(","):
        match = _TRIGGER.fullmatch(part)
        if match is None:
            raise ValueError(f"{flag(name)} must be {FORMS}, got {value!r}")
        count, unit = float(match["count"]), match["unit"]
        if unit is None or unit.startswith("step"):
            if count != int(count):
                raise ValueError(f"{flag(name)}: a count of epochs or steps is a whole number, got {part!r}")
            if unit is None:
                epochs = int(count)
            else:
                steps = _positive(name, int(count), part)
        else:
            seconds = _positive(name, count * UNITS[unit], part)
    return Cadence(epochs, steps, seconds)


def _positive(name: str, count: float, part: str) -> float:
    if not 0 < count < math.inf:
        raise ValueError(f"{flag(name)}: {part!r} must be more than 0 (a plain 0 means only at the end)")
    return count


def from_flag(text: str) -> int | str:
    """The config value of a flag's text: a plain number stays an int (as in runs saved before
    cadences), anything else stays text, which the config checks by :func:`parse` under its flag's
    name. ``"50"`` -> 50; ``"5m"`` -> ``"5m"``."""
    text = text.strip()
    return int(text) if text.isdigit() else text
