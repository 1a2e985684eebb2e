"""charlm's user cache folder, where downloads (:mod:`charlm.data.corpora`) and native builds
(:mod:`charlm.hardware.native_build`) keep what they made, so that the next run finds it."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/charlm``, or ``~/.cache/charlm`` where that is not set."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "charlm"
