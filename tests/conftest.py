"""Shared test setup: the corpora (offline folder, or downloaded once), and a private cache for every test."""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# The C++ kernels are built into torch's extension cache, under the XDG cache folder. The fixture
# below gives each test its own XDG cache, so a CLI test in a subprocess would rebuild the kernels
# (15-35 s per instruction-set level) every time: pin one extension cache for the whole session instead.
_USER_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(_USER_CACHE / "torch_extensions" / "charlm-tests"))


@pytest.fixture(scope="session")
def _corpora() -> Path | None:
    """Where the tests read the corpora: $CHARLM_DATA, else ../shared/data beside the checkout, else
    (a fresh clone anywhere else) each corpus downloaded once, SHA-1 checked, into a folder of the
    user's cache kept for later test runs. None if they cannot be had (the tests that need them fail
    with charlm's own message, which says what to do)."""
    if os.environ.get("CHARLM_DATA"):
        return Path(os.environ["CHARLM_DATA"])
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    from charlm.data.corpora import CORPORA, CorpusError, download

    folder = _USER_CACHE / "charlm" / "test-corpora"
    try:
        for spec in CORPORA.values():
            if not (folder / spec.filename).is_file():
                download(spec, folder / spec.filename)
    except CorpusError as err:
        print(f"\ncharlm tests: {err}")
        return None
    return folder


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch, _corpora):
    """Never read or write the user's real cache; read the corpora from `_corpora`."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    if _corpora is not None:
        monkeypatch.setenv("CHARLM_DATA", str(_corpora))


@pytest.fixture
def data_dir() -> Path:
    """The corpora folder; tests that need the real books fail loudly without it."""
    folder = os.environ.get("CHARLM_DATA")
    assert folder and Path(folder).is_dir(), "the corpora could not be downloaded: set CHARLM_DATA to a " \
        "folder holding them (see README.md)"
    return Path(folder)


CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium, driven by Playwright (never a browser Playwright downloads); the tests
    that use it are skipped where either is missing."""
    if not CHROMIUM.exists():
        pytest.skip(f"no chromium at {CHROMIUM}: the browser tests need Debian's chromium package")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is not installed")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        yield chromium
        chromium.close()
