"""Shared test setup: the offline data folder, and a private download cache for every test."""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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
