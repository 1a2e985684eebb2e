"""The closest name to a misspelled one, for error messages: "did you mean lstm-concise?"."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the choice closest to `name`, or ``""`` when none is close.

    >>> did_you_mean("lstm-consice", ["lstm-concise", "gru-concise"])
    ' (did you mean lstm-concise?)'
    """
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""
