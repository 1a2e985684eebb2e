"""Shared test setup: the offline data folder, and a private download cache for every test."""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# The C++ kernels are built into torch's extension cache, under the XDG cache folder. The fixture
# below gives each test its own XDG cache, so a CLI test in a subprocess would rebuild the kernels
# (15-35 s per instruction-set level) every time: pin one extension cache for the whole session instead.
_USER_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(_USER_CACHE / "torch_extensions" / "charlm-tests"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never read or write the user's real cache; use ../shared/data when CHARLM_DATA is unset."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    if not os.environ.get("CHARLM_DATA") and SHARED_DATA.is_dir():
        monkeypatch.setenv("CHARLM_DATA", str(SHARED_DATA))


@pytest.fixture
def data_dir() -> Path:
    """The offline corpora folder; tests that need the real books fail loudly without it."""
    folder = os.environ.get("CHARLM_DATA")
    assert folder and Path(folder).is_dir(), "set CHARLM_DATA to the shared corpora folder (../shared/data)"
    return Path(folder)
